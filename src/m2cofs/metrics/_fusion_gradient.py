"""Gradient metrics: SD, SF and AG of the fused image, and Q_G (Xydeas-Petrovic Q^AB/F).

Internal helper of :mod:`m2cofs.metrics.fusion` (through :mod:`._fusion_spatial`); inputs on the
0-255 scale, geometry and chunking as in :mod:`._fusion_core`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ._fusion_core import Geometry, _chunked, _magnitude, _ratio, _strength_ratio, sobel

# Xydeas & Petrovic (2000) standard constants for Q^AB/F
QG_GAMMA_G, QG_KAPPA_G, QG_SIGMA_G = 0.9994, -15.0, 0.5
QG_GAMMA_A, QG_KAPPA_A, QG_SIGMA_A = 0.9879, -22.0, 0.8
QG_L = 1.0
QG_ZERO_GX = 1e-5          # replaces a zero horizontal derivative (MATR / Liu convention)


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
