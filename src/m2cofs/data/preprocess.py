"""Preprocessing with an exact inverse, and an on-disk cache.

Forward (:func:`preprocess_case`), in order:

1. **Reorient** to the closest canonical (RAS+) orientation; the original affine and orientation
   are recorded.
2. **Crop** to the bounding box of the brain (the brain mask, else the non-background voxels)
   plus a margin.
3. **Resample** (optional, ``spacing``) to a target voxel size, e.g. 2 mm for CPU speed:
   trilinear for images, nearest for labels.
4. **Scale** each modality to [0, 1] inside the foreground. ``percentile`` (default):
   ``lo = min(0, P_low)``, ``hi = P_high`` of the foreground, then ``clip((x - lo) / (hi - lo), 0, 1)``;
   on ordinary scans (non-negative) this is the paper's "negatives clipped, scaled to [0, 1]"
   with the top 0.5 % of outliers saturated; on z-scored data (e.g. the BraTS-2013 cases, half
   of the brain below zero) it keeps the negative half instead of wiping it out. ``minmax`` is
   the authors' code exactly: negatives clipped to 0, then ``(x - min) / max`` per volume.
   ``robust``: ``lo = P_low``, ``hi = P_high`` of the foreground: no shift or positive scale of a
   scan changes the result, so raw scans (BraTS 2018–2021), z-scored ones (the BraTS-2013
   redistribution) and scans preprocessed otherwise (BraTS 2023) look alike to the network.
   Background (outside the foreground) is set to 0.

Inverse (:func:`restore`): undo the resampling (to the cropped grid), paste into the canonical
grid, undo the reorientation — a prediction lands on the input's original grid with its
original affine. Without resampling the label round trip is exact.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from m2cofs.data.loading import Case, foreground_mask
from m2cofs.errors import M2CofsError

CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of :func:`preprocess_case` (recorded with every model and output)."""

    canonical: bool = True
    crop: bool = True
    margin: int = 4  # voxels around the brain bounding box
    spacing: tuple[float, float, float] | None = None  # target voxel size in mm; None keeps the input's
    intensity: str = "percentile"  # "percentile", "robust" (shift- and scale-free) or "minmax" (the authors' code)
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def __post_init__(self):
        if self.intensity not in ("percentile", "robust", "minmax"):
            raise ValueError(f"intensity must be 'percentile', 'robust' or 'minmax', got {self.intensity!r}")
        if self.margin < 0:
            raise ValueError("margin must be >= 0")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"spacing must be three positive numbers, got {self.spacing!r}")
            object.__setattr__(self, "spacing", sp)
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ValueError("percentiles must satisfy 0 <= lower < upper <= 100")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spacing"] = list(self.spacing) if self.spacing else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        d = dict(d)
        if d.get("spacing") is not None:
            d["spacing"] = tuple(d["spacing"])
        return cls(**d)


@dataclass
class CaseMeta:
    """Everything needed to put a result back in the original space (JSON-serialisable)."""

    id: str
    modalities: list[str]
    original_shape: list[int]
    original_affine: list[list[float]]
    header: bytes = b""  # the reference image's NIfTI header (binary block)
    ornt: list[list[float]] = field(default_factory=list)  # original axes → RAS (nibabel ornt)
    canonical_shape: list[int] = field(default_factory=list)
    canonical_affine: list[list[float]] = field(default_factory=list)
    crop_box: list[list[int]] = field(default_factory=list)  # [[lo, hi) per axis] in canonical space
    cropped_shape: list[int] = field(default_factory=list)
    shape: list[int] = field(default_factory=list)  # preprocessed (model) grid
    affine: list[list[float]] = field(default_factory=list)  # preprocessed grid's affine
    spacing: list[float] = field(default_factory=list)  # preprocessed voxel size (mm)
    intensity_range: list[list[float]] = field(default_factory=list)  # per modality (lo, hi)
    files: dict[str, str] = field(default_factory=dict)
    label_convention: str = ""  # the convention of the case's label values ("" when not known)
    preprocessing: dict[str, Any] = field(default_factory=dict)  # the PreprocessConfig it was made with

    @property
    def original_spacing(self) -> np.ndarray:
        """The voxel size (mm) along each axis of the original grid, from its affine."""
        return np.sqrt((np.array(self.original_affine)[:3, :3] ** 2).sum(0))

    def to_json(self) -> str:
        d = asdict(self)
        d["header"] = self.header.hex()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "CaseMeta":
        d = json.loads(text)
        d["header"] = bytes.fromhex(d.get("header", ""))
        return cls(**d)

    def nifti_header(self) -> nib.Nifti1Header | None:
        if not self.header:
            return None
        if len(self.header) == 348:
            return nib.Nifti1Header(binaryblock=self.header)
        return nib.Nifti2Header(binaryblock=self.header)


