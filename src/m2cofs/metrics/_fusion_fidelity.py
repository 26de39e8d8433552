"""Fidelity to the sources: VIF (pixel domain, multi-scale), SSIM and PSNR.

Internal helper of :mod:`m2cofs.metrics.fusion` (through :mod:`._fusion_spatial`); inputs on the
0-255 scale, geometry and chunking as in :mod:`._fusion_core`.
"""

from __future__ import annotations

import functools
import warnings
from typing import Sequence

import numpy as np

from ._fusion_core import Geometry, _chunked, _crop, _decimate, _filter_valid, _gauss1d, _interior, _ratio

# VIF (Sheikh & Bovik 2006, pixel domain "vifp"), on the 0-255 scale
VIF_SIGMA_NSQ = 2.0
VIF_EPS = 1e-10
VIF_SCALES = 4
# SSIM (Wang et al. 2004)
SSIM_SIGMA = 1.5
SSIM_WIN = 11

VIF_SLAB = 80                # core slices per slab for VIF's first scale (halo 8)


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
