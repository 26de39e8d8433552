"""Gradient-, window- and frequency-based fusion metrics (Q_G, VIF, SSIM, PSNR, Q_CB, Q_CV, SD, SF, AG).

Internal helper of :mod:`m2cofs.metrics.fusion`; see ``docs/fusion_metrics.md`` for the
definitions. All functions take float arrays on the 0-255 grey-level scale, laid out either as a
stack of axial slices ``(X, Y, G)`` processed as G independent 2-D images (``Geometry.slice()``:
filters run along axes 0 and 1 only) or as one volume ``(X, Y, Z)`` (``Geometry.volume()``:
filters run along all three axes). A boolean mask of the same shape selects the voxels that are
averaged; maps are always computed on the whole image. Every metric returns one value per group
(per slice, or a length-1 array for the volume).

Speed: each metric is written as a *kernel* that returns per-group sums over the mask voxels it
is given. Slice stacks are processed a few slices at a time, and the local volume metrics (Q_G,
SSIM, SF, AG) in slabs of slices with a halo as wide as their filters, so every map value is
exactly the one a whole-volume computation gives while the working arrays stay small; chunks run
in a small thread pool (numpy / scipy release the GIL).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import correlate1d

# ---------------------------------------------------------------------------------------------
# constants
# ---------------------------------------------------------------------------------------------
# Xydeas & Petrovic (2000) standard constants for Q^AB/F
QG_GAMMA_G, QG_KAPPA_G, QG_SIGMA_G = 0.9994, -15.0, 0.5
QG_GAMMA_A, QG_KAPPA_A, QG_SIGMA_A = 0.9879, -22.0, 0.8
QG_L = 1.0
QG_ZERO_GX = 1e-5          # replaces a zero horizontal derivative (MATR / Liu convention)
# VIF (Sheikh & Bovik 2006, pixel domain "vifp"), on the 0-255 scale
VIF_SIGMA_NSQ = 2.0
VIF_EPS = 1e-10
VIF_SCALES = 4
# SSIM (Wang et al. 2004)
SSIM_SIGMA = 1.5
SSIM_WIN = 11
# Chen-Blum (2009) constants as in Liu's metricChenBlum.m
QCB_F0, QCB_F1, QCB_A = 15.3870, 1.3456, 0.7622
QCB_FREQ_DIV = 30.0          # u = (N/30) * freqspace -> |k| / 15 in centred DFT indices
QCB_P, QCB_Q, QCB_Z, QCB_K, QCB_H = 3.0, 2.0, 1e-4, 1.0, 1.0
QCB_SIGMAS = (2.0, 4.0)
QCB_RADIUS = 15              # Gaussian kernels are (31 x 31), as in the toolbox
# Chen-Varshney (2007) constants as in Liu's metricChen.m / MATR's Q_CV.m
QCV_WINDOW = 16
QCV_ALPHA = 5.0
QCV_FREQ_DIV = 8.0           # u = (N/8) * freqspace -> |k| / 4 in centred DFT indices

SLAB = 16                    # core slices per volume slab
CHUNK = 8                    # slices per chunk in slice mode
VIF_SLAB = 80                # core slices per slab for VIF's first scale (halo 8)


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


# ---------------------------------------------------------------------------------------------
# reference-free metrics of the fused image: SD, SF, AG
# ---------------------------------------------------------------------------------------------
def metric_sd(f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Standard deviation (population, ddof = 0) of the fused image inside the mask."""
    cnt = geom.gsum(mask)
    mu = _ratio(geom.gsum(f, where=mask), cnt)
    mu_b = mu[None, None, :] if geom.per_slice else mu[0]
    d = f - mu_b
    d *= d
    return np.sqrt(_ratio(geom.gsum(d, where=mask), cnt))


def _k_sf(srcs, f, mask, geom):
    out = []
    for d in geom.axes:
        n = f.shape[d]
        a = np.diff(f, axis=d)
        a *= a
        m = np.take(mask, np.arange(0, n - 1), axis=d)
        out += [geom.gsum(a, where=m), geom.gsum(m)]
    return tuple(out)


