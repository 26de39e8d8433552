"""Fusion metrics (m2cofs.metrics.fusion): published reference outputs on a fixed 2-D pair, hand-computed
values on tiny images, maxima for identical inputs, monotone fall with noise, N sources, masks, modes,
errors, and the run time on a full 240x240x155 volume.

Reference numbers below come from RUNNING the reference implementations (never from this package):

* MATR   -- github.com/tthinking/MATR, evaluation/*.m @ 9fdacf39e91fa4a5646598e16ccaa322edd95b49
            (Q_G.m, metricMI.m, tsallis.m, mutual_info.m, Q_NCIE.m, NCC.m, normalize1.m, Q_CV.m; the
            MI-family files are identical to Liu's toolbox github.com/zhengliu6699/imageFusionMetrics
            @ d6f7f1a0c0a13e7d19bc1e8e4d4f3ad51f439273). Run unmodified in GNU Octave 7.3 with the
            image package; Octave lacks MATLAB's ``freqspace`` and ``blkproc``, so two shims written from
            MATLAB's documentation were on the path (only Q_CV uses them).
* VIFB   -- github.com/xingchenzhang/VIFB, metrics/*.m @ 5d29ee72176551bca1e7823598f4a1f7f5f2467f
            (metricsMutinf, metricsEntropy, metricsVariance, metricsSpatial_frequency,
            metricsAvg_gradient, metricsSsim, metricsQabf, metricsQcb = Liu's metricChenBlum.m,
            metricsPsnr), same Octave set-up.
* CDDFuse -- github.com/Zhaozixiang1228/MMIF-CDDFuse, utils/Evaluator.py @
            40de0585034a57b33d3e293b6807b29f247921b6, run in Python 3.11 (numpy 2.4, scipy 1.17,
            scikit-learn 1.9, scikit-image 0.26) with only its cv2 image reader removed.

All were run on the pair built by ``reference_pair()`` (8-bit images that contain 0 and 255, so
the references' per-image min-max stretch ``normalize1`` is the identity and our ``round(255 x)``
binning sees the same grey levels).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from m2cofs.metrics.fusion import (
    FUSION_METRICS,
    HIGHER_IS_BETTER,
    MIN_SLICE_VOXELS,
    PAPER_METRICS,
    Q_G_IDENTITY,
    FusionMetricsResult,
    fusion_metrics,
    fusion_metrics_2d,
    q_te_liu_reference,
    tsallis_mutual_information,
)

LN2 = math.log(2.0)
Q = 0.43137

# -------------------------------------------------------------------------------------------------
# fixtures / data
# -------------------------------------------------------------------------------------------------


def reference_pair():
    """128x128 test pair: A = camera, B = moon (scikit-image >= 0.18 bundled images), F = their
    rounded mean; corner pixels set to 0 and 255 in all three images. Returned on 0..255."""
    from skimage import data

    a = data.camera()[::4, ::4].astype(np.float64)
    b = data.moon()[::4, ::4].astype(np.float64)
    f = np.round(0.5 * a + 0.5 * b)
    for x in (a, b, f):
        x[0, 0] = 0.0
        x[-1, -1] = 255.0
    return a, b, f


@pytest.fixture(scope="module")
def pair():
    a, b, f = reference_pair()
    # guard: the images the reference numbers were computed on
    assert (a.sum(), b.sum(), f.sum()) == (2114554.0, 1837825.0, 1976244.0)
    return a / 255.0, b / 255.0, f / 255.0


@pytest.fixture(scope="module")
def ours(pair):
    a, b, f = pair
    return fusion_metrics_2d([a, b], f)


def phantom(shape=(96, 96, 24), seed=0):
    """Two 'modalities' of one synthetic head: 3 tissue classes with different contrasts, smooth
    texture, zero background; plus the brain mask. Values in [0, 1]."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.2) ** 2 <= 1
    field = gaussian_filter(rng.standard_normal(shape), (4, 4, 2))
    lab = np.digitize(field / field.std(), [-0.6, 0.5]) + 1
    lab[~mask] = 0
    tex = gaussian_filter(rng.standard_normal(shape), 1.0)
    a = np.clip(gaussian_filter(np.array([0.0, 0.35, 0.6, 0.85])[lab], 0.7) + 0.03 * tex, 0, 1) * mask
    b = np.clip(gaussian_filter(np.array([0.0, 0.9, 0.45, 0.3])[lab], 0.7) - 0.03 * tex, 0, 1) * mask
    return a, b, mask


