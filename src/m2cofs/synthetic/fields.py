"""Small building blocks: partial-volume ramp, ellipsoid distance, smooth random fields, rotations."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def _pv(d: np.ndarray, vox: float) -> np.ndarray:
    """Fraction inside for a signed distance ``d`` (mm, negative inside): 1-voxel linear ramp."""
    out = np.multiply(d, np.float32(-1.0 / vox), dtype=np.float32)
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _ellipsoid_sdf(x, y, z, a: float, b: float, c: float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid (first-order, good near it)."""
    xn, yn, zn = x / a, y / b, z / c
    rho = np.sqrt(xn * xn + yn * yn + zn * zn)
    grad = np.sqrt((xn / a) ** 2 + (yn / b) ** 2 + (zn / c) ** 2)
    return ((rho - 1.0) * rho / np.maximum(grad, 1e-6)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean, unit standard deviation (float32)."""
    n = rng.standard_normal(shape).astype(np.float32)
    n = ndi.gaussian_filter(n, sigma, mode="wrap")
    n -= n.mean()
    n /= max(float(n.std()), 1e-6)
    return n


def _lowres_noise(rng: np.random.Generator, shape, sigma_vox: float) -> np.ndarray:
    """Smooth noise on ``shape`` with correlation ``sigma_vox`` voxels, made on a coarse grid and
    zoomed (fast for large sigmas). Unit standard deviation."""
    f = max(1, int(sigma_vox // 2))
    small = tuple(max(4, int(math.ceil(s / f)) + 2) for s in shape)
    n = _smooth_noise(rng, small, sigma_vox / f)
    if f == 1:
        out = n[1:shape[0] + 1, 1:shape[1] + 1, 1:shape[2] + 1].copy()
    else:  # sample the coarse field at the fine-grid positions (linear)
        coords = np.meshgrid(*[np.arange(s, dtype=np.float32) / f + 1.0 for s in shape], indexing="ij", sparse=True)
        out = ndi.map_coordinates(n, np.broadcast_arrays(*coords), order=1, mode="nearest").astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


def _harmonics(rng: np.random.Generator, k: int, fmin: float, fmax: float, amp: float):
    """Random smooth function on the unit sphere: sum of k plane waves cos(w.u + phi)."""
    dirs = rng.standard_normal((k, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.uniform(fmin, fmax, size=(k, 1))
    w = (dirs * freqs).astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi, size=k).astype(np.float32)
    a = (rng.standard_normal(k) * amp / math.sqrt(k / 2)).astype(np.float32)

    def f(ux, uy, uz):
        out = np.zeros(np.broadcast_shapes(np.shape(ux), np.shape(uy), np.shape(uz)), np.float32)
        for i in range(k):
            out += a[i] * np.cos(w[i, 0] * ux + w[i, 1] * uy + w[i, 2] * uz + phi[i])
        return out

    return f


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ang = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx
