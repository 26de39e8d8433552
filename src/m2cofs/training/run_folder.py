"""The run folder ``RUN/`` of ``m2cofs train`` (its layout: :mod:`~m2cofs.training.pipeline`):
the refusals before anything is written, ``--overwrite``, what an interrupted run leaves
behind, and whether ``run.json`` still describes the same run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from m2cofs.config import Config
from m2cofs.errors import M2CofsError
from m2cofs.io import clean_stale_temps, is_inside
from m2cofs.training.options import TrainOptions

RUN_ITEMS = ("run.json", "summary.json", "unified.ckpt", "unified.ckpt.json", "fusion_specialist.ckpt",
             "fusion_specialist.ckpt.json", "seg_specialist.ckpt", "seg_specialist.ckpt.json", "stages",
             "checkpoints", "logs", "cache")
RUN_JSON_KEYS = ("modalities", "label_convention", "cases", "preprocessing", "config")  # must match to resume


def data_root(data: Path) -> Path:
    return data if data.is_dir() else data.parent


def check_output_folder(out: Path, data: Path) -> None:
    """Refuse an output folder that is, or is inside, the input data."""
    root = data_root(data)
    if is_inside(out, root):
        raise M2CofsError(f"the output folder must not be the input folder or inside it ({root})", out)


def check_cache_folder(cache_dir: str | None, data: Path) -> None:
    """Refuse a ``--cache-dir`` that is, or is inside, the input data."""
    if cache_dir is not None and is_inside(Path(cache_dir), data_root(data)):
        raise M2CofsError("--cache-dir must not be the input folder or inside it", cache_dir)


def stage_file(out: Path, name: str) -> Path:
    """Where stage ``name`` keeps its results."""
    return out / "stages" / f"{name}.safetensors"


def existing_run(out: Path) -> bool:
    return any((out / p).exists() for p in ("run.json", "stages", "checkpoints"))


def check_run_folder(out: Path, opts: TrainOptions) -> None:
    """Refusals that need no writing (before the data are read; rank 0)."""
    if out.exists() and not out.is_dir():
        raise M2CofsError("exists and is not a folder", out)
    if existing_run(out) and not (opts.overwrite or opts.resume) and opts.stages == [0, 1, 2, 3]:
        raise M2CofsError("already holds a training run; pass --resume to continue it or --overwrite to start over", out)
    if opts.overwrite:
        root = data_root(Path(opts.data))
        for item in RUN_ITEMS:
            if item != "cache" and (out / item).exists() and is_inside(root, out / item):
                raise M2CofsError(f"--overwrite would delete {out / item}, which holds the input data", out)


def prepare_run_folder(out: Path, overwrite: bool) -> None:
    """``--overwrite``: remove an old run (not its cache); create the folder; clean up after a kill (rank 0)."""
    if existing_run(out) and overwrite:
        for item in RUN_ITEMS:
            p = out / item
            if item == "cache":
                continue  # preprocessing does not depend on the run; keep it
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    clean_interrupted_state(out)


def clean_interrupted_state(out: Path) -> None:
    """What a kill can leave behind: temporary files of interrupted atomic writes, and the
    in-stage checkpoint of a stage whose results were written just before the kill (the stage
    is complete: its results file exists)."""
    clean_stale_temps(out)
    for ckpt in sorted((out / "checkpoints").glob("*.pt")):
        if stage_file(out, ckpt.stem).exists():
            ckpt.unlink(missing_ok=True)


def discard_partial_output(out: Path, created: bool, had_cache: bool, own_cache: bool) -> None:
    """After bad input: remove the folder this call made, or the cache it started in RUN."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
    elif not had_cache and own_cache:
        shutil.rmtree(out / "cache", ignore_errors=True)


def training_config(d: dict | None) -> dict | None:
    """What of a run's recorded config shapes its weights: read through today's Config (keys
    added since take their defaults) without the inference section, which only acts at predict
    time — so a run resumes across such changes."""
    if d is None:
        return None
    try:
        out = Config.from_dict(d, source="run.json").to_dict()
    except M2CofsError:
        return d
    out.pop("inference", None)
    return out


def check_run_json(path: Path, info: dict, out: Path) -> None:
    """Refuse to continue a run whose ``run.json`` records another run (rank 0)."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    diff = [k for k in RUN_JSON_KEYS if k != "config" and old.get(k) != info.get(k)]
    if training_config(old.get("config")) != training_config(info["config"]):
        diff.append("config")
    if diff:
        raise M2CofsError(f"holds a run with different {', '.join(diff)}; use another --out or pass --overwrite", out)
