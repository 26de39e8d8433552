"""Segmentation metrics: Dice and HD95 per evaluation region, in millimetres.

Both are computed with MONAI (:class:`monai.metrics.DiceMetric` and
:func:`monai.metrics.compute_hausdorff_distance` with ``percentile=95`` and the voxel spacing) on
the binary region masks of a label map (:func:`m2cofs.data.labels.labels_to_regions`): BraTS
ET / TC / WT under whichever label convention the data uses, MRBrainS CSF / GM / WM.

Definitions (P = predicted region, G = ground-truth region, both sets of voxels):

* **Dice** = 2·|P ∩ G| / (|P| + |G|).
* **HD95** = the 95th-percentile symmetric Hausdorff distance between the boundaries of P and G,
  in mm: the larger of the two directed 95th percentiles (P's boundary voxels → nearest G
  boundary voxel, and G → P), with Euclidean distances scaled by the voxel spacing. This is
  MONAI's (and the BraTS challenge's) definition.

Empty regions (never NaN, so a mean over cases is never silently taken over fewer cases):

============================  ======  ==========================================
case                          Dice    HD95
============================  ======  ==========================================
P and G both empty            1       0
exactly one of P, G empty     0       the penalty: the volume's diagonal in mm
============================  ======  ==========================================

The penalty is ``sqrt(sum((n_i * s_i)^2))`` for a grid of ``n_i`` voxels of ``s_i`` mm — the
largest distance two points of the volume can have, hence an upper bound of any HD95 on that
grid. For the BraTS grid (240×240×155 at 1 mm) it is 373.13 mm, the value the BraTS challenge
uses. :func:`region_metrics` says which regions were penalised.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from m2cofs.data.labels import LabelConvention, labels_to_regions
from m2cofs.metrics.registry import METRICS, SEG_METRICS

HIGHER_IS_BETTER: dict[str, bool] = {name: METRICS[name].higher_is_better for name in SEG_METRICS}


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis: the norms of the affine's first three columns."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(s) for s in np.sqrt((a[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def hd95_penalty(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """HD95 given when exactly one of prediction / ground truth is empty: the volume diagonal (mm)."""
    sp = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if len(sp) != len(shape):
        raise ValueError(f"spacing {tuple(sp)} does not match a {len(shape)}-D shape")
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * sp) ** 2)))


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def _crop_to_union(masks: Sequence[np.ndarray], margin: int = 2) -> tuple[slice, ...]:
    """Bounding box of the union of ``masks`` (spatial axes), grown by ``margin`` voxels."""
    union = np.zeros(masks[0].shape[-3:] if masks[0].ndim >= 3 else masks[0].shape, dtype=bool)
    for m in masks:
        union |= m.reshape((-1, *union.shape)).any(axis=0)
    if not union.any():
        return tuple(slice(0, 1) for _ in union.shape)
    box = []
    for ax in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != ax)
        idx = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(0, int(idx[0]) - margin), min(union.shape[ax], int(idx[-1]) + 1 + margin)))
    return tuple(box)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks with MONAI's DiceMetric; 1 when both are empty, 0 when one is."""
    pred, gt = _check_pair(pred, gt)
    return float(dice_many(pred[None], gt[None])[0])


