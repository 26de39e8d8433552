"""``m2cofs data check``: load every case of a dataset and say what it holds and what is wrong."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from m2cofs.data.cases import DatasetSpec
from m2cofs.data.conventions import case_convention, common_modalities, resolve_convention
from m2cofs.data.labels import LabelConvention
from m2cofs.data.layouts import discover
from m2cofs.data.loading import load_case
from m2cofs.errors import M2CofsError


@dataclass
class CheckRow:
    """One row of ``m2cofs data check``."""

    id: str
    modalities: list[str]
    shape: tuple[int, ...] | None
    spacing: tuple[float, ...] | None
    orientation: str
    label_values: list[int] | None
    regions: dict[str, int] | None
    problems: list[str]
    notes: list[str]
    convention: str = ""

    @property
    def usable(self) -> bool:
        return not self.problems


def check_dataset(
    root: str | os.PathLike,
    format: str = "auto",
    labels: str = "auto",
    modalities: Sequence[str] | None = None,
    resample_to: str | None = None,
) -> tuple[DatasetSpec, LabelConvention | None, str, list[CheckRow]]:
    """Load every case and report what it holds and what is wrong with it.

    Problems with a single case are collected in its row; problems with the whole dataset
    (nothing found, unreadable datalist, undecidable label convention) raise
    :class:`M2CofsError`.
    """
    spec = discover(root, format)
    dataset_conv, reason = resolve_convention(spec, labels)
    rows: list[CheckRow] = []
    if modalities:
        mods = list(modalities)
    else:
        mods, note = common_modalities(spec)
        if note:
            spec.notes.append(note)
    for c in spec.cases:
        convention = case_convention(c, dataset_conv)
        try:
            case = load_case(c, mods, convention, resample_to)
        except M2CofsError as exc:
            rows.append(CheckRow(c.id, sorted(c.images), None, None, "", None, None, [str(exc)], list(c.notes),
                                 convention.name))
            continue
        problems: list[str] = []
        vals = regions = None
        if case.label is not None:
            vals = sorted(int(v) for v in np.unique(case.label))
            regions = {r: int(np.isin(case.label, sorted(m)).sum()) for r, m in convention.regions.items()}
        elif convention.name != "none":
            case.notes.append("no label file")
        if len(case.modalities) < 2:
            problems.append(f"only {len(case.modalities)} modality: fusion needs two or more")
        rows.append(CheckRow(c.id, case.modalities, case.shape, tuple(round(s, 3) for s in case.spacing),
                             case.orientation, vals, regions, problems, case.notes, convention.name))
    return spec, dataset_conv, reason, rows