@pytest.fixture(scope="module")
def head():
    return phantom()


# -------------------------------------------------------------------------------------------------
# interface
# -------------------------------------------------------------------------------------------------


def test_interface_constants():
    assert FUSION_METRICS == ("Q_MI", "Q_TE", "Q_NCIE", "Q_G", "MI", "VIF", "EN", "SD", "SF", "AG",
                              "SSIM", "PSNR", "Q_CB", "Q_CV")
    assert PAPER_METRICS == ("Q_MI", "Q_TE", "Q_NCIE", "Q_G", "MI", "VIF")
    assert set(HIGHER_IS_BETTER) == set(FUSION_METRICS)
    assert HIGHER_IS_BETTER["Q_CV"] is False
    assert all(HIGHER_IS_BETTER[k] for k in FUSION_METRICS if k != "Q_CV")


# -------------------------------------------------------------------------------------------------
# agreement with published reference implementations (2-D, same pair)
# -------------------------------------------------------------------------------------------------
# MATR / Liu (Octave run, see module docstring)
MATR_Q_MI = 0.627099971948616          # metricMI(a, b, f, 1)  (Hossny)
MATR_Q_NCIE = 0.812812666006615        # Q_NCIE(a, b, f)
MATR_Q_G = 0.493907682043052           # Q_G(a, b, f)
MATR_MI_AF = 3.19564696182965          # mutual_info(a, f)  (bits)
MATR_MI_BF = 0.873806053720813         # mutual_info(b, f)
MATR_Q_CV = 258.257740252756           # real(Q_CV(a, b, f))
MATR_Q_TE = 0.528903739738972          # metricMI(a, b, f, 3)  (Nava, q = 0.43137, swapped marginals)
MATR_T_AF = 1.60305034465229           # tsallis(a, f, 0.43137)
MATR_T_BF = 1.58533819676958           # tsallis(b, f, 0.43137)
MATR_T_AB = 1.70261010581152           # tsallis(a, b, 0.43137)
MATR_TE_CVEJIC = 2730.81854126662      # metricMI(a, b, f, 2)  (Cvejic, q = 1.85, unnormalised)
MATR_Q_G_IDENT = 0.974793624969497     # Q_G(a, a, a)
MATR_Q_MI_IDENT = 2.0                  # metricMI(a, a, a, 1)
MATR_Q_TE_IDENT = 0.519460570227433    # metricMI(a, a, a, 3)
MATR_Q_NCIE_IDENT = 0.9480698652517    # Q_NCIE(a, a, a)
# VIFB (Octave run)
VIFB_MI = 2.82072988414965             # metricsMutinf: natural log (nats), sum over sources
VIFB_EN = 6.34692695108054             # metricsEntropy
VIFB_SD = 38.141366434138              # metricsVariance (population std despite the name)
VIFB_SF = 19.9378000075391             # metricsSpatial_frequency: sums divided by M*N
VIFB_AG = 5.18051128633529             # metricsAvg_gradient: sum divided by (M-1)(N-1)
VIFB_SSIM = 1.30796788022801           # metricsSsim: SUM over the two sources
VIFB_Q_CB = 0.433742357538447          # metricsQcb (= Liu's metricChenBlum.m)
VIFB_QABF = 0.496304645538828          # metricsQabf: alpha = pi/2 where gx == 0, G = g_F where g_A == g_F
# CDDFuse (Python run)
CDD_EN = 6.346926951080535
CDD_SD = 38.14136643413804
CDD_SF = 20.01614137026242
CDD_AG = 5.099881990802116
CDD_MI = 2.8207298841499635            # sklearn mutual_info_score, nats, sum over sources
CDD_PSNR = 16.594735025350168          # 10 log10(max(F)^2 / mean MSE); max(F) = 255 here
CDD_VIFF = 0.664120716433793           # SUM over sources of pixel-domain VIF
CDD_QABF = 0.49630464552140857         # same conventions as VIFB_QABF
CDD_VIFF_IDENT = 1.9999999999776106    # VIFF(a, a, a)
CDD_QABF_IDENT = 0.9753327678294699    # Qabf(a, a, a): > the true 0.97479 because of G = g_F


