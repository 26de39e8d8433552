"""The fused volume on the input grid: composed from the sources with a ``weights`` head
(:func:`compose_on_input_grid`), or an ``image`` head's volume given back the sources' finer
detail (:func:`transfer_detail`, when :func:`detail_transfer_wanted`)."""

from __future__ import annotations

import numpy as np

from m2cofs.config import FUSION_GUIDE_RULES
from m2cofs.data.loading import Case, foreground_mask
from m2cofs.data.preprocess import PreparedCase, PreprocessConfig, apply_intensity_range, restore
from m2cofs.inference.loading import LoadedModel, fusion_head_kind


def detail_transfer_wanted(setting: str, case: PreparedCase) -> bool:
    """``inference.detail_transfer``: ``on``, ``off``, or ``auto`` — on when the model grid is
    coarser than the input grid by more than a quarter along some axis (lite's 2 mm grid on 1 mm
    scans), where the fused volume would otherwise be an upsampled, blurred one."""
    if setting in ("on", "off"):
        return setting == "on"
    original = case.meta.original_spacing
    if case.meta.ornt:  # the original axes in the model grid's (canonical) order
        original = original[np.argsort(np.array(case.meta.ornt)[:, 0])]
    return bool(np.max(np.array(case.meta.spacing) / original.clip(1e-6)) > 1.25)


def needs_source(model: LoadedModel, setting: str, case: PreparedCase) -> bool:
    """Whether :func:`predict_case` wants the case as loaded (``source``): for a ``weights``
    fusion head always (it fuses on the input grid), for an ``image`` head when detail transfer
    applies."""
    if "fusion" not in model.tasks:
        return False
    return fusion_head_kind(model) == "weights" or detail_transfer_wanted(setting, case)


def transfer_detail(fused: np.ndarray, case: PreparedCase, source: Case, preprocess: PreprocessConfig) -> np.ndarray:
    """Add to ``fused`` (on the original grid) the detail of the sources that the model grid
    cannot hold, choosing per voxel the source whose detail is strongest (the max-abs rule of
    Laplacian-pyramid fusion, Burt & Adelson 1983; here with one level whose base is the fused
    volume). A source's detail is its full-resolution scaled image minus what the model saw of it
    (the model-grid channel brought back to the original grid the way the fused volume is), so
    nothing is added where the model grid already holds the image, and exactly the resampling
    loss is added where it does not."""
    fg = foreground_mask(source.images, source.mask)
    best = np.zeros(fused.shape, np.float32)
    for c, channel in enumerate(source.images):
        full = apply_intensity_range(channel, fg, case.meta.intensity_range[c], preprocess)
        full -= restore(case.image[c], case.meta, "image", fill=0.0)
        np.copyto(best, full, where=np.abs(full) > np.abs(best))
        del full
    best += fused
    best[~fg] = 0.0
    return best


def compose_on_input_grid(weights: np.ndarray, case: PreparedCase, source: Case,
                          preprocess: PreprocessConfig) -> np.ndarray:
    """The fused volume on the input's own grid: the source weights of a ``weights`` fusion head
    (N, *meta.shape, on the model grid), brought back to the original grid (trilinear, equal
    weights 1/N outside the crop box: softmax weights still sum to one, gains keep their sum), applied to the full-resolution
    sources scaled exactly as the model saw them. No detail is lost to the model grid: only the
    weight maps, which are smooth, are resampled."""
    n = weights.shape[0]
    w = restore(weights, case.meta, "prob", fill=1.0 / n)
    fg = foreground_mask(source.images, source.mask)
    fused = np.zeros(w.shape[1:], np.float32)
    for c, channel in enumerate(source.images):
        fused += w[c] * apply_intensity_range(channel, fg, case.meta.intensity_range[c], preprocess)
    fused[~fg] = 0.0
    return fused


#: a guide region smaller than this (voxels in the brain) gives ``enhance`` no median to rise above
GUIDE_MIN_VOXELS = 100


def rim_source(modalities) -> int | None:
    """The index of the source whose lesion contrast is the enhancing rim (T1ce), or ``None``."""
    from m2cofs.losses import RIM_SOURCES

    return next((i for i, m in enumerate(modalities) if m in RIM_SOURCES), None)


def guide_fusion(fused: np.ndarray, region: np.ndarray, rim: np.ndarray, brain: np.ndarray, spacing,
                 gain: float, sigma_mm: float, rule: str = "add") -> np.ndarray:
    """The fused volume guided by the model's own segmentation. ``rim`` is the rim source (T1ce)
    scaled as the model saw it, ``s`` the predicted ``region`` (a boolean mask on the same grid)
    smoothed with a Gaussian of ``sigma_mm`` (per axis, by the voxel ``spacing``):

    * ``add``: ``fused + gain · s · rim`` — T1ce's rim on top of the fused volume inside the
      region (keeps both lesion contrasts far better; raises the volume's range, so once scaled
      the rest of the brain is dimmer and the paper's edge metrics fall, ``results/cv19_guide``);
    * ``max``: ``fused + gain · s · max(rim − fused, 0)`` — at gain 1, max(fused, T1ce) in the
      middle of the region: no voxel brighter than its brightest input, little change;
    * ``enhance``: ``fused + gain · s · max(rim − m, 0)``, ``m`` the median of ``rim`` inside the
      region (in the brain) — only what enhances above the region's own T1ce level is added, so
      the rim rises and the rest of the core (necrosis, non-enhancing tumour) stays as fused: the
      rim contrast for less added range than ``add`` (``results/cv19_guide2``). A region with
      fewer than :data:`GUIDE_MIN_VOXELS` voxels in the brain adds nothing.

    Each a per-voxel combination of the sources' own intensities: where the region is wrong the
    volume shows T1ce's own intensity there, never one that no source has. Zero outside the
    ``brain``."""
    if rule not in FUSION_GUIDE_RULES:
        raise ValueError(f"unknown guide rule {rule!r}; choose one of {', '.join(FUSION_GUIDE_RULES)}")
    weight = region.astype(np.float32)
    if sigma_mm > 0:
        from scipy.ndimage import gaussian_filter

        weight = gaussian_filter(weight, [sigma_mm / max(float(s), 1e-6) for s in spacing])
    if rule == "add":
        step = rim
    elif rule == "max":
        step = np.maximum(rim - fused, 0.0)
    else:
        inside = region & brain
        if inside.sum() < GUIDE_MIN_VOXELS:
            step = np.zeros_like(rim)
        else:
            step = np.maximum(rim - np.float32(np.median(rim[inside])), 0.0)
    out = fused + np.float32(gain) * weight * step
    out[~brain] = 0.0
    return out.astype(np.float32, copy=False)
