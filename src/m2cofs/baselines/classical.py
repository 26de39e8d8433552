"""Fusion without learning: the classic pixel-level rules, in 3-D.

Every rule takes N ≥ 2 co-registered volumes scaled to [0, 1] (a list of (X, Y, Z) arrays or
one (N, X, Y, Z) array) and an optional brain mask, and returns one float32 (X, Y, Z) volume in
[0, 1], zero outside the mask when a mask is given:

* :func:`fuse_mean` — voxel-wise mean;
* :func:`fuse_max` — voxel-wise maximum;
* :func:`fuse_pca` — weighted mean with weights from the first principal component of the
  sources' (in-mask) intensities, normalised to sum 1 (the classic PCA fusion rule, e.g.
  Naidu & Raol, "Pixel-level image fusion using wavelets and principal component analysis",
  Defence Science Journal 2008);
* :func:`fuse_laplacian` — 3-D Laplacian pyramid (Burt & Adelson, IEEE Trans. Commun. 1983;
  the fusion rule of Burt & Kolczynski, ICCV 1993): detail bands fused by max-absolute
  selection, the coarsest (base) band averaged.

:data:`CLASSICAL_FUSION` maps the names ``mean``, ``max``, ``pca``, ``laplacian`` to them.
:data:`COPY_SOURCE` holds the reference that is no fusion at all: ``copy1``, ``copy2`` return
source 1 or 2 unchanged (masked). The paper's fusion metrics measure how much of each source
the fused volume keeps, and a copied source keeps all of itself, so it scores high on them; a
fusion method should be read beside it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

Sources = Sequence[np.ndarray] | np.ndarray


def _stack(sources: Sources, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, X, Y, Z) float64 stack and a boolean mask (or None), after checking the shapes."""
    arrs = [np.asarray(s) for s in sources]
    if len(arrs) < 2:
        raise ValueError(f"fusion needs two or more source volumes, got {len(arrs)}")
    shape = arrs[0].shape
    if len(shape) != 3:
        raise ValueError(f"expected 3-D source volumes (X, Y, Z), got shape {shape}")
    for i, a in enumerate(arrs):
        if a.shape != shape:
            raise ValueError(f"source {i} has shape {a.shape}, source 0 has {shape}")
    stack = np.stack(arrs).astype(np.float64)
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != shape:
            raise ValueError(f"mask has shape {mask.shape}, the sources {shape}")
    return stack, mask


