"""Shared machinery of the spatial fusion metrics: geometry, threads and chunks, filters.

Internal helper of :mod:`m2cofs.metrics.fusion` (through :mod:`._fusion_spatial`). All functions
take float arrays laid out either as a stack of axial slices ``(X, Y, G)`` processed as G
independent 2-D images (``Geometry.slice()``: filters run along axes 0 and 1 only) or as one
volume ``(X, Y, Z)`` (``Geometry.volume()``: filters run along all three axes).

Speed: each metric is written as a *kernel* that returns per-group sums over the mask voxels it
is given. :func:`_chunked` processes slice stacks a few slices at a time, and the local volume
metrics in slabs of slices with a halo as wide as their filters, so every map value is exactly
the one a whole-volume computation gives while the working arrays stay small; chunks run in a
small thread pool (numpy / scipy release the GIL).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import correlate1d

SLAB = 16                    # core slices per volume slab
CHUNK = 8                    # slices per chunk in slice mode


@dataclass(frozen=True)
class Geometry:
    """Which axes are spatial (filtered) and how values are grouped."""

    axes: tuple[int, ...]
    per_slice: bool

    @staticmethod
    def slice() -> "Geometry":
        return Geometry(axes=(0, 1), per_slice=True)

    @staticmethod
    def volume() -> "Geometry":
        return Geometry(axes=(0, 1, 2), per_slice=False)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    def gsum(self, a: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Sum over the spatial axes (only where ``where`` is True): one value per group."""
        kw = {} if where is None else {"where": where}
        if self.per_slice:
            return np.sum(a, axis=(0, 1), dtype=np.float64, **kw)
        return np.array([np.sum(a, dtype=np.float64, **kw)])

    def n_groups(self, a: np.ndarray) -> int:
        return a.shape[2] if self.per_slice else 1


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (metric undefined for that group)."""
    num = np.asarray(num, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=np.asarray(den) > 0)
    return out


def _strength_ratio(gs: np.ndarray, gf: np.ndarray) -> np.ndarray:
    """min(gs, gf) / max(gs, gf); 1 where both are equal (including both zero)."""
    hi = np.maximum(gs, gf)
    lo = np.minimum(gs, gf)
    np.divide(lo, hi, out=lo, where=hi > 0)
    lo[hi == 0] = 1.0
    return lo


# ---------------------------------------------------------------------------------------------
# threads and chunks
# ---------------------------------------------------------------------------------------------
def _n_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_POOL_PREFIX = "m2cofs-fusion-metrics"
_MIN_PARALLEL = 1 << 18     # voxels; smaller arrays are filtered in one call


def _reset_pool_after_fork() -> None:
    # worker threads do not survive fork(): a child process must build its own pool
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool_after_fork)


def _in_pool() -> bool:
    return threading.current_thread().name.startswith(_POOL_PREFIX)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_n_threads(), thread_name_prefix=_POOL_PREFIX)
        return _POOL


def _parallel_map(fn: Callable, items: list) -> list:
    """``[fn(x) for x in items]``, in the module's thread pool when that can help."""
    if len(items) <= 1 or _n_threads() == 1 or _in_pool():
        return [fn(it) for it in items]
    return list(_pool().map(fn, items))


def _fft_workers() -> int:
    return 1 if _in_pool() else _n_threads()


def _chunked(kernel: Callable, srcs: Sequence[np.ndarray], f: np.ndarray, mask: np.ndarray,
             geom: Geometry, halo: int | None, slab: int = SLAB) -> tuple[np.ndarray, ...]:
    """Run ``kernel(srcs, f, mask, geom) -> tuple of per-group sums`` chunk-wise along axis 2.

    Slice mode: chunks of :data:`CHUNK` independent slices; results are concatenated.
    Volume mode with ``halo`` not None: slabs of ``slab`` slices extended by ``halo`` slices
    on each side, the mask restricted to the slab's own slices; results are summed. This equals
    the whole-volume computation for kernels whose maps only look ``halo`` slices away.
    Volume mode with ``halo=None``: one call on the whole volume.
    """
    nz = f.shape[2]
    if not geom.per_slice and halo is None:
        return kernel(srcs, f, mask, geom)
    size = CHUNK if geom.per_slice else slab
    halo = 0 if geom.per_slice else halo
    n_chunks = max(1, math.ceil(nz / size))
    bounds = np.linspace(0, nz, n_chunks + 1).round().astype(int)

    def run(i):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        elo, ehi = max(0, lo - halo), min(nz, hi + halo)
        m = mask[:, :, elo:ehi]
        if not geom.per_slice:
            if elo < lo or ehi > hi:
                m = m.copy()
                m[:, :, : lo - elo] = False
                m[:, :, hi - elo:] = False
            if not m.any():
                return None
        return kernel([s[:, :, elo:ehi] for s in srcs], f[:, :, elo:ehi], m, geom)

    parts = [p for p in _parallel_map(run, list(range(n_chunks))) if p is not None]
    if geom.per_slice:
        return tuple(np.concatenate(c) for c in zip(*parts))
    return tuple(np.sum(c, axis=0) for c in zip(*parts))