def test_matches_matr_liu(ours):
    assert ours["Q_MI"] == pytest.approx(MATR_Q_MI, rel=1e-12)
    assert ours["Q_NCIE"] == pytest.approx(MATR_Q_NCIE, rel=1e-12)
    assert ours["MI"] == pytest.approx(MATR_MI_AF + MATR_MI_BF, rel=1e-12)
    assert ours["Q_CV"] == pytest.approx(MATR_Q_CV, rel=1e-10)
    # MATR adds 1e-5 to zero gradient magnitudes before using them as weights; we do not.
    assert ours["Q_G"] == pytest.approx(MATR_Q_G, rel=1e-8)


def test_matches_vifb(ours):
    assert ours["EN"] == pytest.approx(VIFB_EN, rel=1e-12)
    assert ours["SD"] == pytest.approx(VIFB_SD, rel=1e-12)
    assert ours["MI"] == pytest.approx(VIFB_MI / LN2, rel=1e-12)         # nats -> bits
    assert ours["SSIM"] == pytest.approx(VIFB_SSIM / 2, rel=1e-10)        # sum -> mean over sources
    assert ours["Q_CB"] == pytest.approx(VIFB_Q_CB, rel=1e-10)
    # SF / AG differ only in the normaliser (documented): VIFB divides by M*N and (M-1)(N-1)
    m = n = 128
    assert ours["SF"] * math.sqrt((n - 1) / n) == pytest.approx(VIFB_SF, rel=1e-12)
    assert ours["AG"] * m * n / ((m - 1) * (n - 1)) == pytest.approx(VIFB_AG, rel=1e-12)


def test_matches_cddfuse(ours):
    assert ours["EN"] == pytest.approx(CDD_EN, rel=1e-12)
    assert ours["SD"] == pytest.approx(CDD_SD, rel=1e-12)
    assert ours["SF"] == pytest.approx(CDD_SF, rel=1e-12)
    assert ours["AG"] == pytest.approx(CDD_AG, rel=1e-12)
    assert ours["MI"] == pytest.approx(CDD_MI / LN2, rel=1e-12)
    assert ours["PSNR"] == pytest.approx(CDD_PSNR, rel=1e-12)
    assert ours["VIF"] == pytest.approx(CDD_VIFF / 2, rel=1e-10)


def test_q_g_zero_gradient_conventions_documented(ours):
    # CDDFuse and VIFB agree with each other, not with MATR, because of their alpha = pi/2 and
    # G = g_F conventions; the difference is small but above numerical noise.
    assert CDD_QABF == pytest.approx(VIFB_QABF, rel=1e-9)
    assert abs(ours["Q_G"] - CDD_QABF) > 1e-3
    assert CDD_QABF_IDENT > Q_G_IDENTITY


def test_q_te_reference_form_and_swap(pair, ours):
    a, b, f = pair
    # the reference tsallis.m (swapped marginals) is reproduced exactly by the swap option
    assert tsallis_mutual_information(a, f, Q, swap_marginals=True) == pytest.approx(MATR_T_AF, rel=1e-12)
    assert tsallis_mutual_information(b, f, Q, swap_marginals=True) == pytest.approx(MATR_T_BF, rel=1e-12)
    assert tsallis_mutual_information(a, b, Q, swap_marginals=True) == pytest.approx(MATR_T_AB, rel=1e-12)
    assert q_te_liu_reference([a, b], f) == pytest.approx(MATR_Q_TE, rel=1e-12)
    cvejic = (tsallis_mutual_information(a, f, 1.85, swap_marginals=True)
              + tsallis_mutual_information(b, f, 1.85, swap_marginals=True))
    assert cvejic == pytest.approx(MATR_TE_CVEJIC, rel=1e-10)   # the unbounded variant
    # our Q_TE uses the correct marginals: it equals the reference formula with the swap undone
    assert ours["Q_TE"] == pytest.approx(q_te_liu_reference([a, b], f, swap_marginals=False), rel=1e-12)
    assert abs(ours["Q_TE"] - MATR_Q_TE) > 0.1
    # ... and coincides with the reference where the swap cannot matter (identical images)
    assert fusion_metrics_2d([a, a], a, metrics=["Q_TE"])["Q_TE"] == pytest.approx(MATR_Q_TE_IDENT, rel=1e-12)


