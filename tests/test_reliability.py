"""Reliability and safety: bad input to every command, no partial output, full disk, untrusted
model and checkpoint files, and never touching the user's input.

The bad-input matrix runs each broken dataset through ``train``, ``predict``, ``evaluate`` and
``compare`` (``data check`` has the same matrix in ``test_data_loading.py``): each must exit non-zero with
one ``m2cofs: error:`` line that names the file and the problem, write nothing, and leave the
input exactly as it was.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import bad_inputs as bad
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_PRESET, TINY_RUN, TINY_RUN_ARGS, make_case, write_nifti

from m2cofs.checkpoint import save_model_file, sha256_file, sidecar_path
from m2cofs.cli import main
from m2cofs.config import load_config
from m2cofs.data.labels import get_convention
from m2cofs.data.preprocess import PreprocessConfig
from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_bytes, clean_stale_temps, is_temp_name, save_nifti
from m2cofs.models.network import M2CoFSNet
from m2cofs.training.engine import load_training_state
from m2cofs.training.pipeline import TrainOptions, train

TINY = TINY_RUN  # a few seconds of training (on the tiny preset)
SETS = TINY_RUN_ARGS


# ----------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> list:
    """Every file and folder under ``root`` with its size, mtime and content hash."""
    if not root.exists():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns, sha256_file(p) if p.is_file() else None))
    return out


def make_model(path: Path, modalities=("t1ce", "flair"), convention="brats2017", overrides=TINY, seed=0,
               meta_extra: dict | None = None) -> Path:
    """An (untrained) model file as ``m2cofs train`` writes it."""
    cfg = load_config(TINY_PRESET, overrides=list(overrides))
    conv = get_convention(convention)
    torch.manual_seed(seed)
    net = M2CoFSNet(len(modalities), len(conv.regions), cfg.model, tuple(cfg.data.patch_size))
    meta = {"kind": "unified", "tasks": ["fusion", "segmentation"], "fusion_weights": "theta_U", "preset": cfg.preset,
            "config": cfg.to_dict(), "modalities": list(modalities), "label_convention": conv.name,
            "regions": list(conv.regions), "preprocessing": PreprocessConfig(spacing=None).to_dict(),
            "trained_on": [], **(meta_extra or {})}
    tensors = {k: v for k, v in net.state_dict().items() if not k.startswith("decoder.")}
    return save_model_file(path, tensors, meta)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "unified.ckpt")


PROGRESS = re.compile(r"^[\w ]+:\s+\d+%\|")  # a tqdm progress bar


def one_error_line(err: str) -> str:
    """The one ``m2cofs: error:`` line of ``err``; anything else but progress bars fails."""
    lines = [ln for ln in re.split(r"[\r\n]+", err) if ln.strip() and not PROGRESS.match(ln)]
    assert len(lines) == 1, err
    assert lines[0].startswith("m2cofs: error: ") and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- the bad-input matrix
def _extra_modality(root):
    """Two files for one modality in a case (different spellings of FLAIR)."""
    folder = make_case(root, "bad")
    shutil.copy(folder / "bad_flair.nii.gz", folder / "bad_FLAIR.nii")
    return folder, "has 2 files for flair"


def _duplicate_ids(root):
    make_case(root / "site1", "dup")
    make_case(root / "site2", "dup", seed=3)
    return root, "duplicate case id 'dup'"


def _datalist_missing(root):
    make_case(root.parent / "outside", "x")  # ../ paths are allowed, but each file must exist
    root.mkdir(parents=True, exist_ok=True)
    (root / "datalist.json").write_text(json.dumps([
        {"id": "x", "t1ce": "../outside/x/x_t1ce.nii.gz", "flair": "../outside/x/x_t2.nii.gz",
         "label": "../outside/x/x_seg.nii.gz"}]))
    return root / "datalist.json", "file not found"


def _datalist_bad_id(root):
    make_case(root, "x")
    (root / "datalist.json").write_text(json.dumps([
        {"id": "../../evil", "t1ce": "x/x_t1ce.nii.gz", "flair": "x/x_flair.nii.gz", "label": "x/x_seg.nii.gz"}]))
    return root / "datalist.json", "must be a plain name"


MAKERS = [bad.missing_modality, _extra_modality, bad.truncated, bad.not_gzip, bad.not_nifti, bad.four_d, bad.nan, bad.all_zero,
          bad.shape_mismatch, bad.affine_mismatch, bad.bad_labels, bad.empty, _duplicate_ids, _datalist_missing, _datalist_bad_id]
# predict ignores label files, so a label outside the convention is not its concern
NOT_FOR = {"predict": {bad.bad_labels}, "evaluate": set()}


def _dataset(tmp_path: Path, maker):
    root = tmp_path / "data"
    if maker not in (bad.empty, _datalist_missing, _datalist_bad_id):
        make_case(root, "aaa", seed=7)  # a good case first: the failure comes after some work was done
    where, text = maker(root)
    data = root / "datalist.json" if (root / "datalist.json").exists() else root
    return root, data, where, text


def _fake_predictions(pred: Path, root: Path) -> None:
    """A fused volume for every case folder of ``root`` (and for id ``x`` of the datalists), on
    the grid of the case's T1ce file when that one is readable."""
    rng = np.random.default_rng(0)
    pred.mkdir(parents=True)
    for cid in sorted({p.name for p in root.rglob("*") if p.is_dir()} | {"x"}):
        shape, affine = (20, 22, 18), np.eye(4)
        for t1ce in root.rglob(f"{cid}_t1ce.nii.gz"):
            try:
                img = nib.load(str(t1ce))
                shape, affine = img.shape[:3], img.affine
            except Exception:
                pass
        write_nifti(pred / cid / f"{cid}_fused.nii.gz", rng.uniform(0, 1, shape).astype(np.float32), affine)


