"""Objective image-fusion metrics for N-source 3-D MRI fusion, in ``slice`` and ``volume`` modes.

Metrics (see ``docs/fusion_metrics.md`` for formulas, sources, the chosen variants and the
alternatives in the literature):

========  ===================================================================  ===========
name      metric                                                               better
========  ===================================================================  ===========
Q_MI      Hossny's normalised mutual information                               higher
Q_TE      normalised Tsallis-entropy metric (Nava's form, q = 0.43137)         higher
Q_NCIE    nonlinear correlation information entropy (Wang et al.)              higher
Q_G       Xydeas-Petrovic gradient metric Q^AB/F (standard constants)         higher
MI        sum over sources of MI(S_i, F), bits                                 higher
VIF       pixel-domain multi-scale VIF, mean over sources                      higher
EN        entropy of the fused image, bits                                     higher
SD        standard deviation of the fused image (0-255 scale)                  higher
SF        spatial frequency of the fused image (0-255 scale)                   higher
AG        average gradient of the fused image (0-255 scale)                    higher
SSIM      mean over sources of SSIM(S_i, F)                                    higher
PSNR      10 log10(255^2 / mean_i MSE(S_i, F)), dB                             higher
Q_CB      Chen-Blum perceptual metric                                          higher
Q_CV      Chen-Varshney perceptual metric                                      lower
========  ===================================================================  ===========

Inputs are float arrays scaled to [0, 1] by the caller, identically for sources and fused image.
Histogram metrics bin ``round(255 * x)`` into 256 grey levels; all other metrics work on
``255 * x`` (the 8-bit scale the MATLAB reference scripts assume), without rounding.

``mode="slice"`` computes each metric's 2-D definition on every axial slice (last axis) that
contains at least :data:`MIN_SLICE_VOXELS` mask voxels and averages over those slices;
``mode="volume"`` uses the 3-D generalisations (3-D histograms, 3-D Sobel, 3-D windows, 3-D FFT).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from . import _fusion_hist as _h
from . import _fusion_spatial as _s
from .registry import FUSION_METRICS, METRICS, MODES, PAPER_METRICS, find_metric

__all__ = [
    "FUSION_METRICS",
    "PAPER_METRICS",
    "HIGHER_IS_BETTER",
    "MODES",
    "MIN_SLICE_VOXELS",
    "METRIC_DEFINITIONS",
    "FusionMetricsResult",
    "fusion_metrics",
    "fusion_metrics_2d",
    "tsallis_mutual_information",
    "q_te_liu_reference",
    "Q_G_IDENTITY",
]

# names, the paper's six, directions and modes live in the one metric registry
HIGHER_IS_BETTER: dict[str, bool] = {name: METRICS[name].higher_is_better for name in FUSION_METRICS}

#: a slice takes part in ``slice`` mode only if it has at least this many mask voxels
MIN_SLICE_VOXELS = 64

#: Q_G when fused == every source (standard constants): ~0.9748, not 1
Q_G_IDENTITY: float = _s.q_g_identity_value()

_DEF_2D = {
    "Q_MI": "Hossny 2*sum_i MI(S_i,F)/(H(S_i)+H(F)); 256-bin 2-D joint histogram per slice",
    "Q_TE": "Nava/Liu normalised Tsallis q=0.43137, correct marginals; 256-bin per slice",
    "Q_NCIE": "Wang NCIE of N+1 variables, base-256 NCC; 256-bin per slice",
    "Q_G": "Xydeas-Petrovic Q^AB/F, 2-D Sobel, A=1-|da|/(pi/2), standard constants",
    "MI": "sum_i MI(S_i,F) in bits; 256-bin per slice",
    "VIF": "pixel-domain 4-scale VIF (sigma_n^2=2), 2-D Gaussian windows, mean over sources",
    "EN": "Shannon entropy (bits) of 256 grey levels per slice (scikit-image)",
    "SD": "population std (0-255) per slice",
    "SF": "sqrt(RF^2+CF^2), forward differences (0-255) per slice",
    "AG": "mean sqrt((gx^2+gy^2)/2), central differences (0-255) per slice",
    "SSIM": "scikit-image SSIM, 2-D Gaussian sigma=1.5, mean over sources",
    "PSNR": "10log10(255^2/mean_i MSE), per slice (scikit-image)",
    "Q_CB": "Chen-Blum, 2-D DoG CSF (|k|/15), 2-D Gaussian contrast (31x31)",
    "Q_CV": "Chen-Varshney, 2-D Mannos-Sakrison CSF (|k|/4), 16x16 blocks, alpha=5",
}
_DEF_3D = {
    "Q_MI": "Hossny 2*sum_i MI(S_i,F)/(H(S_i)+H(F)); 256-bin joint histogram of all mask voxels",
    "Q_TE": "Nava/Liu normalised Tsallis q=0.43137, correct marginals; 256-bin, whole volume",
    "Q_NCIE": "Wang NCIE of N+1 variables, base-256 NCC; 256-bin, whole volume",
    "Q_G": "Q^AB/F with 3-D Sobel, A=1-angle(grad lines)/(pi/2), standard constants",
    "MI": "sum_i MI(S_i,F) in bits; 256-bin, whole volume",
    "VIF": "pixel-domain 4-scale VIF (sigma_n^2=2), 3-D Gaussian windows, mean over sources",
    "EN": "Shannon entropy (bits) of 256 grey levels, whole volume (scikit-image)",
    "SD": "population std (0-255), whole volume",
    "SF": "sqrt(RF^2+CF^2+DF^2), forward differences along x, y, z (0-255)",
    "AG": "mean sqrt((gx^2+gy^2+gz^2)/3), central differences (0-255)",
    "SSIM": "scikit-image SSIM, 3-D Gaussian sigma=1.5, mean over sources",
    "PSNR": "10log10(255^2/mean_i MSE), whole volume (scikit-image)",
    "Q_CB": "Chen-Blum, 3-D DoG CSF (|k|/15), 3-D Gaussian contrast (31^3)",
    "Q_CV": "Chen-Varshney, 3-D Mannos-Sakrison CSF (|k|/4), 16^3 blocks, 3-D Sobel, alpha=5",
}
#: one-line definition of each metric in each mode (used to label results)
METRIC_DEFINITIONS: dict[str, dict[str, str]] = {"slice": _DEF_2D, "volume": _DEF_3D}

_HIST = {"Q_MI", "Q_TE", "Q_NCIE", "MI", "EN"}


class FusionMetricsResult(dict):
    """``dict[str, float]`` of metric values that also carries its labels.

    Attributes: ``mode`` ("slice" or "volume"), ``n_slices`` (slices averaged in slice mode,
    ``None`` in volume mode), ``n_sources``, ``definitions`` (name -> one-line definition).
    ``labelled()`` returns ``{"Q_MI[volume]": value, ...}``.
    """

    def __init__(self, values: Mapping[str, float], mode: str, n_slices: int | None, n_sources: int):
        super().__init__(values)
        self.mode = mode
        self.n_slices = n_slices
        self.n_sources = n_sources
        self.definitions = {k: METRIC_DEFINITIONS.get(mode, _DEF_2D)[k] for k in values}

    def label(self, name: str) -> str:
        return f"{name}[{self.mode}]"

    def labelled(self) -> dict[str, float]:
        return {self.label(k): v for k, v in self.items()}

    def __repr__(self) -> str:
        extra = f", n_slices={self.n_slices}" if self.n_slices is not None else ""
        return f"FusionMetricsResult(mode={self.mode!r}{extra}, {dict.__repr__(self)})"


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _resolve_metrics(metrics: Iterable[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return FUSION_METRICS
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for name in metrics:
        spec = find_metric(name)
        if spec is None or spec.group != "fusion":
            raise ValueError(f"unknown fusion metric {name!r}; known metrics: {', '.join(FUSION_METRICS)}")
        key = spec.name
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError("no metric requested")
    return tuple(out)


def _validate(sources, fused, mask, ndim: int):
    if isinstance(sources, np.ndarray):
        if sources.ndim != ndim + 1:
            raise ValueError(f"sources given as one array must have shape (N, *image_shape) with {ndim}-D "
                             f"images, got shape {sources.shape}")
        sources = list(sources)
    if not isinstance(sources, Sequence) or isinstance(sources, (str, bytes)):
        raise ValueError("sources must be a sequence (list/tuple) of arrays, one per source image")
    if len(sources) < 2:
        raise ValueError(f"fusion metrics need at least 2 source images, got {len(sources)}")
    f = np.asarray(fused, dtype=np.float64)
    if f.ndim != ndim:
        raise ValueError(f"fused image must be {ndim}-D, got shape {f.shape}")
    srcs = []
    for i, s in enumerate(sources):
        a = np.asarray(s, dtype=np.float64)
        if a.shape != f.shape:
            raise ValueError(f"source {i} has shape {a.shape}, fused image has shape {f.shape}: shapes must match")
        srcs.append(a)
    for i, a in enumerate(srcs + [f]):
        if not np.all(np.isfinite(a)):
            what = "fused image" if i == len(srcs) else f"source {i}"
            raise ValueError(f"{what} contains NaN or infinite values")
    if mask is None:
        m = np.ones(f.shape, dtype=bool)
    else:
        m = np.asarray(mask)
        if m.shape != f.shape:
            raise ValueError(f"mask has shape {m.shape}, images have shape {f.shape}: shapes must match")
        m = m.astype(bool)
        if not m.any():
            raise ValueError("mask is empty: no voxel to evaluate")
    return srcs, f, m


# ---------------------------------------------------------------------------------------------
# computation on a prepared stack
# ---------------------------------------------------------------------------------------------
def _hist_data(srcs01, f01, mask, geom: _s.Geometry):
    """Grey levels of the in-mask voxels, grouped contiguously by slice (slice mode)."""
    if geom.per_slice:
        mt = np.moveaxis(mask, 2, 0)
        levels = [_h.quantise(np.moveaxis(a, 2, 0)[mt]) for a in list(srcs01) + [f01]]
        counts = mt.reshape(mt.shape[0], -1).sum(axis=1)
    else:
        levels = [_h.quantise(a[mask]) for a in list(srcs01) + [f01]]
        counts = np.array([levels[0].size])
    n_groups = counts.size
    group = np.repeat(np.arange(n_groups, dtype=np.int64), counts)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return _h.GroupedHistograms(levels=levels, group=group, n_groups=n_groups), bounds


def _compute(srcs01, f01, mask, geom: _s.Geometry, names: Sequence[str]) -> dict[str, np.ndarray]:
    n = len(srcs01)
    out: dict[str, np.ndarray] = {}
    if _HIST & set(names):
        h, bounds = _hist_data(srcs01, f01, mask, geom)
        for name in names:
            if name == "MI":
                out[name] = _h.metric_mi(h, n)
            elif name == "Q_MI":
                out[name] = _h.metric_q_mi(h, n)
            elif name == "Q_TE":
                out[name] = _h.metric_q_te(h, n)
            elif name == "Q_NCIE":
                out[name] = _h.metric_q_ncie(h, n)
            elif name == "EN":
                out[name] = _h.metric_en(h.levels[n], bounds)
        del h
    rest = [k for k in names if k not in _HIST]
    if rest:
        srcs = [a * 255.0 for a in srcs01]
        f = f01 * 255.0
        for name in rest:
            if name == "Q_G":
                out[name] = _s.metric_q_g(srcs, f, mask, geom)
            elif name == "VIF":
                out[name] = _s.metric_vif(srcs, f, mask, geom)
            elif name == "SD":
                out[name] = _s.metric_sd(f, mask, geom)
            elif name == "SF":
                out[name] = _s.metric_sf(f, mask, geom)
            elif name == "AG":
                out[name] = _s.metric_ag(f, mask, geom)
            elif name == "SSIM":
                out[name] = _s.metric_ssim(srcs, f, mask, geom)
            elif name == "PSNR":
                out[name] = _s.metric_psnr(srcs, f, mask, geom)
            elif name == "Q_CB":
                out[name] = _s.metric_q_cb(srcs, f, mask, geom)
            elif name == "Q_CV":
                out[name] = _s.metric_q_cv(srcs, f, mask, geom)
    return out


def _average(v: np.ndarray) -> float:
    """Mean over slices, skipping slices where the metric is undefined (NaN); +inf if any is +inf."""
    v = np.asarray(v, dtype=np.float64)
    finite_or_inf = v[~np.isnan(v)]
    if finite_or_inf.size == 0:
        return float("nan")
    return float(np.mean(finite_or_inf))


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def fusion_metrics(
    sources: Sequence[np.ndarray],
    fused: np.ndarray,
    mask: np.ndarray | None = None,
    mode: str = "volume",
    metrics: Sequence[str] | None = None,
    *,
    min_slice_voxels: int = MIN_SLICE_VOXELS,
) -> FusionMetricsResult:
    """Fusion metrics of a fused 3-D volume against N >= 2 source volumes.

    Parameters
    ----------
    sources : sequence of (X, Y, Z) float arrays in [0, 1], axial slices along the last axis
        (an array of shape (N, X, Y, Z) is accepted too).
    fused : (X, Y, Z) float array in [0, 1], scaled like the sources.
    mask : optional boolean brain mask (X, Y, Z); background is excluded. Histogram metrics use
        only mask voxels; windowed / gradient / frequency metrics are computed on the whole
        volume (or slice) and averaged over the mask. ``None``: every voxel counts.
    mode : ``"volume"`` (3-D generalisations) or ``"slice"`` (2-D metric on each axial slice
        that contains brain, averaged over those slices with equal weight).
    metrics : names from :data:`FUSION_METRICS` (default: all).
    min_slice_voxels : slice mode only: a slice is used if it has at least this many mask
        voxels (without a mask: voxels that are non-zero in some source or in the fused image).

    Returns
    -------
    FusionMetricsResult : a ``dict`` name -> float, labelled with ``.mode`` (and
    ``.n_slices``, ``.definitions``, ``.labelled()``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    names = _resolve_metrics(metrics)
    srcs, f, m = _validate(sources, fused, mask, ndim=3)
    if mode == "volume":
        vals = _compute(srcs, f, m, _s.Geometry.volume(), names)
        return FusionMetricsResult({k: float(vals[k][0]) for k in names}, "volume", None, len(srcs))
    if mask is None:
        content = np.zeros(f.shape, dtype=bool)
        for a in srcs + [f]:
            content |= a != 0
        per_slice = content.sum(axis=(0, 1))
    else:
        per_slice = m.sum(axis=(0, 1))
    keep = np.flatnonzero(per_slice >= max(1, int(min_slice_voxels)))
    if keep.size == 0:
        what = "mask voxels" if mask is not None else "non-zero voxels"
        raise ValueError(f"slice mode: no axial slice has at least {min_slice_voxels} {what}")
    vals = _compute([a[:, :, keep] for a in srcs], f[:, :, keep], m[:, :, keep], _s.Geometry.slice(), names)
    return FusionMetricsResult({k: _average(vals[k]) for k in names}, "slice", int(keep.size), len(srcs))


def fusion_metrics_2d(
    sources: Sequence[np.ndarray],
    fused: np.ndarray,
    mask: np.ndarray | None = None,
    metrics: Sequence[str] | None = None,
) -> FusionMetricsResult:
    """Fusion metrics of one 2-D image (X, Y) against N >= 2 sources: the per-slice definitions
    used by ``fusion_metrics(mode="slice")``. Same conventions as :func:`fusion_metrics`; no
    minimum mask size. The result is labelled ``mode="slice"``."""
    names = _resolve_metrics(metrics)
    srcs, f, m = _validate(sources, fused, mask, ndim=2)
    vals = _compute([a[:, :, None] for a in srcs], f[:, :, None], m[:, :, None], _s.Geometry.slice(), names)
    return FusionMetricsResult({k: float(vals[k][0]) for k in names}, "slice", 1, len(srcs))


def tsallis_mutual_information(
    x: np.ndarray,
    y: np.ndarray,
    q: float = _h.Q_TSALLIS,
    mask: np.ndarray | None = None,
    swap_marginals: bool = False,
) -> float:
    """Tsallis mutual information of order q between two images in [0, 1] (256 grey levels):
    ``(1 - sum p(x,y)^q (p(x) p(y))^(1-q)) / (1 - q)``, over all (or mask) voxels.

    ``swap_marginals=True`` reproduces the reference ``tsallis.m`` (Liu's toolbox; MATR), which
    pairs p(x, y) with p_Y(x) p_X(y). Used by the tests; documented in docs/fusion_metrics.md.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    m = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    lv = [_h.quantise(x[m]), _h.quantise(y[m])]
    h = _h.GroupedHistograms(levels=lv, group=np.zeros(lv[0].size, dtype=np.int64), n_groups=1)
    return float(h.tsallis_mi(0, 1, q, swap_marginals)[0])


def q_te_liu_reference(
    sources: Sequence[np.ndarray],
    fused: np.ndarray,
    mask: np.ndarray | None = None,
    swap_marginals: bool = True,
) -> float:
    """Two-source Q_TE as Liu's toolbox / MATR compute it (``metricMI(a, b, f, 3)``):
    ``(T(A,F) + T(B,F)) / (H(A)^q + H(B)^q + T(A,B))``, q = 0.43137, with their
    marginal-swapped ``tsallis.m`` (``swap_marginals=True``), from one histogram of all (or all
    mask) voxels of arrays of any dimension. For comparison with published numbers only:
    :func:`fusion_metrics` uses the correct marginals (``swap_marginals=False`` here)."""
    f = np.asarray(fused)
    srcs, f, m = _validate(sources, f, mask, ndim=f.ndim)
    if len(srcs) != 2:
        raise ValueError("the reference Q_TE is defined for exactly two sources")
    lv = [_h.quantise(a[m]) for a in srcs + [f]]
    h = _h.GroupedHistograms(levels=lv, group=np.zeros(lv[0].size, dtype=np.int64), n_groups=1)
    return float(_h.metric_q_te(h, 2, swap_marginals=swap_marginals)[0])