def test_identity_values_match_references(pair):
    a, _, _ = pair
    r = fusion_metrics_2d([a, a], a)
    assert r["Q_G"] == pytest.approx(MATR_Q_G_IDENT, rel=1e-12)
    assert r["Q_MI"] == pytest.approx(MATR_Q_MI_IDENT, rel=1e-12)
    assert r["Q_NCIE"] == pytest.approx(MATR_Q_NCIE_IDENT, rel=1e-12)
    assert r["VIF"] == pytest.approx(CDD_VIFF_IDENT / 2, rel=1e-12)


# -------------------------------------------------------------------------------------------------
# hand-computed values on tiny images
# -------------------------------------------------------------------------------------------------


def tiny():
    """A: left half 0, right half 1; B: top half 0, bottom half 1; F = (A + B)/2 (0, 1/2, 1)."""
    a = np.array([[0, 0, 1, 1]] * 4, dtype=float)
    b = a.T.copy()
    return a, b, (a + b) / 2


def test_tiny_hand_values():
    a, b, f = tiny()
    r = fusion_metrics_2d([a, b], f, metrics=["MI", "Q_MI", "EN", "SD", "SF", "AG", "PSNR", "Q_TE", "Q_NCIE"])
    # H(A) = H(B) = 1 bit; F has grey levels 0, 128, 255 with p = 1/4, 1/2, 1/4 -> H(F) = 1.5 bits;
    # (A, F) has 4 equiprobable cells -> H(A, F) = 2, MI(A, F) = 1 + 1.5 - 2 = 0.5; same for B.
    assert r["EN"] == pytest.approx(1.5)
    assert r["MI"] == pytest.approx(1.0)
    assert r["Q_MI"] == pytest.approx(2 * (0.5 / 2.5 + 0.5 / 2.5))          # 0.8
    # 0-255 scale: F = 0, 127.5, 127.5, 255 on four 2x2 quadrants; mean 127.5, half the pixels
    # deviate by 127.5 -> SD = 127.5 / sqrt(2)
    assert r["SD"] == pytest.approx(127.5 / math.sqrt(2))
    # each row / column has one jump of 127.5 among 3 forward differences
    assert r["SF"] == pytest.approx(math.sqrt(2 * 127.5 ** 2 / 3))
    # central differences 63.75 at the two middle columns / rows: 4 pixels with both (63.75),
    # 8 with one (63.75/sqrt 2), 4 with none
    assert r["AG"] == pytest.approx((4 * 63.75 + 8 * 63.75 / math.sqrt(2)) / 16)
    # MSE(A, F) = MSE(B, F) = 127.5^2 / 2 -> PSNR = 10 log10(255^2 / (127.5^2 / 2)) = 10 log10 8
    assert r["PSNR"] == pytest.approx(10 * math.log10(8))
    # Tsallis: p(a, f) = 1/4 on cells whose marginal products are 1/8, 1/4, 1/4, 1/8;
    # A and B are independent (I_q(A, B) = 0) and H(A)^q = H(B)^q = 1
    s = 2 * 0.25 ** Q * 0.125 ** (1 - Q) + 2 * 0.25
    i_af = (1 - s) / (1 - Q)
    assert tsallis_mutual_information(a, f, Q) == pytest.approx(i_af)
    assert tsallis_mutual_information(a, b, Q) == pytest.approx(0.0, abs=1e-15)
    assert r["Q_TE"] == pytest.approx(2 * i_af / (1 + 1 + 0))
    # NCIE: NCC(A, F) = NCC(B, F) = 0.5 / 8, NCC(A, B) = 0 -> eigenvalues 1, 1 +- c sqrt 2
    c = 0.5 / 8
    lam = np.array([1.0, 1 + c * math.sqrt(2), 1 - c * math.sqrt(2)]) / 3
    assert r["Q_NCIE"] == pytest.approx(1 + np.sum(lam * np.log2(lam)) / 8)