# ---------------------------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------------------------
def _corr1d(x: np.ndarray, w, axis: int) -> np.ndarray:
    """``scipy.ndimage.correlate1d`` with zero padding; large arrays are split into chunks along
    another axis and filtered in threads (bit-identical to one call)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    nt = _n_threads()
    if nt == 1 or x.size < _MIN_PARALLEL or _in_pool():
        return correlate1d(x, w, axis=axis, mode="constant", cval=0.0)
    other = max((d for d in range(x.ndim) if d != axis), key=lambda d: x.shape[d])
    out = np.empty_like(x)
    cuts = np.linspace(0, x.shape[other], min(nt, x.shape[other]) + 1).astype(int)
    sls = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        sl = [slice(None)] * x.ndim
        sl[other] = slice(lo, hi)
        sls.append(tuple(sl))

    def run(sl):
        correlate1d(x[sl], w, axis=axis, output=out[sl], mode="constant", cval=0.0)

    list(_pool().map(run, sls))
    return out


def sobel(x: np.ndarray, axes: Sequence[int]) -> list[np.ndarray]:
    """Sobel derivatives along each axis in ``axes`` (zero padding, 'same' size).

    Derivative kernel [-1, 0, 1] (correlation, i.e. x[i+1] - x[i-1]) along the axis, smoothing
    [1, 2, 1] along every other axis in ``axes``. In 2-D this is MATLAB's
    ``filter2([-1 0 1; -2 0 2; -1 0 1], x, 'same')`` for the derivative along axis 1 and its
    transpose for axis 0; in 3-D it is the 3x3x3 Sobel-Feldman operator.
    """
    out = []
    for d in axes:
        g = _corr1d(x, [-1.0, 0.0, 1.0], axis=d)
        for e in axes:
            if e != d:
                g = _corr1d(g, [1.0, 2.0, 1.0], axis=e)
        out.append(g)
    return out


def _magnitude(grads: Sequence[np.ndarray]) -> np.ndarray:
    out = grads[0] * grads[0]
    for g in grads[1:]:
        out += g * g
    return np.sqrt(out, out=out)


def _gauss1d(radius: int, sigma: float, normalise: bool) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return w / w.sum() if normalise else w / (math.sqrt(2.0 * math.pi) * sigma)


def _filter_same(x: np.ndarray, w: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    for d in axes:
        x = _corr1d(x, w, axis=d)
    return x


def _crop(x: np.ndarray, off: int, axes: Sequence[int]) -> np.ndarray:
    sl = [slice(None)] * x.ndim
    for d in axes:
        sl[d] = slice(off, x.shape[d] - off)
    return x[tuple(sl)]


def _filter_valid(x: np.ndarray, w: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Separable correlation keeping only fully-overlapping positions (MATLAB 'valid')."""
    off = (len(w) - 1) // 2
    for d in axes:
        x = _crop(_corr1d(x, w, axis=d), off, (d,))
    return x


def _decimate(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    sl = [slice(None)] * x.ndim
    for d in axes:
        sl[d] = slice(None, None, 2)
    return x[tuple(sl)]


def _radius_grid(shape: Sequence[int], axes: Sequence[int], div: float) -> np.ndarray:
    """|k| / div on the (real-FFT) frequency grid of ``axes``; k = centred integer DFT index.

    MATLAB's ``freqspace(n)`` gives (k - floor(n/2)) * 2/n; the toolboxes multiply by n/(2 div),
    so the radius is |k| / div whatever the image size. The last transformed axis uses the half
    spectrum of ``rfftn``.
    """
    r2 = 0.0
    last = axes[-1]
    for d in axes:
        n = shape[d]
        k = sfft.rfftfreq(n) * n if d == last else sfft.fftfreq(n) * n
        bs = [1] * len(shape)
        bs[d] = k.size
        r2 = r2 + (k.reshape(bs) / div) ** 2
    return np.sqrt(r2)


def _freq_filter(x: np.ndarray, h: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Real part of ifft(fft(x) * H) over ``axes`` (H real and symmetric, given on the rfft grid)."""
    w = _fft_workers()
    spec = sfft.rfftn(x, axes=axes, workers=w)
    spec *= h
    return sfft.irfftn(spec, s=[x.shape[d] for d in axes], axes=axes, workers=w)


def _interior(shape: Sequence[int], pad: int, axes: Sequence[int]) -> np.ndarray:
    """Boolean array: True at least ``pad`` voxels from the border along ``axes``."""
    m = np.zeros(shape, dtype=bool)
    sl = [slice(None)] * len(shape)
    for d in axes:
        sl[d] = slice(pad, shape[d] - pad)
    m[tuple(sl)] = True
    return m
