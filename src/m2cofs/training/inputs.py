"""The cases a training run learns from: read, checked and preprocessed before anything of an
old run is touched (:func:`load_training_data`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from m2cofs.config import Config
from m2cofs.data.dataset import MultiModalDataset
from m2cofs.data.labels import LabelConvention
from m2cofs.data.preprocess import PreparedCase, PreprocessConfig
from m2cofs.errors import M2CofsError
from m2cofs.training.distributed import DistInfo, barrier
from m2cofs.training.options import TrainOptions, default_modalities


@dataclass
class TrainingData:
    dataset: MultiModalDataset
    convention: LabelConvention
    modalities: list[str]
    preprocess: PreprocessConfig
    cases: list[PreparedCase]


def select_ids(ids: list[str], include: list[str] | None, exclude: list[str] | None, data: str) -> list[str]:
    """``ids`` after ``--include`` / ``--exclude`` (unknown ids refused)."""
    if include:
        unknown = [i for i in include if i not in ids]
        if unknown:
            raise M2CofsError(f"--include: no case with id {', '.join(unknown)}", data)
        ids = [i for i in ids if i in include]
    if exclude:
        unknown = [i for i in exclude if i not in ids]
        if unknown:
            raise M2CofsError(f"--exclude: no case with id {', '.join(unknown)}", data)
        ids = [i for i in ids if i not in exclude]
    if not ids:
        raise M2CofsError("no training cases left after --include/--exclude", data)
    return ids


def load_training_data(o: TrainOptions, cfg: Config, out: Path, dist: DistInfo,
                       say: Callable[[str], None]) -> TrainingData:
    """Every case of ``o.data`` that the run trains on, preprocessed (rank 0 first, into the
    cache; the other ranks then read the cache)."""
    pre = PreprocessConfig(spacing=cfg.data.spacing, intensity=cfg.data.intensity)
    probe = MultiModalDataset(o.data, o.format, o.labels, o.modalities, o.resample_to, pre)
    if probe.convention.name == "none":
        raise M2CofsError("has no label files: M²-CoFS trains segmentation too (pass --labels if the labels were not recognised)",
                          o.data)
    modalities = o.modalities or default_modalities(probe.modalities, probe.convention)
    if len(modalities) < 2:
        raise M2CofsError(f"fusion needs two or more modalities; the data has {', '.join(modalities)}", o.data)
    ids = select_ids(list(probe.ids), o.include, o.exclude, o.data)
    cache = Path(o.cache_dir) if o.cache_dir else out / "cache"
    dataset = MultiModalDataset(o.data, o.format, probe.convention.name, modalities, o.resample_to, pre,
                                cache_dir=cache, ids=ids)
    found = {c.id: c for c in probe.cases}
    for c in dataset.cases:  # each case keeps its own dataset folder's label convention
        c.convention, c.convention_reason = found[c.id].convention, found[c.id].convention_reason
    convention = dataset.convention
    if dist.is_main:
        say(f"data: {len(ids)} case(s) from {o.data} ({dataset.format}), modalities {', '.join(modalities)}, "
            f"labels {convention.name} ({probe.convention_reason}"
            f"{'' if len(ids) == len(probe.ids) else f'; conventions read from all {len(probe.ids)} cases found'})")
        # One process under torchrun: the other ranks wait in a gloo barrier meanwhile, and a
        # process pool beside that barrier has been seen to abort a rank on a loaded machine.
        workers = 1 if dist.enabled else min(len(ids), max(1, (os.cpu_count() or 1)))
        cases = dataset.prepare_all(workers=workers, progress=o.progress)
    barrier(dist)
    if not dist.is_main:
        cases = dataset.prepare_all(workers=1)
    missing = [c.id for c in cases if c.label is None]
    if missing:
        raise M2CofsError(f"case(s) without a label file: {', '.join(missing)} (exclude them with --exclude)", o.data)
    return TrainingData(dataset, convention, modalities, pre, cases)
