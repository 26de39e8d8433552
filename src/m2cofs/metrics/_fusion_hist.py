"""Histogram-based fusion metrics (MI, Q_MI, Q_TE, Q_NCIE, EN) on 256 grey levels.

Internal helper of :mod:`m2cofs.metrics.fusion`; see ``docs/fusion_metrics.md`` for the
definitions. Every function works on *groups* of voxels at once: a group is one axial slice
(``slice`` mode) or the whole volume (``volume`` mode). Inputs are integer grey levels in
[0, 255] of the in-mask voxels (1-D arrays) and a group index per voxel; outputs are one value
per group, all computed with ``np.bincount`` (no Python loop over slices or bins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Sequence

import numpy as np

N_LEVELS = 256          # grey levels / histogram bins (8-bit scale)
Q_TSALLIS = 0.43137     # Nava's constant, as in Liu et al.'s toolbox (metricMI.m, case 3)
Q_TSALLIS_CVEJIC = 1.85  # Cvejic's constant (unnormalised variant, documented only)


def quantise(x: np.ndarray) -> np.ndarray:
    """Map intensities in [0, 1] to integer grey levels 0..255: ``clip(rint(255 * x), 0, 255)``.

    This is MATLAB's ``im2uint8`` / ``round(255 * x)`` (``normalize1.m`` without its per-image
    min-max stretch: sources and fused image keep the common scaling the caller gave them).
    """
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * (N_LEVELS - 1)), 0, N_LEVELS - 1).astype(np.int64)


def _xlogx_bits(p: np.ndarray) -> np.ndarray:
    """p * log2(p) with 0 log 0 = 0."""
    out = np.zeros_like(p, dtype=np.float64)
    pos = p > 0
    out[pos] = p[pos] * np.log2(p[pos])
    return out


@dataclass
class _Joint:
    """Sparse joint histogram of two grey-level variables, per group."""

    g: np.ndarray      # group of each occupied bin
    a: np.ndarray      # level of the first variable
    b: np.ndarray      # level of the second variable
    p: np.ndarray      # joint probability within the group


@dataclass
class GroupedHistograms:
    """Grey levels of several variables (sources..., fused) on the same voxels, by group."""

    levels: Sequence[np.ndarray]   # one int64 array (n_voxels,) per variable, values 0..255
    group: np.ndarray              # int64 (n_voxels,), values 0..n_groups-1
    n_groups: int
    _marg: dict = field(default_factory=dict, repr=False)
    _joint: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.count = np.bincount(self.group, minlength=self.n_groups).astype(np.float64)

    # -- marginals ------------------------------------------------------------------------
    def marginal(self, i: int) -> np.ndarray:
        """(n_groups, 256) probabilities of variable ``i``."""
        if i not in self._marg:
            h = np.bincount(self.group * N_LEVELS + self.levels[i], minlength=self.n_groups * N_LEVELS)
            h = h.reshape(self.n_groups, N_LEVELS).astype(np.float64)
            self._marg[i] = h / np.maximum(self.count, 1.0)[:, None]
        return self._marg[i]

    def entropy(self, i: int) -> np.ndarray:
        """Shannon entropy of variable ``i`` in bits, per group."""
        return -_xlogx_bits(self.marginal(i)).sum(axis=1)

    # -- joints ---------------------------------------------------------------------------
    def joint(self, i: int, j: int) -> _Joint:
        key = (i, j)
        if key not in self._joint:
            nn = N_LEVELS * N_LEVELS
            code = self.group * nn + self.levels[i] * N_LEVELS + self.levels[j]
            counts = np.bincount(code, minlength=self.n_groups * nn)
            nz = np.flatnonzero(counts)
            g = nz // nn
            rem = nz - g * nn
            a = rem // N_LEVELS
            b = rem - a * N_LEVELS
            p = counts[nz] / self.count[g]
            self._joint[key] = _Joint(g=g, a=a, b=b, p=p)
        return self._joint[key]

    def joint_entropy(self, i: int, j: int) -> np.ndarray:
        jt = self.joint(i, j)
        return -np.bincount(jt.g, weights=_xlogx_bits(jt.p), minlength=self.n_groups)

    def mutual_information(self, i: int, j: int) -> np.ndarray:
        """Shannon MI in bits, per group: H(i) + H(j) - H(i, j)."""
        return self.entropy(i) + self.entropy(j) - self.joint_entropy(i, j)

    def tsallis_mi(self, i: int, j: int, q: float = Q_TSALLIS, swap_marginals: bool = False) -> np.ndarray:
        """Tsallis mutual information of order q (Cvejic et al. 2006), per group.

        I_q(X, Y) = (1 - sum_xy p(x, y)^q (p(x) p(y))^(1 - q)) / (1 - q).

        ``swap_marginals=True`` reproduces the reference ``tsallis.m`` (Liu's toolbox, copied in
        MATR), which multiplies p(x, y) against p_Y(x) p_X(y) instead of p_X(x) p_Y(y).
        """
        jt = self.joint(i, j)
        pi, pj = self.marginal(i), self.marginal(j)
        if swap_marginals:
            prod = pj[jt.g, jt.a] * pi[jt.g, jt.b]
        else:
            prod = pi[jt.g, jt.a] * pj[jt.g, jt.b]
        ok = prod > 0
        term = np.zeros_like(jt.p)
        term[ok] = jt.p[ok] ** q * prod[ok] ** (1.0 - q)
        s = np.bincount(jt.g, weights=term, minlength=self.n_groups)
        return (1.0 - s) / (1.0 - q)

    def ncc(self, i: int, j: int) -> np.ndarray:
        """Nonlinear correlation coefficient (Wang et al.): MI with logarithms to base 256."""
        return self.mutual_information(i, j) / np.log2(N_LEVELS)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --------------------------------------------------------------------------------------------
# metrics: `h` holds variables 0..n-1 = sources, n = fused
# --------------------------------------------------------------------------------------------
def metric_mi(h: GroupedHistograms, n_src: int) -> np.ndarray:
    """MI = sum_i MI(S_i, F), bits."""
    return sum(h.mutual_information(i, n_src) for i in range(n_src))


def metric_q_mi(h: GroupedHistograms, n_src: int) -> np.ndarray:
    """Hossny's normalised MI: 2 * sum_i MI(S_i, F) / (H(S_i) + H(F))."""
    hf = h.entropy(n_src)
    return 2.0 * sum(_safe_div(h.mutual_information(i, n_src), h.entropy(i) + hf) for i in range(n_src))