COMMANDS = ("train", "predict", "evaluate", "compare")
MATRIX = [(c, m) for m in MAKERS for c in COMMANDS if m not in NOT_FOR.get(c, ())]


@pytest.mark.parametrize("command,maker", MATRIX, ids=[f"{c}-{m.__name__.strip('_')}" for c, m in MATRIX])
def test_bad_input_matrix(tmp_path, capsys, monkeypatch, model, command, maker):
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # preprocess in-process: no worker start-up per case
    root, data, where, text = _dataset(tmp_path, maker)
    labels = ["--labels", "brats2017"] if maker is bad.bad_labels else []
    out = tmp_path / "out"
    before = snapshot(root)
    if command == "train":
        argv = ["train", "--data", str(data), "--out", str(out), "--no-progress", *labels, *SETS]
    elif command == "predict":
        argv = ["predict", "--model", str(model), "--input", str(data), "--out", str(out), "--no-preview"]
    elif command == "compare":
        argv = ["compare", "--data", str(data), "--out", str(out), "--methods", "m2cofs", "--folds", "2",
                "--no-progress", *labels, *SETS]
    else:
        pred = tmp_path / "pred"
        _fake_predictions(pred, root)
        argv = ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--quiet", *labels,
                "--metrics", "EN,Dice"]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    line = one_error_line(err)
    assert text in line, line
    assert where.name in line, line
    assert not out.exists(), f"{command} left partial output: {sorted(p.name for p in out.rglob('*'))}"
    assert snapshot(root) == before, f"{command} changed its input"


# ----------------------------------------------------------------------------- configs and model files
@pytest.mark.parametrize("args,text", [
    (["--set", "train.bogus=1"], "train.bogus: unknown key"),
    (["--set", "train.lr=5"], "train.lr: must be between 0 and 1"),
    (["--set", "data.patch_size=[30,32,32]"], "data.patch_size: must be multiples of 8 for the segresnet head"),
    (["--config", "{cfg}"], "model.depth: unknown key"),
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, capsys, args, text):
    data = tmp_path / "data"
    make_case(data, "a")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  depth: 3\n")
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--out", str(out), "--no-progress",
                 *[a.format(cfg=cfg) for a in args]])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and text in line
    if "--config" in args:
        assert "bad.yaml" in line
    assert not out.exists()