def dice_many(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dice of each channel of two (R, *spatial) binary stacks (MONAI ``DiceMetric``)."""
    import torch
    from monai.metrics import DiceMetric

    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    out = np.empty(pred.shape[0], dtype=np.float64)
    sl = _crop_to_union([pred, gt], margin=0)
    p = pred[(slice(None), *sl)]
    g = gt[(slice(None), *sl)]
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = metric(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float64))[None],
                     torch.from_numpy(np.ascontiguousarray(g, dtype=np.float64))[None])
    out[:] = val.reshape(-1).double().numpy()
    # The empty rules hold by construction with ignore_empty=False; make them explicit anyway.
    for i in range(pred.shape[0]):
        pe, ge = not p[i].any(), not g[i].any()
        if pe and ge:
            out[i] = 1.0
        elif pe or ge:
            out[i] = 0.0
    return out


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
         penalty: float | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between two binary masks (MONAI).

    Both empty → 0; exactly one empty → ``penalty`` (default: :func:`hd95_penalty` of the
    masks' grid).
    """
    pred, gt = _check_pair(pred, gt)
    pe, ge = not pred.any(), not gt.any()
    if pe and ge:
        return 0.0
    if pe or ge:
        return float(hd95_penalty(pred.shape, spacing) if penalty is None else penalty)
    import torch
    from monai.metrics import compute_hausdorff_distance

    sl = _crop_to_union([pred, gt], margin=2)
    p = torch.from_numpy(np.ascontiguousarray(pred[sl], dtype=np.float32))[None, None]
    g = torch.from_numpy(np.ascontiguousarray(gt[sl], dtype=np.float32))[None, None]
    sp = None if spacing is None else [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = compute_hausdorff_distance(p, g, include_background=True, distance_metric="euclidean",
                                         percentile=95, spacing=sp)
    out = float(val.reshape(-1)[0])
    if not np.isfinite(out):  # pragma: no cover - both masks are non-empty here
        raise RuntimeError(f"MONAI returned HD95 {out} for non-empty masks")
    return out


@dataclass
class RegionScores:
    """Dice and HD95 of every region of one case."""

    regions: list[str]
    dice: dict[str, float]
    hd95: dict[str, float]
    penalised: list[str] = field(default_factory=list)  # regions with exactly one side empty
    both_empty: list[str] = field(default_factory=list)
    penalty: float = 0.0
    voxels_pred: dict[str, int] = field(default_factory=dict)
    voxels_gt: dict[str, int] = field(default_factory=dict)

    def as_row(self, metrics: Sequence[str] = SEG_METRICS) -> dict[str, float]:
        """Flat ``{"Dice/ET": ..., "HD95/ET": ...}`` (metric-major, regions in convention order)."""
        row: dict[str, float] = {}
        if "Dice" in metrics:
            row.update({f"Dice/{r}": self.dice[r] for r in self.regions})
        if "HD95" in metrics:
            row.update({f"HD95/{r}": self.hd95[r] for r in self.regions})
        return row


def region_metrics(pred_label: np.ndarray, gt_label: np.ndarray, convention: LabelConvention,
                   spacing: Sequence[float] | None = None,
                   metrics: Sequence[str] = SEG_METRICS) -> RegionScores:
    """Dice and HD95 of each of the convention's regions between two integer label maps.

    Both maps are in the convention's own label values (e.g. BraTS-2013 1–4); regions are
    formed with :func:`~m2cofs.data.labels.labels_to_regions`. ``spacing`` is the voxel size in
    mm along each array axis (see :func:`spacing_from_affine`).
    """
    pred_label = np.asarray(pred_label)
    gt_label = np.asarray(gt_label)
    if pred_label.shape != gt_label.shape:
        raise ValueError(f"prediction shape {pred_label.shape} differs from ground truth shape {gt_label.shape}")
    if not convention.regions:
        raise ValueError(f"label convention {convention.name!r} has no regions to evaluate")
    unknown = [m for m in metrics if m not in SEG_METRICS]
    if unknown:
        raise ValueError(f"unknown segmentation metric(s) {unknown}; choose from {', '.join(SEG_METRICS)}")
    names = convention.region_names
    sl = _crop_to_union([pred_label > 0, gt_label > 0], margin=2)
    p_reg = labels_to_regions(pred_label[sl], convention).astype(bool)
    g_reg = labels_to_regions(gt_label[sl], convention).astype(bool)
    penalty = hd95_penalty(pred_label.shape, spacing)
    scores = RegionScores(names, {}, {}, penalty=penalty)
    dices = dice_many(p_reg, g_reg) if "Dice" in metrics else None
    for i, r in enumerate(names):
        np_, ng = int(p_reg[i].sum()), int(g_reg[i].sum())
        scores.voxels_pred[r], scores.voxels_gt[r] = np_, ng
        if np_ == 0 and ng == 0:
            scores.both_empty.append(r)
        elif np_ == 0 or ng == 0:
            scores.penalised.append(r)
        scores.dice[r] = float(dices[i]) if dices is not None else float("nan")
        scores.hd95[r] = hd95(p_reg[i], g_reg[i], spacing, penalty) if "HD95" in metrics else float("nan")
    return scores
