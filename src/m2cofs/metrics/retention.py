"""Lesion contrast retention: how much of each source's lesion contrast a fused volume keeps.

Ours, not the paper's (the paper's six fusion metrics reward copying a source; this one sees
which source's lesion the fused volume shows). For a volume X and two regions R, B inside the
brain,

    d_X(R, B) = (mean_X(R) − mean_X(B)) / std_X(brain)

(population std over the brain voxels; no shift or positive scale of X changes it). Each source
modality has the contrast a radiologist reads on it (:data:`CONTRAST_OF`):

* **T1ce** (T1Gd): the enhancing rim — ET against the rest of the lesion (WT minus ET);
* **FLAIR** and **T2**: the oedema — the whole lesion (WT) against normal-appearing brain
  (brain minus WT);
* other modalities (T1, T1-IR, PD): none; they get no retention column.

Retention of source i = d_fused / d_source_i, on that source's contrast: 1 when the fused volume
shows the source's contrast as strongly as the source (a copy, or any shifted and scaled copy),
about 0 when it does not show it, negative when it inverts it. **both** = the smallest retention
over the sources with a defined one (T1ce and FLAIR: the smaller of the two).

Regions come from the ground-truth label (ET and WT of the BraTS 2013/2017/2023 and Decathlon
conventions), always inside the brain. A region with fewer than :data:`MIN_REGION_VOXELS` voxels
counts as absent: a case without ET (or with a tiny one) has no T1ce contrast, so "both" is FLAIR's
alone. A source whose own contrast is below :data:`MIN_SOURCE_CONTRAST` (|d_source| < 0.1: the
lesion is not visible on it) has no retention either (a ratio to nearly nothing means nothing).
Conventions without ET / WT (MRBrainS tissue classes) define no retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from m2cofs.data.labels import LabelConvention

__all__ = ["CONTRAST_OF", "CONTRASTS", "MIN_REGION_VOXELS", "MIN_SOURCE_CONTRAST", "Retention", "contrast",
           "contrast_kind", "lesion_retention", "retention_columns", "defined_for"]

#: a region with fewer voxels than this counts as absent (0.1 mL at 1 mm)
MIN_REGION_VOXELS = 100
#: a source whose own |d| is below this shows no lesion contrast: its retention is not defined
MIN_SOURCE_CONTRAST = 0.1

#: the contrasts: name → (region R, region B, what it shows)
CONTRASTS: dict[str, tuple[str, str, str]] = {
    "rim": ("ET", "WT minus ET", "the enhancing rim: ET against the rest of the lesion"),
    "oedema": ("WT", "brain minus WT", "the oedema: the whole lesion against normal-appearing brain"),
}
#: canonical modality → its contrast
CONTRAST_OF: dict[str, str] = {"t1ce": "rim", "flair": "oedema", "t2": "oedema"}

PREFIX = "retention/"
BOTH = "both"


def contrast_kind(modality: str) -> str | None:
    """The contrast a modality shows (``rim``, ``oedema``) or ``None`` (any alias: ``T1Gd`` → rim)."""
    from m2cofs.data.modalities import normalize_modality

    return CONTRAST_OF.get(normalize_modality(modality) or str(modality).lower())


def defined_for(convention: LabelConvention) -> bool:
    """Whether the label convention has the ET and WT regions the contrasts need."""
    return "ET" in convention.regions and "WT" in convention.regions


def contrast(x: np.ndarray, r: np.ndarray, b: np.ndarray, brain: np.ndarray) -> float:
    """d_X(R, B) = (mean_X(R) − mean_X(B)) / std_X(brain); NaN when X is constant in the brain."""
    x = np.asarray(x, dtype=np.float64)
    sd = float(x[brain].std())
    if not np.isfinite(sd) or sd <= 0:
        return float("nan")
    return (float(x[r].mean()) - float(x[b].mean())) / sd


@dataclass
class Retention:
    """One volume's retention per source (and ``both``), the contrasts behind it, and notes."""

    values: dict[str, float] = field(default_factory=dict)  # source modality → retention; "both"
    d_source: dict[str, float] = field(default_factory=dict)
    d_fused: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, float]:
        """``{"retention/t1ce": …, "retention/flair": …, "retention/both": …}`` (defined ones only)."""
        return {PREFIX + k: v for k, v in self.values.items()}


def lesion_regions(label: np.ndarray, convention: LabelConvention, brain: np.ndarray
                   ) -> dict[str, np.ndarray | None]:
    """The four regions of the contrasts inside the brain (``None`` where one is too small)."""
    lab = np.asarray(label)
    et = np.isin(lab, list(convention.regions["ET"])) & brain
    wt = np.isin(lab, list(convention.regions["WT"])) & brain
    regions = {"ET": et, "WT minus ET": wt & ~et, "WT": wt, "brain minus WT": brain & ~wt}
    return {k: (m if int(m.sum()) >= MIN_REGION_VOXELS else None) for k, m in regions.items()}


def lesion_retention(sources: Mapping[str, np.ndarray], fused: np.ndarray, label: np.ndarray,
                     convention: LabelConvention, brain: np.ndarray | None = None) -> Retention:
    """Retention of every source with a defined contrast (see the module docstring).

    Args:
        sources: modality name → volume (any alias; the column uses the name given).
        fused: the fused volume, same grid.
        label: the ground-truth label map in ``convention``'s values.
        brain: the brain mask; ``None`` = every voxel that is non-zero in some source.
    """
    out = Retention()
    if not defined_for(convention):
        out.notes.append(f"retention not defined for label convention {convention.name!r} (it needs ET and WT)")
        return out
    if brain is None:
        brain = np.zeros(np.shape(fused), dtype=bool)
        for v in sources.values():
            brain |= np.asarray(v) != 0
    brain = np.asarray(brain, dtype=bool)
    regions = lesion_regions(label, convention, brain)
    for name, vol in sources.items():
        kind = contrast_kind(name)
        if kind is None:
            continue
        r_name, b_name, _ = CONTRASTS[kind]
        r, b = regions[r_name], regions[b_name]
        if r is None or b is None:
            small = r_name if r is None else b_name
            out.notes.append(f"retention of {name}: {small} has fewer than {MIN_REGION_VOXELS} voxels, "
                             f"no {kind} contrast" + (" (both = the other sources alone)" if len(sources) > 1 else ""))
            continue
        ds, df = contrast(vol, r, b, brain), contrast(fused, r, b, brain)
        out.d_source[name], out.d_fused[name] = ds, df
        if not np.isfinite(ds) or abs(ds) < MIN_SOURCE_CONTRAST:
            out.notes.append(f"retention of {name}: the source's own {kind} contrast d = {ds:.3g} is below "
                             f"{MIN_SOURCE_CONTRAST:g}: not defined")
            continue
        out.values[name] = df / ds if np.isfinite(df) else float("nan")
    if out.values:
        out.values[BOTH] = float(min(out.values.values()))
    return out


def retention_columns(present: Sequence[str] | set[str], sources: Sequence[str] = ()) -> list[str]:
    """The retention columns among ``present``: per source (in ``sources``' order, then any
    other), then ``retention/both``."""
    cols = [c for c in present if str(c).startswith(PREFIX)]
    order = [PREFIX + s for s in sources]
    per_source = sorted((c for c in cols if c != PREFIX + BOTH),
                        key=lambda c: (order.index(c) if c in order else len(order), c))
    return per_source + ([PREFIX + BOTH] if PREFIX + BOTH in cols else [])