def metric_q_te(h: GroupedHistograms, n_src: int, q: float = Q_TSALLIS, swap_marginals: bool = False) -> np.ndarray:
    """Normalised Tsallis metric (Nava's form, Liu's toolbox), N-source generalisation.

    Q_TE = mean_i I_q(S_i, F) / (mean_i H(S_i)^q + 1/2 mean_{i<j} I_q(S_i, S_j));
    for two sources (I_q(A,F) + I_q(B,F)) / (H(A)^q + H(B)^q + I_q(A,B)).
    """
    num = np.mean([h.tsallis_mi(i, n_src, q, swap_marginals) for i in range(n_src)], axis=0)
    hq = np.mean([h.entropy(i) ** q for i in range(n_src)], axis=0)
    cross = np.mean([h.tsallis_mi(i, j, q, swap_marginals) for i, j in combinations(range(n_src), 2)], axis=0)
    return _safe_div(num, hq + 0.5 * cross)


def metric_q_ncie(h: GroupedHistograms, n_src: int) -> np.ndarray:
    """Nonlinear correlation information entropy of the K = N + 1 variables (sources + fused)."""
    k = n_src + 1
    r = np.broadcast_to(np.eye(k), (h.n_groups, k, k)).copy()
    for i, j in combinations(range(k), 2):
        c = h.ncc(i, j)
        r[:, i, j] = c
        r[:, j, i] = c
    lam = np.clip(np.linalg.eigvalsh(r), 0.0, None) / k      # clip round-off negatives
    hr = -_xlogx_bits(lam).sum(axis=1) / np.log2(N_LEVELS)
    return 1.0 - hr


def metric_en(fused_levels: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Entropy (bits) of the fused grey levels per group, via scikit-image.

    ``fused_levels`` holds the groups contiguously: group g is ``fused_levels[bounds[g]:bounds[g+1]]``.
    """
    from skimage.measure import shannon_entropy

    return np.array([shannon_entropy(fused_levels[bounds[g]:bounds[g + 1]], base=2)
                     for g in range(len(bounds) - 1)], dtype=np.float64)