@dataclass
class PreparedCase:
    """A preprocessed case: model-ready arrays plus the metadata to invert it."""

    id: str
    image: np.ndarray  # (C, X, Y, Z) float32 in [0, 1]
    mask: np.ndarray  # (X, Y, Z) bool foreground
    label: np.ndarray | None  # (X, Y, Z) int16 in the dataset's own label values
    meta: CaseMeta

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "image": self.image, "mask": self.mask, "label": self.label,
                "modalities": self.meta.modalities, "meta": self.meta}


def bounding_box(mask: np.ndarray, margin: int = 0) -> list[list[int]]:
    """``[lo, hi)`` per axis of a 3-D mask's True voxels, widened by ``margin`` voxels (clipped to
    the array); the whole array when the mask is empty."""
    if not mask.any():
        return [[0, s] for s in mask.shape]
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append([max(0, int(idx[0]) - margin), min(mask.shape[ax], int(idx[-1]) + 1 + margin)])
    return box


def _resize(arr: np.ndarray, shape: Sequence[int], mode: str) -> np.ndarray:
    """Resize (C, X, Y, Z) to ``shape`` with torch (trilinear / nearest-exact)."""
    import torch  # here, not at the top: `m2cofs data check` and the CLI's start-up do without torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode=mode, **kwargs)[0]
    return out.numpy()


def _scaled_affine(affine: np.ndarray, old_shape, new_shape) -> np.ndarray:
    """Affine of a grid resized from ``old_shape`` to ``new_shape`` (voxel-centre aligned, as
    ``interpolate(align_corners=False)``)."""
    scale = np.array(old_shape, dtype=np.float64) / np.array(new_shape, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = np.diag(scale)
    m[:3, 3] = (scale - 1.0) / 2.0
    return affine @ m


def scale_intensity(vol: np.ndarray, fg: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, tuple[float, float]]:
    """Scale one modality to [0, 1] (see the module docstring); returns the array and (lo, hi)."""
    vals = vol[fg] if fg.any() else vol.ravel()
    if cfg.intensity == "minmax":
        v = np.clip(vol, 0, None)
        lo, hi = float(v.min()), float(v.max())
        out = (v - lo) / max(hi, 1e-8)
        return out.astype(np.float32), (lo, hi)
    p_lo, p_hi = np.percentile(vals, [cfg.lower_percentile, cfg.upper_percentile])
    lo = float(p_lo) if cfg.intensity == "robust" else min(0.0, float(p_lo))
    hi = float(p_hi)
    if hi - lo < 1e-8:
        hi = float(vals.max())
        if hi - lo < 1e-8:
            hi = lo + 1.0
    return apply_intensity_range(vol, fg, (lo, hi), cfg), (lo, hi)


def apply_intensity_range(vol: np.ndarray, fg: np.ndarray, lo_hi: Sequence[float], cfg: PreprocessConfig) -> np.ndarray:
    """Scale ``vol`` with a (lo, hi) that :func:`scale_intensity` chose (e.g. on another grid of
    the same image), exactly as it scales: the same volume on another grid gets the same scale."""
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if cfg.intensity == "minmax":
        return ((np.clip(vol, 0, None) - lo) / max(hi, 1e-8)).astype(np.float32)
    out = np.clip((vol - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out[~fg] = 0.0
    return out


def preprocess_case(case: Case, cfg: PreprocessConfig = PreprocessConfig()) -> PreparedCase:
    """Reorient, crop, resample and scale one loaded case (see the module docstring)."""
    images = case.images
    label = case.label
    fg = foreground_mask(images, case.mask)
    affine = case.affine.copy()
    orig_shape = list(case.shape)
    if cfg.canonical:
        ornt = nib.orientations.io_orientation(affine)
    else:
        ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    images = np.stack([nib.orientations.apply_orientation(ch, ornt) for ch in images])
    fg = nib.orientations.apply_orientation(fg, ornt)
    if label is not None:
        label = nib.orientations.apply_orientation(label, ornt)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, orig_shape)
    can_shape = list(images.shape[1:])

    box = bounding_box(fg, cfg.margin) if cfg.crop else [[0, s] for s in can_shape]
    sl = tuple(slice(lo, hi) for lo, hi in box)
    images = images[(slice(None), *sl)]
    fg = fg[sl]
    if label is not None:
        label = label[sl]
    crop_affine = can_affine.copy()
    crop_affine[:3, 3] = can_affine[:3, :3] @ np.array([lo for lo, _ in box]) + can_affine[:3, 3]
    cropped_shape = list(images.shape[1:])

    out_affine = crop_affine
    shape = cropped_shape
    ranges = None
    if cfg.intensity == "robust":
        # The scale comes from the scan's own voxels, before resampling, and the background takes
        # the brain's low percentile: resampling then mixes nothing at the brain's edge that a
        # shift or scale of the scan would change.
        ranges = [list(scale_intensity(ch, fg, cfg)[1]) for ch in images]
        images = np.stack([np.where(fg, ch, r[0]) for ch, r in zip(images, ranges)]).astype(np.float32)
    if cfg.spacing is not None:
        sp = np.sqrt((crop_affine[:3, :3] ** 2).sum(axis=0))
        shape = [max(2, int(round(n * s / t))) for n, s, t in zip(cropped_shape, sp, cfg.spacing)]
        if shape != cropped_shape:
            images = _resize(images, shape, "trilinear")
            fg = _resize(fg[None].astype(np.float32), shape, "nearest-exact")[0] > 0.5
            if label is not None:
                label = _resize(label[None].astype(np.float32), shape, "nearest-exact")[0].astype(np.int16)
            out_affine = _scaled_affine(crop_affine, cropped_shape, shape)

    if ranges is not None:
        chans = [apply_intensity_range(ch, fg, r, cfg) for ch, r in zip(images, ranges)]
    else:
        chans, ranges = [], []
        for ch in images:
            s, r = scale_intensity(ch, fg, cfg)
            chans.append(s)
            ranges.append(list(r))
    image = np.stack(chans).astype(np.float32)
    meta = CaseMeta(
        id=case.id,
        modalities=list(case.modalities),
        original_shape=orig_shape,
        original_affine=case.affine.tolist(),
        header=case.header.binaryblock if case.header is not None else b"",
        ornt=np.asarray(ornt).tolist(),
        canonical_shape=can_shape,
        canonical_affine=can_affine.tolist(),
        crop_box=box,
        cropped_shape=cropped_shape,
        shape=list(image.shape[1:]),
        affine=out_affine.tolist(),
        spacing=np.sqrt((out_affine[:3, :3] ** 2).sum(axis=0)).tolist(),
        intensity_range=ranges,
        files=dict(case.files),
        label_convention=getattr(case, "label_convention", ""),
        preprocessing=cfg.to_dict(),
    )
    return PreparedCase(case.id, image, np.ascontiguousarray(fg), None if label is None else np.ascontiguousarray(label), meta)


def restore(array: np.ndarray, meta: CaseMeta, kind: str = "label", fill: float = 0.0) -> np.ndarray:
    """Put an array from the preprocessed grid back on the case's original grid.

    Args:
        array: (X, Y, Z) or (C, X, Y, Z) on the preprocessed grid (``meta.shape``).
        kind: ``"label"`` (nearest-neighbour, integer result), ``"image"`` or ``"prob"``
            (trilinear) for the resampling step.
        fill: value outside the crop box.

    Returns the array on ``meta.original_shape``; write it with ``meta.original_affine``.
    """
    if kind not in ("label", "image", "prob"):
        raise ValueError(f"kind must be label, image or prob, got {kind!r}")
    arr = np.asarray(array)
    squeeze = arr.ndim == 3
    if squeeze:
        arr = arr[None]
    if list(arr.shape[1:]) != list(meta.shape):
        raise ValueError(f"array shape {arr.shape[1:]} does not match the preprocessed shape {meta.shape}")
    if list(meta.shape) != list(meta.cropped_shape):
        mode = "nearest-exact" if kind == "label" else "trilinear"
        dtype = arr.dtype
        arr = _resize(arr.astype(np.float32), meta.cropped_shape, mode)
        if kind == "label":
            arr = np.rint(arr).astype(dtype)
    out = np.full((arr.shape[0], *meta.canonical_shape), fill, dtype=arr.dtype)
    sl = tuple(slice(lo, hi) for lo, hi in meta.crop_box)
    out[(slice(None), *sl)] = arr
    ornt = np.asarray(meta.ornt)
    back = nib.orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]], dtype=float), ornt)
    out = np.stack([nib.orientations.apply_orientation(ch, back) for ch in out])
    if list(out.shape[1:]) != list(meta.original_shape):  # pragma: no cover - guards the algebra above
        raise RuntimeError(f"restore produced {out.shape[1:]}, expected {meta.original_shape}")
    return np.ascontiguousarray(out[0] if squeeze else out)