def metric_sf(f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Spatial frequency: sqrt(sum over spatial axes of mean squared forward difference)."""
    parts = _chunked(_k_sf, [], f, mask, geom, halo=1)
    return np.sqrt(sum(_ratio(parts[2 * i], parts[2 * i + 1]) for i in range(geom.ndim)))


def _k_ag(srcs, f, mask, geom):
    if min(f.shape[d] for d in geom.axes) < 2:
        return np.zeros(geom.n_groups(f)), np.zeros(geom.n_groups(f))
    grads = np.gradient(f, axis=geom.axes)
    s = _magnitude(grads)
    s /= math.sqrt(geom.ndim)
    return geom.gsum(s, where=mask), geom.gsum(mask)


def metric_ag(f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Average gradient: mean of sqrt(mean_d (df/dx_d)^2), central differences (np.gradient)."""
    if min(f.shape[d] for d in geom.axes) < 2:
        return np.full(geom.n_groups(f), np.nan)
    return _ratio(*_chunked(_k_ag, [], f, mask, geom, halo=1))


# ---------------------------------------------------------------------------------------------
# Q_G (Xydeas-Petrovic Q^AB/F)
# ---------------------------------------------------------------------------------------------
def _orientation_2d(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
    """alpha = arctan(g_y / g_x), g_x the derivative along axis 1, g_y along axis 0.

    A zero g_x is replaced by +1e-5 (0-255 scale) before the division, as MATR's ``Q_G.m`` and
    Liu's ``metricXydeas.m`` do: alpha = +-pi/2 (sign of g_y) there, 0 where both are zero.
    (CDDFuse's and VIFB's ``Qabf`` set alpha = pi/2 wherever g_x == 0.)
    """
    gx = np.where(g1 == 0, QG_ZERO_GX, g1)
    return np.arctan(g0 / gx)


def _qg_sigmoids(gr: np.ndarray, ar: np.ndarray) -> np.ndarray:
    """Q = Gamma_g / (1 + exp(kappa_g (G - sigma_g))) * Gamma_a / (1 + exp(kappa_a (A - sigma_a))).

    Overwrites ``gr`` and ``ar`` (used on temporaries) and returns the product in ``gr``.
    """
    gr -= QG_SIGMA_G
    gr *= QG_KAPPA_G
    np.exp(gr, out=gr)
    gr += 1.0
    ar -= QG_SIGMA_A
    ar *= QG_KAPPA_A
    np.exp(ar, out=ar)
    ar += 1.0
    gr *= ar
    np.divide(QG_GAMMA_G * QG_GAMMA_A, gr, out=gr)
    return gr


def _strength_ratio(gs: np.ndarray, gf: np.ndarray) -> np.ndarray:
    """min(gs, gf) / max(gs, gf); 1 where both are equal (including both zero)."""
    hi = np.maximum(gs, gf)
    lo = np.minimum(gs, gf)
    np.divide(lo, hi, out=lo, where=hi > 0)
    lo[hi == 0] = 1.0
    return lo


def _k_q_g(srcs, f, mask, geom):
    gf = sobel(f, geom.axes)
    magf = _magnitude(gf)
    two_d = geom.ndim == 2
    if two_d:
        af = _orientation_2d(gf[0], gf[1])
    maskf = mask.astype(np.float64)
    num = 0.0
    den = 0.0
    for s in srcs:
        gs = sobel(s, geom.axes)
        mags = _magnitude(gs)
        gr = _strength_ratio(mags, magf)
        if two_d:
            ar = _orientation_2d(gs[0], gs[1])
            ar -= af
            np.abs(ar, out=ar)
        else:
            dot = gs[0] * gf[0]
            for a, b in zip(gs[1:], gf[1:]):
                dot += a * b
            np.abs(dot, out=dot)
            prod = mags * magf
            ar = np.zeros_like(prod)
            np.divide(dot, prod, out=ar, where=prod > 0)
            np.clip(ar, 0.0, 1.0, out=ar)
            np.arccos(ar, out=ar)
        ar *= -2.0 / np.pi
        ar += 1.0
        w = mags if QG_L == 1.0 else mags ** QG_L
        w *= maskf
        q = _qg_sigmoids(gr, ar)
        q *= w
        num = num + geom.gsum(q)
        den = den + geom.gsum(w)
    return num, den


def metric_q_g(srcs: Sequence[np.ndarray], f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Q^{S1..SN/F}: sum_i sum_v Q^{S_i F}(v) w_i(v) / sum_i sum_v w_i(v), w_i = |grad S_i|^L.

    2-D: standard orientation term A = 1 - |alpha_S - alpha_F| / (pi/2), alpha = arctan(gy/gx).
    3-D: A = 1 - theta / (pi/2), theta = angle between the gradient lines (arccos |cos|).
    """
    return _ratio(*_chunked(_k_q_g, srcs, f, mask, geom, halo=1))


def q_g_identity_value() -> float:
    """Q_G when fused == source: both sigmoids evaluated at G = A = 1 (about 0.9748)."""
    return float(_qg_sigmoids(np.array([1.0]), np.array([1.0]))[0])


# ---------------------------------------------------------------------------------------------
# VIF (pixel domain, multi-scale)
# ---------------------------------------------------------------------------------------------
def _vif_window(n: int) -> np.ndarray:
    """1-D factor of the normalised N x N Gaussian (sd = N/5) of vifp_mscale."""
    return _gauss1d((n - 1) // 2, n / 5.0, normalise=True)


def _k_vif(srcs, f, mask, geom, scales: Sequence[int] = tuple(range(1, VIF_SCALES + 1))):
    """Per-source VIF numerator / denominator sums over ``scales`` (consecutive, ascending)."""
    axes = geom.axes
    refs = list(srcs)
    dist = f
    m = mask
    ng = geom.n_groups(f)
    num = [np.zeros(ng) for _ in refs]
    den = [np.zeros(ng) for _ in refs]
    for scale in scales:
        n = 2 ** (VIF_SCALES - scale + 1) + 1
        w = _vif_window(n)
        off = (n - 1) // 2
        if scale > 1:
            if min(dist.shape[d] for d in axes) < n:
                break
            refs = [_decimate(_filter_valid(r, w, axes), axes) for r in refs]
            dist = _decimate(_filter_valid(dist, w, axes), axes)
            m = _decimate(_crop(m, off, axes), axes)
        if min(dist.shape[d] for d in axes) < n:
            break
        mu2 = _filter_valid(dist, w, axes)
        s22 = _filter_valid(dist * dist, w, axes)
        s22 -= mu2 * mu2
        s22[s22 < 0] = 0
        mc = _crop(m, off, axes)
        low2 = s22 < VIF_EPS
        for i, r in enumerate(refs):
            mu1 = _filter_valid(r, w, axes)
            s11 = _filter_valid(r * r, w, axes)
            s11 -= mu1 * mu1
            s12 = _filter_valid(r * dist, w, axes)
            s12 -= mu1 * mu2
            del mu1
            s11[s11 < 0] = 0
            g = s12 / (s11 + VIF_EPS)
            sv = s22 - g * s12
            del s12
            low1 = s11 < VIF_EPS
            g[low1] = 0
            sv[low1] = s22[low1]
            s11[low1] = 0
            g[low2] = 0
            sv[low2] = 0
            neg = g < 0
            sv[neg] = s22[neg]
            g[neg] = 0
            sv[sv <= VIF_EPS] = VIF_EPS
            # num: log10(1 + g^2 s11 / (sv + sigma_n^2)); den: log10(1 + s11 / sigma_n^2)
            g *= g
            g *= s11
            sv += VIF_SIGMA_NSQ
            g /= sv
            num[i] += geom.gsum(np.log1p(g, out=g), where=mc)
            s11 /= VIF_SIGMA_NSQ
            den[i] += geom.gsum(np.log1p(s11, out=s11), where=mc)
    return tuple(x for pair in zip(num, den) for x in pair)


def metric_vif(srcs: Sequence[np.ndarray], f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Mean over sources of the pixel-domain multi-scale VIF(S_i -> F), masked sums.

    NaN where not even the first scale's window (17 voxels) fits."""
    if min(f.shape[d] for d in geom.axes) < 2 ** VIF_SCALES + 1:
        return np.full(geom.n_groups(f), np.nan)
    if geom.per_slice:
        parts = _chunked(_k_vif, srcs, f, mask, geom, halo=None)
    else:
        # scale 1 (full resolution, 17-voxel window) in slabs with an 8-slice halo, the coarser
        # scales on the whole volume: same sums as one whole-volume pass
        p1 = _chunked(functools.partial(_k_vif, scales=(1,)), srcs, f, mask, geom,
                      halo=2 ** (VIF_SCALES - 1), slab=VIF_SLAB)
        p2 = _k_vif(srcs, f, mask, geom, scales=tuple(range(2, VIF_SCALES + 1)))
        parts = tuple(a + b for a, b in zip(p1, p2))
    vals = []
    for nu, de in zip(parts[0::2], parts[1::2]):
        v = _ratio(nu, de)
        v[(de == 0) & (nu == 0)] = 1.0      # 0/0 (flat source): 1, as vifp_mscale / CDDFuse
        vals.append(v)
    return np.mean(vals, axis=0)


# ---------------------------------------------------------------------------------------------
# SSIM and PSNR (scikit-image)
# ---------------------------------------------------------------------------------------------
def _k_ssim(srcs, f, mask, geom):
    from skimage.metrics import structural_similarity

    kw = dict(data_range=255.0, gaussian_weights=True, sigma=SSIM_SIGMA,
              use_sample_covariance=False, full=True)
    if geom.per_slice:
        kw["channel_axis"] = 2
    out = [geom.gsum(structural_similarity(s, f, **kw)[1], where=mask) for s in srcs]
    return tuple(out) + (geom.gsum(mask),)


def metric_ssim(srcs: Sequence[np.ndarray], f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Mean over sources of SSIM(S_i, F): scikit-image, Gaussian window sigma 1.5 (11 taps),
    K1 = 0.01, K2 = 0.03, L = 255; the SSIM map is averaged over mask voxels at least 5 voxels
    from the image border (MATLAB 'valid' region). NaN if the image is smaller than 11."""
    if min(f.shape[d] for d in geom.axes) < SSIM_WIN:
        return np.full(geom.n_groups(f), np.nan)
    m = mask & _interior(mask.shape, (SSIM_WIN - 1) // 2, geom.axes)
    parts = _chunked(_k_ssim, srcs, f, m, geom, halo=(SSIM_WIN - 1) // 2)
    return np.mean([_ratio(p, parts[-1]) for p in parts[:-1]], axis=0)


def metric_psnr(srcs: Sequence[np.ndarray], f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """PSNR = 10 log10(255^2 / mean_i MSE(S_i, F)) inside the mask (scikit-image); +inf if F
    equals every source."""
    from skimage.metrics import peak_signal_noise_ratio

    def one(ms, mf):
        true = np.concatenate(ms)
        test = np.concatenate([mf] * len(ms))
        with warnings.catch_warnings(), np.errstate(divide="ignore"):
            warnings.simplefilter("ignore")
            return float(peak_signal_noise_ratio(true, test, data_range=255.0))

    if not geom.per_slice:
        return np.array([one([s[mask] for s in srcs], f[mask])])
    out = np.full(f.shape[2], np.nan)
    for g in range(f.shape[2]):
        mg = mask[:, :, g]
        if mg.any():
            out[g] = one([s[:, :, g][mg] for s in srcs], f[:, :, g][mg])
    return out


# ---------------------------------------------------------------------------------------------
# Q_CB (Chen-Blum)
# ---------------------------------------------------------------------------------------------
def _qcb_contrast(x: np.ndarray, geom: Geometry, k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """Masked contrast C^p / (h C^q + Z) of C = |G_sigma1 * x / G_sigma2 * x - 1| (0 where the
    wide Gaussian response is exactly 0)."""
    num = _filter_same(x, k1, geom.axes)
    den = _filter_same(x, k2, geom.axes)
    ok = den != 0
    np.divide(num, den, out=num, where=ok)
    num -= 1.0
    np.abs(num, out=num)
    num[~ok] = 0.0
    c = num
    cq = c ** QCB_Q
    cq *= QCB_H
    cq += QCB_Z
    c **= QCB_P
    c *= QCB_K
    c /= cq
    return c


def _k_q_cb(srcs, f, mask, geom):
    r = _radius_grid(f.shape, geom.axes, QCB_FREQ_DIV / 2.0)
    sd = np.exp(-((r / QCB_F0) ** 2)) - QCB_A * np.exp(-((r / QCB_F1) ** 2))
    k1 = _gauss1d(QCB_RADIUS, QCB_SIGMAS[0], normalise=False)
    k2 = _gauss1d(QCB_RADIUS, QCB_SIGMAS[1], normalise=False)
    cf = _qcb_contrast(_freq_filter(f, sd, geom.axes), geom, k1, k2)
    cs = [_qcb_contrast(_freq_filter(s, sd, geom.axes), geom, k1, k2) for s in srcs]
    wsum = cs[0] * cs[0]
    for c in cs[1:]:
        wsum += c * c
    qmap = np.zeros_like(cf)
    n = len(cs)
    for c in cs:
        lam = np.full_like(c, 1.0 / n)
        np.divide(c * c, wsum, out=lam, where=wsum > 0)
        lam *= _strength_ratio(c, cf)
        qmap += lam
    return geom.gsum(qmap, where=mask), geom.gsum(mask)


def metric_q_cb(srcs: Sequence[np.ndarray], f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Chen-Blum: CSF (DoG) filtering in the frequency domain, local band-limited contrast
    C = |G_2 * I / G_4 * I - 1|, masked C^3 / (C^2 + Z), preservation min/max ratio, saliency
    weights C_i^2 / sum_j C_j^2, averaged over the mask."""
    return _ratio(*_chunked(_k_q_cb, srcs, f, mask, geom, halo=None))


# ---------------------------------------------------------------------------------------------
# Q_CV (Chen-Varshney)
# ---------------------------------------------------------------------------------------------
def _block_sum(a: np.ndarray, geom: Geometry, bs: int) -> np.ndarray:
    """Sums over non-overlapping bs-sized blocks of the spatial axes (partial edge blocks kept)."""
    pad = [(0, 0)] * a.ndim
    for d in geom.axes:
        pad[d] = (0, (-a.shape[d]) % bs)
    if any(p[1] for p in pad):
        a = np.pad(a, pad)
    if geom.per_slice:
        x, y, g = a.shape
        return a.reshape(x // bs, bs, y // bs, bs, g).sum(axis=(1, 3))
    x, y, z = a.shape
    return a.reshape(x // bs, bs, y // bs, bs, z // bs, bs).sum(axis=(1, 3, 5))


def _k_q_cv(srcs, f, mask, geom):
    r = _radius_grid(f.shape, geom.axes, QCV_FREQ_DIV / 2.0)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    mf = mask.astype(np.float64)
    cnt = _block_sum(mf, geom, QCV_WINDOW)
    num = 0.0
    den = 0.0
    for s in srcs:
        lam = _magnitude(sobel(s, geom.axes))
        lam **= QCV_ALPHA
        lam *= mf
        lam = _block_sum(lam, geom, QCV_WINDOW)
        df = _freq_filter(s - f, csf, geom.axes)
        df *= df
        df *= mf
        d = _block_sum(df, geom, QCV_WINDOW)
        np.divide(d, cnt, out=d, where=cnt > 0)
        d *= lam
        num = num + d.sum(axis=(0, 1) if geom.per_slice else None)
        den = den + lam.sum(axis=(0, 1) if geom.per_slice else None)
    if not geom.per_slice:
        num, den = np.array([num]), np.array([den])
    return num, den


def metric_q_cv(srcs: Sequence[np.ndarray], f: np.ndarray, mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Chen-Varshney: sum_b sum_i lambda_i(b) D_i(b) / sum_b sum_i lambda_i(b); lambda = block sum
    of |Sobel S_i|^5, D = block mean of (Mannos-Sakrison CSF-filtered (S_i - F))^2; lower is better."""
    return _ratio(*_chunked(_k_q_cv, srcs, f, mask, geom, halo=None))