def _rewrite_sidecar(path: Path, **changes) -> None:
    """Change the sidecar and fix its checksum (the embedded copy then disagrees)."""
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta.update(changes)
    meta["sha256"] = sha256_file(path)
    side.write_text(json.dumps(meta))


def _rewrite_model(path: Path, **changes) -> None:
    """Write the same weights with other metadata, consistently (sidecar, embedded copy, checksum)."""
    from m2cofs.checkpoint import load_model_file

    tensors, meta = load_model_file(path)
    meta = {k: v for k, v in meta.items() if k not in ("sha256", "format", "version")}
    save_model_file(path, tensors, {**meta, **changes})


def _predict(model_path: Path, data: Path, out: Path, *extra) -> int:
    return main(["predict", "--model", str(model_path), "--input", str(data), "--out", str(out), "--no-preview", *extra])


@pytest.mark.parametrize("kind", ["modality_count", "preset", "sidecar_of_another_file", "edited_sidecar",
                                  "unknown_config_key", "model_needs_t1", "no_sidecar"])
def test_checkpoint_from_another_model_is_refused(tmp_path, capsys, model, kind):
    data = tmp_path / "data"
    make_case(data, "a")
    m = tmp_path / "m" / "unified.ckpt"
    m.parent.mkdir()
    if kind == "model_needs_t1":
        make_model(m, modalities=("t1", "t1ce", "flair"))
        text, where = "the model needs modalities t1, t1ce, flair; case a has ", "a"
    else:
        shutil.copy(model, m)
        shutil.copy(sidecar_path(model), sidecar_path(m))
        if kind == "modality_count":  # weights for two inputs, sidecar says three
            _rewrite_model(m, modalities=["t1", "t1ce", "flair"])
            text = "another preset or modality count"
        elif kind == "preset":  # lite-tiny weights, sidecar of the paper preset
            _rewrite_model(m, preset="paper", config=load_config("paper").to_dict())
            text = "another preset or modality count"
        elif kind == "sidecar_of_another_file":
            other = make_model(tmp_path / "other.ckpt", seed=1)
            shutil.copy(sidecar_path(other), sidecar_path(m))
            text = "checksum does not match"
        elif kind == "edited_sidecar":  # checksum fixed by hand, the copy inside the weights disagrees
            _rewrite_sidecar(m, modalities=["t1", "flair"])
            text = "metadata embedded in the weights does not match"
        elif kind == "unknown_config_key":
            meta = json.loads(sidecar_path(m).read_text())
            meta["config"]["train"]["from_the_future"] = 1
            _rewrite_model(m, config=meta["config"])
            text = "train.from_the_future: unknown key"
        else:
            sidecar_path(m).unlink()
            text = "has no sidecar"
        where = "unified.ckpt"
    out = tmp_path / "out"
    code = _predict(m, data, out)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and text in line and where in line, line
    assert not out.exists()


def test_missing_modality_is_reported_before_the_progress_bar(tmp_path, capsys):
    """The model's modalities are checked against every case before anything runs: one line that
    says it is the model that needs them, and no half-drawn progress bar above it."""
    data = tmp_path / "data"
    make_case(data, "a", modalities=("t1ce", "flair", "t2"))
    make_case(data, "b", modalities=("t2", "flair"), seed=1)
    m = make_model(tmp_path / "m" / "unified.ckpt", modalities=("t1ce", "flair"))
    code = main(["predict", "--model", str(m), "--input", str(data), "--out", str(tmp_path / "out"), "--no-preview"])
    err = capsys.readouterr().err
    assert code == 2 and not PROGRESS.search(err) and "%|" not in err, err
    line = one_error_line(err)
    assert "the model needs modalities t1ce, flair; case b has " in line and str(data / "b") in line, line
    assert "t2" in line.split("case b has ")[1] and not (tmp_path / "out").exists()