def test_tiny_mask_and_rounding():
    a, b, f = tiny()
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True                       # only the left half: A is constant there
    r = fusion_metrics_2d([a, b], f, mask=mask, metrics=["MI", "EN"])
    # inside the mask F takes 0 (top) and 128 (bottom) = B's two levels, A is constant
    assert r["EN"] == pytest.approx(1.0)
    assert r["MI"] == pytest.approx(0.0 + 1.0)
    # 0.5 * 255 = 127.5 rounds to 128 (round half to even), 0.4 * 255 = 102
    g = np.full((4, 4), 0.5)
    g[:2] = 0.4
    assert fusion_metrics_2d([g, g], g, metrics=["EN"])["EN"] == pytest.approx(1.0)


# -------------------------------------------------------------------------------------------------
# identical inputs give each metric's maximum
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["volume", "slice"])
def test_identical_inputs_give_maximum(head, mode):
    a, b, mask = head
    r = fusion_metrics([a, a], a, mask, mode=mode)
    assert r["Q_MI"] == pytest.approx(2.0)
    assert r["Q_G"] == pytest.approx(Q_G_IDENTITY) and Q_G_IDENTITY == pytest.approx(0.97479, abs=1e-5)
    assert r["MI"] == pytest.approx(2 * r["EN"])
    assert r["VIF"] == pytest.approx(1.0, abs=1e-9)
    assert r["SSIM"] == pytest.approx(1.0)
    assert r["PSNR"] == math.inf
    assert r["Q_CB"] == pytest.approx(1.0)
    assert r["Q_CV"] == 0.0
    if mode == "volume":
        # closed forms at identity: NCIE from H = EN; Q_TE = 2 I / (2 H^q + I), I = I_q(A, A)
        c = r["EN"] / 8
        lam = np.array([1 + 2 * c, 1 - c, 1 - c]) / 3
        assert r["Q_NCIE"] == pytest.approx(1 + np.sum(lam * np.log2(lam)) / 8)
        i_aa = tsallis_mutual_information(a[mask], a[mask], Q)
        assert r["Q_TE"] == pytest.approx(2 * i_aa / (2 * r["EN"] ** Q + i_aa))
    # any other fused image scores lower (higher for Q_CV)
    rng = np.random.default_rng(3)
    for other in (0.5 * (a + b), np.clip(a + 0.02 * rng.standard_normal(a.shape), 0, 1)):
        s = fusion_metrics([a, a], other, mask, mode=mode, metrics=PAPER_METRICS + ("SSIM", "PSNR", "Q_CB", "Q_CV"))
        for k, v in s.items():
            assert (v < r[k]) if HIGHER_IS_BETTER[k] else (v > r[k]), k


# -------------------------------------------------------------------------------------------------
# monotone fall with noise
# -------------------------------------------------------------------------------------------------
FIDELITY = ("Q_MI", "Q_TE", "Q_NCIE", "Q_G", "MI", "VIF", "SSIM", "PSNR", "Q_CB", "Q_CV")


@pytest.mark.parametrize("mode", ["volume", "slice"])
def test_metrics_fall_monotonically_with_noise(head, mode):
    """F = source A + increasing Gaussian noise (fixed seed), sources A and B: every fidelity
    metric gets worse at each step. (EN, SD, SF, AG measure activity and rise with noise.)"""
    a, b, mask = head
    noise = np.random.default_rng(1).standard_normal(a.shape)
    rows = [fusion_metrics([a, b], np.clip(a + s * noise, 0, 1), mask, mode=mode)
            for s in (0.0, 0.01, 0.03, 0.1, 0.3)]
    for k in FIDELITY:
        v = np.array([r[k] for r in rows])
        d = np.diff(v) if HIGHER_IS_BETTER[k] else -np.diff(v)
        assert np.all(d < 0), (k, v)
    for k in ("SD", "SF", "AG"):
        assert np.all(np.diff([r[k] for r in rows]) > 0), k