# ----------------------------------------------------------------------------------------- cache
def cache_key(case_files: dict[str, str], modalities: Sequence[str], cfg: PreprocessConfig, extra: str = "") -> str:
    """A key that changes when any input file, the modality list or the settings change."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{','.join(modalities)}|{json.dumps(cfg.to_dict(), sort_keys=True)}|{extra}".encode())
    for k in sorted(case_files):
        ref = case_files[k]
        path = ref.split("[channel")[0].strip()
        try:
            st = os.stat(path)
            h.update(f"{k}={ref}|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{k}={ref}|missing".encode())
    return h.hexdigest()[:24]


def save_prepared(path: Path, case: PreparedCase) -> None:
    """Write a prepared case as an ``.npz`` (no pickles), atomically."""
    from m2cofs.io import atomic_write_with

    arrays = {"image": case.image, "mask": case.mask, "meta": np.array(case.meta.to_json())}
    if case.label is not None:
        arrays["label"] = case.label

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write_with(path, write)


def load_prepared(path: Path) -> PreparedCase:
    """Read a prepared case written by :func:`save_prepared`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = CaseMeta.from_json(str(z["meta"]))
            label = z["label"] if "label" in z.files else None
            return PreparedCase(meta.id, z["image"], z["mask"], label, meta)
    except (OSError, ValueError, KeyError) as exc:
        raise M2CofsError(f"unreadable cache entry ({exc})", path) from None
