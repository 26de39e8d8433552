"""Cortical folding: sulci (and cerebellar folia) cut into the brain's signed distance.

Sulci are CSF sheets where a smooth band-pass random field crosses zero, sampled at the nearest
pial-surface point (so the sheets are roughly perpendicular to the surface, tilted by
``KAPPA``), down to a random depth; the cerebellum gets radial folia instead.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from m2cofs.synthetic.anatomy import _Anatomy

KAPPA = 0.3


def _fold_volumes(frng: np.random.Generator, nshape, sig: float):
    """The band-pass fold field and the smooth depth field on the coarse grid (unit std)."""
    w = frng.standard_normal(nshape).astype(np.float32)
    fold_vol = ndi.gaussian_filter(w, sig, mode="wrap") - ndi.gaussian_filter(w, 2.0 * sig, mode="wrap")
    fold_vol /= max(float(fold_vol.std()), 1e-6)
    depth_vol = ndi.gaussian_filter(frng.standard_normal(nshape).astype(np.float32), 2.0 * sig, mode="wrap")
    depth_vol /= max(float(depth_vol.std()), 1e-6)
    return fold_vol, depth_vol


def _surface_coords(d_brain: np.ndarray, shape, spacing, f: float) -> list[np.ndarray]:
    """Coarse-grid coordinates of the nearest pial-surface point of every voxel."""
    d_s = ndi.gaussian_filter(d_brain, 1.5)
    g = np.gradient(d_s, *spacing)
    del d_s
    gn = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2) + np.float32(1e-6)
    step = -(1.0 - KAPPA) * np.minimum(d_brain, 0.0) / gn  # move outwards by |d| (mm)
    del gn
    coords = []
    for ax in range(3):
        idx = np.arange(shape[ax], dtype=np.float32).reshape([-1 if i == ax else 1 for i in range(3)])
        coords.append((idx + step * g[ax] / np.float32(spacing[ax])) / np.float32(f) + 1.0)
    return np.broadcast_arrays(*coords)


def _folia_distance(an: _Anatomy, x, y, z) -> np.ndarray:
    """Distance (mm) to the nearest cerebellar folium: radial sheets in the sagittal plane around
    a focus in front of the cerebellum."""
    fy = an.cbl_c[1] + 0.6 * an.cbl_r[1]
    fz = an.cbl_c[2] + 0.1 * an.cbl_r[2]
    ry, rz = y - np.float32(fy), z - np.float32(fz)
    rr = np.sqrt(ry * ry + rz * rz) + np.float32(1e-3)
    theta = np.arctan2(rz, -ry) + np.float32(0.08) * np.sin(x * np.float32(2 * np.pi / (0.5 * an.cbl_r[0])))
    r_typ = 1.3 * an.cbl_r[1]
    dtheta = (3.2 * an.T_cb) / r_typ
    ph = (theta - an.folia_phase) / dtheta
    return (np.abs(ph - np.round(ph)) * dtheta * rr).astype(np.float32)


def _parenchyma(frng: np.random.Generator, an: _Anatomy, x, y, z, reg: dict, shape, spacing) -> np.ndarray:
    """Signed distance of the brain parenchyma: the brain ``reg["d_brain"]`` less its sulci."""
    d_brain, d_bs, in_cbl = reg["d_brain"], reg["d_bs"], reg["in_cbl"]
    L, vox, T = an.L, an.vox, an.T
    # On coarse grids the ribbon is relatively thick (T is at least 2 voxels): there, fold less
    # (sparser, shallower sulci) so that white matter keeps a plausible share.
    fine = float(np.clip(0.05 * L / T, 0.0, 1.0))  # 1 when T is not clipped (size >= ~90)
    period = (5.0 + 1.5 * (1.0 - fine) / 0.35) * T  # sulcus-to-sulcus distance on the surface, mm
    depth_f = 1.8 - 0.4 * (1.0 - fine) / 0.35
    # noise volume on a coarser grid (2 mm-ish cells) covering the image grid
    f = max(1.0, period / 8.0 / vox)
    nshape = tuple(int(math.ceil(n / f)) + 3 for n in shape)
    sig = (period / 4.0) / (f * vox)
    fold_vol, depth_vol = _fold_volumes(frng, nshape, sig)
    coords = _surface_coords(d_brain, shape, spacing, f)
    fold = ndi.map_coordinates(fold_vol, coords, order=1, mode="nearest").astype(np.float32)
    depthn = ndi.map_coordinates(depth_vol, coords, order=1, mode="nearest").astype(np.float32)
    del coords, fold_vol, depth_vol
    g = np.gradient(fold, *spacing)
    gmag = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    del g
    dist0 = np.abs(fold) / np.maximum(gmag, np.float32(1e-3 / vox))
    del fold, gmag
    dist0 = np.where(in_cbl, _folia_distance(an, x, y, z), dist0)
    # depth 1.6..2.8 T (cerebellum 2.2 T); half width larger at the surface
    depth = np.float32(T) * (depth_f + 0.5 * np.clip(depthn, -1, 1))
    depth = np.where(in_cbl, np.float32(2.2 * an.T_cb), depth)
    del depthn
    rel = np.clip(1.0 + d_brain / depth, 0.0, 1.0)  # 1 at the surface, 0 at the sulcal fundus
    half_w = np.float32(0.18 * vox * an.atrophy) * (1.0 + 1.5 * rel * rel)
    sdf_sulc = np.maximum(dist0 - half_w, -d_brain - depth)
    sdf_sulc = np.maximum(sdf_sulc, -d_bs)  # no sulci in the brainstem
    del dist0, rel, half_w
    return np.maximum(d_brain, -sdf_sulc)