# -------------------------------------------------------------------------------------------------
# N sources, masks, modes
# -------------------------------------------------------------------------------------------------


def test_three_sources(head):
    a, b, mask = head
    c = np.clip(0.8 * a + 0.2 * b, 0, 1)
    f = (a + b + c) / 3
    r3 = fusion_metrics([a, b, c], f, mask)
    assert r3.n_sources == 3
    assert all(np.isfinite(v) for v in r3.values())
    r2 = fusion_metrics([a, b], f, mask)
    rc = fusion_metrics([c, c], f, mask)
    # sums over sources
    assert r3["MI"] == pytest.approx(r2["MI"] + rc["MI"] / 2)
    assert r3["Q_MI"] == pytest.approx(r2["Q_MI"] + rc["Q_MI"] / 2)
    # means over sources
    for k in ("VIF", "SSIM"):
        assert r3[k] == pytest.approx((2 * r2[k] + rc[k]) / 3)
    # identical sources: the N-source forms keep their maxima
    ri = fusion_metrics([a, a, a], a, mask, metrics=["Q_MI", "Q_TE", "Q_G", "VIF", "SSIM", "Q_CB", "Q_CV"])
    r2i = fusion_metrics([a, a], a, mask, metrics=["Q_TE"])
    assert ri["Q_MI"] == pytest.approx(3.0)
    assert ri["Q_TE"] == pytest.approx(r2i["Q_TE"])
    assert ri["Q_G"] == pytest.approx(Q_G_IDENTITY)
    assert (ri["VIF"], ri["SSIM"], ri["Q_CB"], ri["Q_CV"]) == pytest.approx((1.0, 1.0, 1.0, 0.0), abs=1e-9)


@pytest.mark.parametrize("mode", ["volume", "slice"])
def test_mask_excludes_background(head, mode):
    a, b, mask = head
    f = 0.5 * (a + b)
    hist = ["MI", "Q_MI", "Q_TE", "Q_NCIE", "EN"]
    r = fusion_metrics([a, b], f, mask, mode=mode, metrics=hist)
    rng = np.random.default_rng(7)
    a2, b2, f2 = (np.where(mask, x, rng.random(x.shape)) for x in (a, b, f))
    r2 = fusion_metrics([a2, b2], f2, mask, mode=mode, metrics=hist)
    for k in hist:
        assert r2[k] == pytest.approx(r[k], rel=1e-12), k
    # without the mask the zero background changes the numbers several-fold (the documented trap)
    r0 = fusion_metrics([a, b], f, None, mode=mode, metrics=hist)
    assert r0["EN"] < 0.7 * r["EN"]


def test_mask_none_equals_full_mask(head):
    a, b, _ = head
    f = 0.5 * (a + b)
    full = np.ones(a.shape, bool)
    r1 = fusion_metrics([a, b], f, None)
    r2 = fusion_metrics([a, b], f, full)
    for k in FUSION_METRICS:
        assert r1[k] == pytest.approx(r2[k], rel=1e-12), k


def test_slice_mode_is_mean_of_2d_metrics(head):
    a, b, mask = head
    a, b, mask = a[:, :, 8:14], b[:, :, 8:14], mask[:, :, 8:14]
    mask = mask.copy()
    mask[:, :, 0] = False
    mask[40:45, 40:45, 0] = True           # 25 voxels < MIN_SLICE_VOXELS: slice 0 is skipped
    f = 0.5 * (a + b)
    r = fusion_metrics([a, b], f, mask, mode="slice")
    assert r.n_slices == 5 and MIN_SLICE_VOXELS > 25
    per = [fusion_metrics_2d([a[:, :, z], b[:, :, z]], f[:, :, z], mask[:, :, z]) for z in range(1, 6)]
    for k in FUSION_METRICS:
        assert r[k] == pytest.approx(np.mean([p[k] for p in per]), rel=1e-10), k
    # a lower threshold brings slice 0 back
    assert fusion_metrics([a, b], f, mask, mode="slice", metrics=["EN"], min_slice_voxels=10).n_slices == 6