def _finish(fused: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    out = np.clip(fused, 0.0, 1.0)
    if mask is not None:
        out = np.where(mask, out, 0.0)
    return out.astype(np.float32)


def fuse_mean(sources: Sources, mask: np.ndarray | None = None) -> np.ndarray:
    """Voxel-wise mean of the sources."""
    stack, mask = _stack(sources, mask)
    return _finish(stack.mean(0), mask)


def fuse_max(sources: Sources, mask: np.ndarray | None = None) -> np.ndarray:
    """Voxel-wise maximum of the sources."""
    stack, mask = _stack(sources, mask)
    return _finish(stack.max(0), mask)


def pca_weights(sources: Sources, mask: np.ndarray | None = None) -> np.ndarray:
    """The PCA fusion weights (N,): the leading eigenvector of the sources' covariance matrix
    (over the in-mask voxels, or all voxels), divided by its sum.

    The eigenvector's sign is chosen so that its sum is positive; negative components (sources
    anti-correlated with the rest, where the classic ``v / Σv`` would give a negative weight)
    are set to 0 before normalising. Equal weights when the sources have no variance.
    """
    stack, mask = _stack(sources, mask)
    n = stack.shape[0]
    data = stack.reshape(n, -1) if mask is None else stack[:, mask]
    if data.shape[1] < 2:
        return np.full(n, 1.0 / n)
    cov = np.cov(data)
    vals, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    if vals[-1] <= 1e-12:
        return np.full(n, 1.0 / n)
    v = vecs[:, -1]
    if v.sum() < 0:
        v = -v
    v = np.clip(v, 0.0, None)
    return v / v.sum()


def fuse_pca(sources: Sources, mask: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean Σ w_i X_i with the weights of :func:`pca_weights`."""
    stack, mask = _stack(sources, mask)
    w = pca_weights(stack, mask)
    return _finish(np.tensordot(w, stack, axes=1), mask)


# ---------------------------------------------------------------------------- Laplacian pyramid
def _reduce(g: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, then keep every second voxel along each axis (size ⌈n/2⌉)."""
    return ndimage.gaussian_filter(g, sigma, mode="nearest")[::2, ::2, ::2]


def _expand(g: np.ndarray, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Upsample ``g`` by 2 to ``shape``: zero insertion, then a normalised Gaussian blur
    (Gaussian-weighted interpolation of the inserted samples, exact at the borders)."""
    up_shape = tuple(2 * s for s in g.shape)
    up = np.zeros(up_shape)
    up[::2, ::2, ::2] = g
    w = np.zeros(up_shape)
    w[::2, ::2, ::2] = 1.0
    num = ndimage.gaussian_filter(up, sigma, mode="constant")
    den = ndimage.gaussian_filter(w, sigma, mode="constant")
    out = num / np.maximum(den, 1e-12)
    return out[tuple(slice(0, s) for s in shape)]


def laplacian_pyramid(volume: np.ndarray, levels: int = 4, sigma: float = 1.0) -> list[np.ndarray]:
    """``[L_0, …, L_{levels−1}, G_levels]``: detail bands L_k = G_k − expand(G_{k+1}) from fine
    to coarse, then the base G_levels (G_0 = the volume, G_{k+1} = reduce(G_k))."""
    if levels < 0:
        raise ValueError(f"levels must be ≥ 0, got {levels}")
    g = np.asarray(volume, dtype=np.float64)
    bands = []
    for _ in range(levels):
        smaller = _reduce(g, sigma)
        bands.append(g - _expand(smaller, g.shape, sigma))
        g = smaller
    bands.append(g)
    return bands


def reconstruct_laplacian(bands: Sequence[np.ndarray], sigma: float = 1.0) -> np.ndarray:
    """Invert :func:`laplacian_pyramid` (exactly: G_k = L_k + expand(G_{k+1}))."""
    g = np.asarray(bands[-1], dtype=np.float64)
    for detail in reversed(bands[:-1]):
        g = detail + _expand(g, detail.shape, sigma)
    return g


def fuse_laplacian(sources: Sources, mask: np.ndarray | None = None, levels: int = 4,
                   sigma: float = 1.0) -> np.ndarray:
    """3-D Laplacian-pyramid fusion: per voxel of each detail band, the coefficient with the
    largest magnitude (the first source on ties); the base bands averaged; reconstructed and
    clipped to [0, 1]."""
    stack, mask = _stack(sources, mask)
    pyramids = [laplacian_pyramid(s, levels, sigma) for s in stack]
    fused = []
    for k in range(levels):
        bands = np.stack([p[k] for p in pyramids])
        pick = np.abs(bands).argmax(0)
        fused.append(np.take_along_axis(bands, pick[None], 0)[0])
    fused.append(np.mean([p[-1] for p in pyramids], axis=0))
    return _finish(reconstruct_laplacian(fused, sigma), mask)


CLASSICAL_FUSION: dict[str, Callable[..., np.ndarray]] = {
    "mean": fuse_mean,
    "max": fuse_max,
    "pca": fuse_pca,
    "laplacian": fuse_laplacian,
}


def copy_source(index: int) -> Callable[..., np.ndarray]:
    """The rule "fused = source ``index``" (0-based), masked and clipped like every rule."""

    def copy(sources: Sources, mask: np.ndarray | None = None) -> np.ndarray:
        stack, mask = _stack(sources, mask)
        return _finish(stack[index], mask)

    copy.__name__ = f"copy_source_{index + 1}"
    return copy


COPY_SOURCE: dict[str, Callable[..., np.ndarray]] = {"copy1": copy_source(0), "copy2": copy_source(1)}
