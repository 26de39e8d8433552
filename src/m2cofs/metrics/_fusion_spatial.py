"""Gradient-, window- and frequency-based fusion metrics (Q_G, VIF, SSIM, PSNR, Q_CB, Q_CV, SD, SF, AG).

Internal helper of :mod:`m2cofs.metrics.fusion`; see ``docs/fusion_metrics.md`` for the
definitions. All functions take float arrays on the 0-255 grey-level scale, laid out either as a
stack of axial slices ``(X, Y, G)`` processed as G independent 2-D images (``Geometry.slice()``)
or as one volume ``(X, Y, Z)`` (``Geometry.volume()``). A boolean mask of the same shape selects
the voxels that are averaged; maps are always computed on the whole image. Every metric returns
one value per group (per slice, or a length-1 array for the volume).

This module gathers them; they live in

* :mod:`._fusion_core` — :class:`Geometry`, the thread pool and chunking, the filters (Sobel,
  Gaussian, FFT);
* :mod:`._fusion_gradient` — SD, SF, AG and Q_G;
* :mod:`._fusion_fidelity` — VIF, SSIM and PSNR;
* :mod:`._fusion_perceptual` — Q_CB and Q_CV.
"""

from __future__ import annotations

from ._fusion_core import CHUNK, SLAB, Geometry, sobel
from ._fusion_fidelity import (SSIM_SIGMA, SSIM_WIN, VIF_EPS, VIF_SCALES, VIF_SIGMA_NSQ, VIF_SLAB, metric_psnr,
                               metric_ssim, metric_vif)
from ._fusion_gradient import (QG_GAMMA_A, QG_GAMMA_G, QG_KAPPA_A, QG_KAPPA_G, QG_L, QG_SIGMA_A, QG_SIGMA_G,
                               QG_ZERO_GX, metric_ag, metric_q_g, metric_sd, metric_sf, q_g_identity_value)
from ._fusion_perceptual import (QCB_A, QCB_F0, QCB_F1, QCB_FREQ_DIV, QCB_H, QCB_K, QCB_P, QCB_Q, QCB_RADIUS,
                                 QCB_SIGMAS, QCB_Z, QCV_ALPHA, QCV_FREQ_DIV, QCV_WINDOW, metric_q_cb, metric_q_cv)

__all__ = [
    "Geometry", "sobel", "SLAB", "CHUNK",
    "metric_sd", "metric_sf", "metric_ag", "metric_q_g", "q_g_identity_value",
    "metric_vif", "metric_ssim", "metric_psnr", "metric_q_cb", "metric_q_cv",
    "QG_GAMMA_G", "QG_KAPPA_G", "QG_SIGMA_G", "QG_GAMMA_A", "QG_KAPPA_A", "QG_SIGMA_A", "QG_L", "QG_ZERO_GX",
    "VIF_SIGMA_NSQ", "VIF_EPS", "VIF_SCALES", "VIF_SLAB", "SSIM_SIGMA", "SSIM_WIN",
    "QCB_F0", "QCB_F1", "QCB_A", "QCB_FREQ_DIV", "QCB_P", "QCB_Q", "QCB_Z", "QCB_K", "QCB_H", "QCB_SIGMAS",
    "QCB_RADIUS", "QCV_WINDOW", "QCV_ALPHA", "QCV_FREQ_DIV",
]