def test_results_are_labelled(head):
    a, b, mask = head
    f = 0.5 * (a + b)
    rv = fusion_metrics([a, b], f, mask, mode="volume", metrics=["Q_G", "MI"])
    rs = fusion_metrics([a, b], f, mask, mode="slice", metrics=["Q_G", "MI"])
    assert isinstance(rv, dict) and isinstance(rv, FusionMetricsResult)
    assert rv.mode == "volume" and rv.n_slices is None
    assert rs.mode == "slice" and rs.n_slices == int((mask.sum(axis=(0, 1)) >= MIN_SLICE_VOXELS).sum())
    assert set(rv.labelled()) == {"Q_G[volume]", "MI[volume]"}
    assert set(rs.labelled()) == {"Q_G[slice]", "MI[slice]"}
    assert "3-D" in rv.definitions["Q_G"] and "2-D" in rs.definitions["Q_G"]
    assert "volume" in repr(rv)
    assert rv["Q_G"] != rs["Q_G"]
    assert all(isinstance(v, float) for v in rv.values())
    assert fusion_metrics_2d([a[:, :, 12], b[:, :, 12]], f[:, :, 12]).mode == "slice"


def test_metric_selection_and_aliases(head):
    a, b, mask = head
    r = fusion_metrics([a, b], a, mask, metrics=["q_mi", "QABF", "vif"])
    assert list(r) == ["Q_MI", "Q_G", "VIF"]
    r = fusion_metrics(np.stack([a, b]), a, mask, metrics="EN")
    assert list(r) == ["EN"]


# -------------------------------------------------------------------------------------------------
# errors
# -------------------------------------------------------------------------------------------------


def test_errors():
    x = np.random.default_rng(0).random((20, 20, 5))
    with pytest.raises(ValueError, match="shape"):
        fusion_metrics([x, x[:, :, :4]], x)
    with pytest.raises(ValueError, match="shape"):
        fusion_metrics([x, x], x[:10])
    with pytest.raises(ValueError, match="at least 2"):
        fusion_metrics([x], x)
    with pytest.raises(ValueError, match="unknown fusion metric"):
        fusion_metrics([x, x], x, metrics=["Q_XYZ"])
    with pytest.raises(ValueError, match="mode"):
        fusion_metrics([x, x], x, mode="axial")
    with pytest.raises(ValueError, match="3-D"):
        fusion_metrics([x[:, :, 0], x[:, :, 0]], x[:, :, 0])
    with pytest.raises(ValueError, match="2-D"):
        fusion_metrics_2d([x, x], x)
    with pytest.raises(ValueError, match="mask"):
        fusion_metrics([x, x], x, mask=np.ones((20, 20, 4), bool))
    with pytest.raises(ValueError, match="empty"):
        fusion_metrics([x, x], x, mask=np.zeros(x.shape, bool))
    with pytest.raises(ValueError, match="NaN"):
        y = x.copy()
        y[0, 0, 0] = np.nan
        fusion_metrics([x, x], y)
    small = np.zeros(x.shape, bool)
    small[5:8, 5:8, 2] = True
    with pytest.raises(ValueError, match="slice mode"):
        fusion_metrics([x, x], x, mask=small, mode="slice")


def test_too_small_for_window_metrics_gives_nan():
    x = np.random.default_rng(0).random((8, 8, 8))
    r = fusion_metrics([x, x * 0.5], x, metrics=["VIF", "SSIM", "Q_G", "MI"])
    assert math.isnan(r["VIF"]) and math.isnan(r["SSIM"])       # windows of 17 / 11 do not fit
    assert np.isfinite(r["Q_G"]) and np.isfinite(r["MI"])


# -------------------------------------------------------------------------------------------------
# full-size run time
# -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_volume_all_metrics_finite():
    """Every metric on a BraTS-sized volume, both modes (timings: benchmarks/, not here)."""
    shape = (240, 240, 155)
    a, b, mask = phantom(shape, seed=5)
    f = 0.5 * (a + b)
    for mode in ("volume", "slice"):
        r = fusion_metrics([a, b], f, mask, mode=mode)
        assert all(np.isfinite(v) for v in r.values()), r
