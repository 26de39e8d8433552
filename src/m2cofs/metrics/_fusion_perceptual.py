"""Perceptual metrics: Q_CB (Chen-Blum) and Q_CV (Chen-Varshney).

Internal helper of :mod:`m2cofs.metrics.fusion` (through :mod:`._fusion_spatial`); inputs on the
0-255 scale, geometry and chunking as in :mod:`._fusion_core`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._fusion_core import (Geometry, _chunked, _filter_same, _freq_filter, _gauss1d, _magnitude, _radius_grid,
                           _ratio, _strength_ratio, sobel)

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
