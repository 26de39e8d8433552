"""Segmentation probabilities → region masks on the input grid (:func:`prob_to_regions`), and
the connected-component post-processing of tumour regions (:func:`postprocess_regions`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from m2cofs.data.labels import LabelConvention
from m2cofs.data.preprocess import CaseMeta, _resize, restore


def prob_to_regions(prob: np.ndarray, meta: CaseMeta, threshold: float = 0.5) -> np.ndarray:
    """Region probabilities (R, *meta.shape) → binary masks (R, *meta.original_shape) uint8.

    The same result as ``restore(prob, meta, "prob") > threshold`` (trilinear resampling to the
    cropped grid, then padding and reorientation, which commute with the threshold), one region
    at a time and thresholded before padding: no float array on the original grid.
    """
    prob = np.asarray(prob)
    out = np.empty((prob.shape[0], *meta.original_shape), dtype=np.uint8)
    resample = list(meta.shape) != list(meta.cropped_shape)
    grid = dataclasses.replace(meta, shape=list(meta.cropped_shape)) if resample else meta
    for c in range(prob.shape[0]):
        p = prob[c]
        if resample:
            p = _resize(p[None], meta.cropped_shape, "trilinear")[0]
        out[c] = restore((p > threshold).astype(np.uint8), grid, "label", fill=0)
    return out


def postprocess_regions(regions: np.ndarray, convention: LabelConvention, spacing, min_component_mm3: float,
                        keep_largest_wt: bool, keep_fraction: float = 1.0, wt_select: str = "largest",
                        min_core_mm3: float = 200.0, et_min_mm3: float = 0.0) -> np.ndarray:
    """Clean binary region masks (R, X, Y, Z) of a tumour convention (nested ET ⊂ TC ⊂ WT).

    Components smaller than ``min_component_mm3`` are removed from every region (MONAI's
    ``RemoveSmallObjects`` with ``by_measure``); with ``keep_largest_wt`` the largest
    whole-tumour component is kept (``KeepLargestConnectedComponent``), and with
    ``keep_fraction`` < 1 also every other component at least that fraction of its size — when
    two components are alike in size nothing says which one is the tumour, and keeping only one
    can throw the whole tumour away; TC and ET are then clipped to WT. ``wt_select="core"``
    chooses by the network's evidence instead of size: every WT component that holds a tumour
    core (TC of at least ``min_core_mm3``) is kept, the others dropped; when none holds one,
    nothing says which is the tumour and all are kept. With ``et_min_mm3`` > 0, an enhancing
    tumour smaller than that in all is called non-enhancing core (its voxels stay in TC): the
    usual BraTS answer to low-grade cases without enhancement. Tissue conventions are returned
    unchanged.
    """
    if not convention.nested or regions.size == 0:
        return regions
    # Everything happens inside the bounding box of the segmentation: components never leave
    # it and a row-major scan of the box meets voxels in the same order as a scan of the whole
    # volume, so the result is the whole-volume result at a fraction of the memory and time.
    anything = regions.any(axis=0)
    if not anything.any():
        return regions.astype(np.uint8)
    box = []
    for ax in range(anything.ndim):
        idx = np.flatnonzero(anything.any(axis=tuple(a for a in range(anything.ndim) if a != ax)))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    del anything
    out = np.zeros(regions.shape, dtype=np.uint8)
    out[(slice(None), *box)] = _postprocess_box(regions[(slice(None), *box)], convention, spacing, min_component_mm3,
                                                keep_largest_wt, keep_fraction, wt_select, min_core_mm3)
    names = convention.region_names
    if et_min_mm3 > 0 and "ET" in names:
        et = names.index("ET")
        voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=np.float64)))
        if 0 < out[et].sum() * voxel_mm3 < et_min_mm3:
            out[et] = 0
    return out


def _components_with_core(wt: np.ndarray, tc: np.ndarray, min_core_voxels: float) -> np.ndarray:
    """The 26-connected components of ``wt`` that hold at least ``min_core_voxels`` of ``tc``
    (all of them when none does)."""
    from scipy import ndimage

    lab, n = ndimage.label(wt, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return wt.astype(bool)
    core = np.bincount(lab[tc.astype(bool)], minlength=n + 1)[1:]
    keep = np.flatnonzero(core >= max(min_core_voxels, 1)) + 1
    return np.isin(lab, keep) if keep.size else wt.astype(bool)


def _keep_large_components(mask: np.ndarray, fraction: float) -> np.ndarray:
    """The 26-connected components of ``mask`` at least ``fraction`` × the largest's size."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= fraction * sizes.max()) + 1
    return np.isin(lab, keep)


def _postprocess_box(regions: np.ndarray, convention: LabelConvention, spacing, min_component_mm3: float,
                     keep_largest_wt: bool, keep_fraction: float = 1.0, wt_select: str = "largest",
                     min_core_mm3: float = 200.0) -> np.ndarray:
    from monai.transforms import KeepLargestConnectedComponent, RemoveSmallObjects

    names = convention.region_names
    t = torch.from_numpy(regions.astype(bool))
    if min_component_mm3 > 0:
        import warnings

        with warnings.catch_warnings():  # scikit-image renamed min_size; MONAI still passes it
            warnings.simplefilter("ignore", FutureWarning)
            t = RemoveSmallObjects(min_size=float(min_component_mm3), connectivity=3, independent_channels=True,
                                   by_measure=True, pixdim=tuple(float(s) for s in spacing))(t)
        t = torch.as_tensor(t).bool()
    if "WT" in names:
        wt = names.index("WT")
        if keep_largest_wt and t[wt].any() and wt_select == "core" and "TC" in names:
            voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=np.float64)))
            t[wt] = torch.from_numpy(_components_with_core(t[wt].numpy(), t[names.index("TC")].numpy(),
                                                           min_core_mm3 / voxel_mm3))
        elif keep_largest_wt and t[wt].any():
            if keep_fraction >= 1.0:
                t[wt] = torch.as_tensor(KeepLargestConnectedComponent(is_onehot=False, connectivity=3)(t[wt][None].int())[0]).bool()
            else:
                t[wt] = torch.from_numpy(_keep_large_components(t[wt].numpy(), keep_fraction))
        for i in range(len(names)):
            if i != wt:
                t[i] &= t[wt]
    return t.numpy().astype(np.uint8)