@pytest.fixture
def run_folder(tmp_path, model) -> Path:
    """A training run's folder holding the unified model, a Stage I specialist and a README."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("unified.ckpt", "fusion_specialist.ckpt"):
        shutil.copy(model, run / name)
        shutil.copy(sidecar_path(model), sidecar_path(run / name))
    (run / "README.md").write_text("a run\n")
    return run


def test_run_folder_as_model_uses_its_unified_model(tmp_path, capsys, run_folder):
    data = tmp_path / "data"
    make_case(data, "a")
    out = tmp_path / "out"
    assert _predict(run_folder, data, out) == 0
    err = capsys.readouterr().err
    assert f"is a folder; using {run_folder / 'unified.ckpt'}" in err, err
    assert json.loads((out / "predict.json").read_text())["model"] == str((run_folder / "unified.ckpt").resolve())


@pytest.mark.parametrize("what,text", [
    ("folder_without_unified", "is a folder, not a model file, and has no unified.ckpt"),
    ("empty_folder", "it holds no model file"),
    ("sidecar", "is a model's sidecar (its metadata), not the model file: pass {run}/unified.ckpt instead"),
    ("specialist_sidecar", "not the model file: pass {run}/fusion_specialist.ckpt instead"),
    ("readme", "is not a model file; pass {run}/unified.ckpt instead"),
    ("readme_alone", "is not a model file (a model file is a .ckpt or .safetensors file"),
])
def test_model_argument_that_is_not_a_model_file(tmp_path, capsys, run_folder, what, text):
    data = tmp_path / "data"
    make_case(data, "a")
    if what == "folder_without_unified":
        (run_folder / "unified.ckpt").unlink()
        arg = run_folder
    elif what == "empty_folder":
        arg = tmp_path / "empty"
        arg.mkdir()
    elif what == "sidecar":
        arg = run_folder / "unified.ckpt.json"
    elif what == "specialist_sidecar":
        arg = run_folder / "fusion_specialist.ckpt.json"
    elif what == "readme":
        arg = run_folder / "README.md"
    else:
        arg = tmp_path / "notes" / "README.md"
        arg.parent.mkdir()
        arg.write_text("hello\n")
    out = tmp_path / "out"
    assert _predict(arg, data, out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"m2cofs: error: {arg}: ") and text.format(run=run_folder) in line, line
    if what == "folder_without_unified":
        assert "model files in it: fusion_specialist.ckpt" in line
    assert not out.exists()


def test_crafted_pickles_never_execute(tmp_path, capsys, model):
    """A pickle dressed as a model file (with a sidecar whose checksum matches) and a pickle
    planted as an in-stage training checkpoint: both refused, neither runs its payload."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = tmp_path / "data"
    make_case(data, "a")
    evil = tmp_path / "evil" / "unified.ckpt"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps({"encoders.x": Evil()}))
    shutil.copy(sidecar_path(model), sidecar_path(evil))
    _rewrite_sidecar(evil)
    assert _predict(evil, data, tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "not a safetensors weight file" in line and "pickle" in line
    # torch.save-style pickle as RUN/checkpoints/<stage>.pt: torch.load(weights_only=True) refuses it
    pt = tmp_path / "stage0_autoencoder.pt"
    torch.save({"trained": Evil()}, pt)
    with pytest.raises(M2CofsError, match="cannot load the training checkpoint safely"):
        load_training_state(pt)
    assert not marker.exists()


# ----------------------------------------------------------------------------- output folders
def test_output_folder_refusals_never_touch_the_input(tmp_path, capsys, model):
    data = tmp_path / "data"
    make_case(data, "a")
    make_case(data, "b", seed=1)
    before = snapshot(data)
    for argv in (
        ["train", "--data", str(data), "--out", str(data), "--no-progress"],
        ["train", "--data", str(data), "--out", str(data / "run"), "--no-progress"],
        ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--cache-dir", str(data / "c"), "--no-progress"],
        ["predict", "--model", str(model), "--input", str(data), "--out", str(data), "--no-preview"],
        ["predict", "--model", str(model), "--input", str(data / "a"), "--out", str(data), "--overwrite"],
        ["evaluate", "--pred", str(tmp_path), "--data", str(data), "--out", str(data / "rep"), "--quiet"],
        ["compare", "--data", str(data), "--out", str(data / "cmp"), "--folds", "2", "--no-progress"],
    ):
        assert main(argv) == 2, argv
        one_error_line(capsys.readouterr().err)
    assert snapshot(data) == before
    assert not (tmp_path / "r").exists()


def test_predict_never_leaves_partial_output(tmp_path, capsys, model, monkeypatch):
    """Existing results stay as they were when a later run fails half-way; a successful run
    replaces them only with --overwrite; a killed run's staging folder is removed next time."""
    data = tmp_path / "data"
    for cid in ("a", "b", "c"):
        make_case(data, cid, seed=ord(cid))
    out = tmp_path / "out"
    assert _predict(model, data, out, "--ids", "a") == 0
    first = snapshot(out)
    assert _predict(model, data, out, "--ids", "a") == 2  # no --overwrite
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    # a failure in case c, after b was predicted: nothing of b appears, a is untouched
    from m2cofs import inference

    real = inference.predict_case

    def failing(model_, case, *a, **k):
        if case.id == "c":
            raise M2CofsError("simulated failure", case.id)
        return real(model_, case, *a, **k)

    monkeypatch.setattr(inference, "predict_case", failing)
    assert _predict(model, data, out, "--ids", "a,b,c", "--overwrite") == 2
    assert "simulated failure" in one_error_line(capsys.readouterr().err)
    assert snapshot(out) == first
    monkeypatch.setattr(inference, "predict_case", real)
    # a staging folder of a killed run (its process is gone) is cleaned up by the next run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".predict-partial-{dead.pid}-abc"
    (stale / "b").mkdir(parents=True)
    assert _predict(model, data, out, "--ids", "b") == 0
    assert not stale.exists() and (out / "b" / "b_seg.nii.gz").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_sigterm_cleans_up_like_ctrl_c(tmp_path, model):
    """SIGTERM during ``m2cofs predict`` (a real process): the staging folder goes, what OUT held
    before stays, exit status 143 with one line."""
    data = tmp_path / "data"
    for i in range(8):  # about a second per case here: the run is still predicting when the signal comes
        make_case(data, f"c{i}", shape=(32, 32, 32), seed=i)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier file\n")
    proc = subprocess.Popen([sys.executable, "-m", "m2cofs", "predict", "--model", str(model), "--input", str(data),
                             "--out", str(out), "--no-preview", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob(".predict-partial-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "predict never created its staging folder"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "m2cofs: terminated (SIGTERM)" and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_sigterm_handler_is_restored_and_nested_interrupts_reach_the_outer_command(monkeypatch, capsys):
    """main() puts its SIGTERM handler in place only while it runs; a Ctrl-C or SIGTERM inside a
    sub-command that demo / compare runs through main() stops the outer command too (exit 130 / 143)."""
    import m2cofs.commands.synth as synth
    from m2cofs.cli import Terminated

    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def inner(args):
        seen.append(signal.getsignal(signal.SIGTERM))
        raise exc

    for exc, code, text in ((KeyboardInterrupt(), 130, "m2cofs: interrupted"),
                            (Terminated(), 143, "m2cofs: terminated (SIGTERM)")):
        monkeypatch.setattr(synth, "run", inner)
        outer = lambda args: main(["synth", "x"])  # noqa: E731  (a command that runs another, like demo)
        import m2cofs.commands.demo as demo

        monkeypatch.setattr(demo, "run", outer)
        assert main(["demo", "--out", "x"]) == code
        assert capsys.readouterr().err.strip() == text
        assert signal.getsignal(signal.SIGTERM) is before
    assert all(callable(h) and h is not before for h in seen)


# ----------------------------------------------------------------------------- full disk
def _fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` until about ``leave`` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 16 MB tmpfs (needs root and mount permission; skipped otherwise — the simulated
    full-disk tests below cover the same code without it)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _opts(data, out, cache, **kw) -> TrainOptions:
    return TrainOptions(data=str(data), out=str(out), preset=TINY_PRESET, overrides=list(TINY), progress=False,
                        cache_dir=str(cache), **kw)


def test_full_disk_during_training_real_tmpfs(small_tmpfs, synth32, tmp_path, capsys, monkeypatch):
    """RUN on a 16 MB tmpfs, filled up after a checkpoint: the next checkpoint write fails with
    one clear line, the previous checkpoint is intact and loadable, no temp file is left, and
    the run resumes to the end once there is space again."""
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    run, cache = small_tmpfs / "run", tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        train(_opts(synth32, run, cache, stop_after_steps=3))
    (ckpt,) = (run / "checkpoints").glob("*.pt")
    before = ckpt.read_bytes()
    filler = _fill(small_tmpfs, leave=len(before) // 2)
    code = main(["train", "--data", str(synth32), "--out", str(run), "--cache-dir", str(cache), "--no-progress",
                 "--resume", *SETS])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "no space left on the device" in line, line
    assert str(run) in line
    assert ckpt.read_bytes() == before
    state = load_training_state(ckpt)
    assert state["step"] == 3
    assert not [p for p in run.rglob(".*") if is_temp_name(p.name)]
    filler.unlink()
    train(_opts(synth32, run, cache, resume=True))
    assert (run / "unified.ckpt").is_file() and not list((run / "checkpoints").glob("*.pt"))


def test_full_disk_writing_predictions_real_tmpfs(small_tmpfs, tmp_path, capsys, model):
    data = tmp_path / "data"
    make_case(data, "a", shape=(60, 60, 60))
    out = small_tmpfs / "pred"
    out.mkdir()
    filler = _fill(small_tmpfs, leave=64 * 1024)
    code = _predict(model, data, out)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "no space left on the device" in line, line
    assert list(out.iterdir()) == []  # the staging folder is gone, nothing partial
    filler.unlink()


@pytest.mark.parametrize("writer", ["checkpoint", "safetensors", "nifti", "json"])
def test_full_disk_simulated(tmp_path, monkeypatch, writer):
    """ENOSPC while flushing (any writer): one clear error naming the file, the previous
    version intact, no temporary file left. (Runs everywhere; the tmpfs tests need root.)"""
    from m2cofs import io as m2io
    from m2cofs.checkpoint import load_tensors, save_tensors
    from m2cofs.training.engine import _save_state

    target = tmp_path / {"checkpoint": "s.pt", "safetensors": "s.safetensors", "nifti": "v.nii.gz",
                         "json": "r.json"}[writer]

    def write(value: float) -> None:
        if writer == "checkpoint":
            _save_state(target, {"trained": {"w": torch.full((3,), value)}, "step": int(value)})
        elif writer == "safetensors":
            save_tensors(target, {"w": torch.full((3,), value)})
        elif writer == "nifti":
            save_nifti(target, np.full((4, 4, 4), value, np.float32), np.eye(4))
        else:
            m2io.atomic_write_json(target, {"v": value})

    def read() -> float:
        if writer == "checkpoint":
            return float(load_training_state(target)["trained"]["w"][0])
        if writer == "safetensors":
            return float(load_tensors(target)["w"][0])
        if writer == "nifti":
            return float(np.asarray(nib.load(str(target)).dataobj)[0, 0, 0])
        return json.loads(target.read_text())["v"]

    write(1.0)

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(m2io, "_fsync_file", full)
    with pytest.raises(M2CofsError, match="no space left on the device") as exc:
        write(2.0)
    assert str(target) in str(exc.value) and "\n" not in str(exc.value)
    monkeypatch.undo()
    assert read() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_writer_errors_that_mention_a_full_disk_are_recognised(tmp_path):
    """Writers that are not plain Python I/O (safetensors' Rust writer) report ENOSPC in text."""
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")
    from m2cofs.io import atomic_path

    class WriterError(Exception):
        pass

    with pytest.raises(M2CofsError, match="no space left"):
        with atomic_path(target):
            raise WriterError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    with pytest.raises(WriterError):  # other errors pass through unchanged
        with atomic_path(target):
            raise WriterError("something else")


# ----------------------------------------------------------------------------- what a kill leaves behind
def test_temp_file_names():
    assert is_temp_name(".unified.ckpt.ab_cd123.ckpt") and is_temp_name(".x_seg.nii.gz.abcdefgh.nii.gz")
    assert is_temp_name(".run.json.k2j3h4g5.json") and is_temp_name(".stage1_fusion.pt.abcdefgh.pt")
    assert not is_temp_name(".bashrc") and not is_temp_name(".git") and not is_temp_name("unified.ckpt")
    assert not is_temp_name(".predict-partial-123-abc")


def test_resume_copes_with_everything_a_kill_can_leave(synth32, tmp_path, monkeypatch):
    """Half-written temp files everywhere, and the in-stage checkpoint of a stage whose results
    were already written: the resumed run ignores and removes them, does not redo the finished
    stage, and ends clean."""
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    run, cache = tmp_path / "run", tmp_path / "cache"
    for stop in (3, 3):  # into stage 1: stage 0 is complete
        with pytest.raises(KeyboardInterrupt):
            train(_opts(synth32, run, cache, resume=run.exists(), stop_after_steps=stop))
    s0 = run / "stages" / "stage0_autoencoder.safetensors"
    assert s0.exists()
    s0_bytes = s0.read_bytes()
    (ckpt,) = (run / "checkpoints").glob("*.pt")
    shutil.copy(ckpt, run / "checkpoints" / "stage0_autoencoder.pt")  # results written, checkpoint not yet removed
    junk = [run / ".run.json.abcdefgh.json", run / "stages" / ".stage1_fusion.safetensors.x1y2z3w4.safetensors",
            run / "logs" / ".stage1_fusion.csv.qwertyui.csv", run / ".unified.ckpt.zzzzzzzz.ckpt",
            run / "checkpoints" / f".{ckpt.name}.aaaaaaaa.pt"]
    for j in junk:
        j.write_bytes(b"half-written")
    train(_opts(synth32, run, cache, resume=True))
    assert s0.read_bytes() == s0_bytes, "a finished stage is not redone"
    assert not any(j.exists() for j in junk)
    assert not list((run / "checkpoints").glob("*")) and (run / "unified.ckpt").is_file()
    assert clean_stale_temps(run) == []


# ----------------------------------------------------------------------------- the CLI shows no tracebacks
def test_cli_on_a_mangled_header_prints_one_line(tmp_path):
    """In a real process: nibabel's header-fixing log lines and numpy warnings stay hidden; the
    user sees the table and one error line."""
    data = tmp_path / "data"
    folder = make_case(data, "a")
    raw = bytearray(nib.load(str(folder / "a_flair.nii.gz")).header.binaryblock)
    img = nib.load(str(folder / "a_flair.nii.gz"))
    body = np.asarray(img.dataobj).astype(np.float32)
    blob = bytearray(raw) + b"\0" * 4 + body.tobytes()
    import struct

    struct.pack_into("<i", blob, 0, 340)  # sizeof_hdr wrong
    struct.pack_into("<h", blob, 252, 9)  # invalid qform_code
    struct.pack_into("<f", blob, 108, 0.0)  # vox_offset too low
    (folder / "a_flair.nii.gz").unlink()
    (folder / "a_flair.nii").write_bytes(bytes(blob))
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    res = subprocess.run([sys.executable, "-m", "m2cofs", "data", "check", str(data)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode in (1, 2)
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("m2cofs: error:"), res.stderr
