"""Training killed with SIGKILL at random moments resumes to the same weights; same seed, same
weights and outputs.

Real processes (``python -m m2cofs train ... --resume``), a tiny network and two 32³ phantoms.
The killed run is SIGKILLed (its whole process group: preprocessing workers too) at random,
seeded moments — during start-up, preprocessing, training steps, checkpoint and log writes,
stage hand-overs and the final model files — and restarted with ``--resume`` each time. It must
end with bit-identical weights (every model file and every stage's results) and the same per-step
loss log as an uninterrupted run, leaving no temporary files or in-stage checkpoints behind.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import TINY_RUN_ARGS
from m2cofs.checkpoint import load_model_file, load_tensors
from m2cofs.cli import main
from m2cofs.io import is_temp_name

KILLS = int(os.environ.get("M2COFS_KILLS", "6"))  # SIGKILLs per test run (raise for a longer local run)
KILL_SEED = int(os.environ.get("M2COFS_KILL_SEED", "20240607"))
MODEL_FILES = ("unified.ckpt", "fusion_specialist.ckpt", "seg_specialist.ckpt")


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    # the tiny preset's TINY_RUN: 22 optimiser steps over the four stages, a checkpoint after every step
    return [sys.executable, "-m", "m2cofs", "train", "--data", str(data), "--out", str(out), "--no-progress", *extra,
            *TINY_RUN_ARGS]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    # Own process group: the kill takes the preprocessing workers with it, as a node failure would.
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())


def _run_to_end(cmd: list[str], log: Path, timeout: float = 300) -> float:
    t0 = time.perf_counter()
    proc = _start(cmd, log)
    rc = proc.wait(timeout=timeout)
    assert rc == 0, log.read_text()[-3000:]
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def synth(synth32) -> Path:
    return synth32


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted run, and how long it took."""
    out = tmp_path_factory.mktemp("sk") / "ref"
    seconds = _run_to_end(_train_cmd(synth, out), out.parent / "ref.log")
    return out, seconds


def _tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def _same_weights(run_a: Path, run_b: Path) -> None:
    for name in MODEL_FILES:
        _tensors_equal(load_model_file(run_a / name)[0], load_model_file(run_b / name)[0], name)
    stages = sorted(p.name for p in (run_a / "stages").glob("*.safetensors"))
    assert stages == sorted(p.name for p in (run_b / "stages").glob("*.safetensors")) and len(stages) == 6
    for s in stages:
        _tensors_equal(load_tensors(run_a / "stages" / s), load_tensors(run_b / "stages" / s), s)


def _losses(run: Path) -> dict[str, list[tuple]]:
    """Every stage's log without the wall-clock column."""
    out = {}
    for f in sorted((run / "logs").glob("*.csv")):
        with open(f, newline="") as fh:
            out[f.stem] = [tuple((k, v) for k, v in row.items() if k != "seconds") for row in csv.DictReader(fh)]
    return out


def _leftovers(run: Path) -> list[str]:
    temps = [str(p.relative_to(run)) for p in run.rglob(".*") if is_temp_name(p.name)]
    ckpts = [str(p.relative_to(run)) for p in (run / "checkpoints").glob("*")] if (run / "checkpoints").exists() else []
    return temps + ckpts


def _steps_logged(run: Path) -> int:
    """Training steps recorded in the run's logs (written with every checkpoint)."""
    n = 0
    for f in (run / "logs").glob("[!.]*.csv") if (run / "logs").is_dir() else []:  # not the temporary files
        try:
            n += max(0, len(f.read_text().splitlines()) - 1)
        except FileNotFoundError:
            pass
    return n


def _kill_plan(total_steps: int, rng: random.Random) -> list[tuple[str, float]]:
    """The first kill at a random time after the start (start-up, preprocessing, first steps);
    the others a random 0-300 ms after the logs reach a random step in each part of the run
    (step ``total + 1``: after the last step, among the stage results, model files and summary,
    with a random 0-1.5 s delay)."""
    bins = np.linspace(1, total_steps + 2, KILLS)  # one random step in each of KILLS - 1 parts of the run
    targets = [rng.randrange(int(lo), max(int(lo) + 1, int(hi))) for lo, hi in zip(bins[:-1], bins[1:])]
    return [("time", rng.uniform(0.5, 5.0))] + [("step", float(t)) for t in targets]


def _wait_for_kill_moment(proc: subprocess.Popen, run: Path, plan: tuple[str, float], total: int,
                          rng: random.Random) -> bool:
    """Wait for the planned moment; False when the process ended first."""
    kind, value = plan
    if kind == "time":
        try:
            proc.wait(timeout=value)
            return False
        except subprocess.TimeoutExpired:
            return True
    # at least one new step in this attempt (a target already passed would kill every restart
    # during its start-up and the run would never get further)
    threshold = max(min(value, total), min(_steps_logged(run) + 1, total))
    while proc.poll() is None:
        if _steps_logged(run) >= threshold:
            time.sleep(rng.uniform(0.0, 1.5) if value > total else rng.uniform(0.0, 0.3))
            return proc.poll() is None
        time.sleep(0.01)
    return False


def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(synth, reference, tmp_path):
    ref, _ = reference
    total = _steps_logged(ref)
    out = tmp_path / "killed"
    log = tmp_path / "killed.log"
    rng = random.Random(KILL_SEED)
    plan = _kill_plan(total, rng)
    kills, states = 0, []
    while True:
        proc = _start(_train_cmd(synth, out, "--resume"), log)
        if kills < len(plan) and _wait_for_kill_moment(proc, out, plan[kills], total, rng):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            # what the kill left behind (the next --resume must cope with all of it)
            stages = len(list((out / "stages").glob("[!.]*.safetensors"))) if (out / "stages").exists() else 0
            states.append((_steps_logged(out), stages, _leftovers(out) if out.exists() else ["(no run folder yet)"]))
            continue
        rc = proc.wait(timeout=300)  # the last attempt, or one that finished before its planned kill
        assert rc == 0, log.read_text()[-3000:]
        break
    print(f"\n{kills} SIGKILLs of {total} steps (steps logged, stages complete, what was left): {states}")
    assert kills >= KILLS - 1
    assert len({s[1] for s in states}) >= 3, "kills must land in several stages"
    _same_weights(ref, out)
    assert _losses(out) == _losses(ref), "the per-step loss logs must be complete and identical"
    assert _leftovers(out) == [], "no temporary files or in-stage checkpoints are left behind"


def test_same_seed_same_weights_and_outputs(synth, reference, tmp_path):
    """Two runs with the same seed and data on one machine (CPU): identical weights, logs and
    predictions (the fused volume and the label map, byte for byte)."""
    ref, _ = reference
    again = tmp_path / "again"
    _run_to_end(_train_cmd(synth, again), tmp_path / "again.log")
    _same_weights(ref, again)
    assert _losses(again) == _losses(ref)
    preds = []
    for run in (ref, again):
        pred = tmp_path / f"pred_{run.name}"
        assert main(["predict", "--model", str(run / "unified.ckpt"), "--input", str(synth), "--out", str(pred),
                     "--no-preview"]) == 0
        preds.append(pred)
    for cid in ("synth_000", "synth_001"):
        for kind in ("fused", "seg"):
            a, b = (nib.load(str(p / cid / f"{cid}_{kind}.nii.gz")) for p in preds)
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
