"""Dice and HD95 per region: hand-computed values, every label convention, the empty-region rules,
and agreement with MONAI and with an independent scipy implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from m2cofs.data.labels import CONVENTIONS
from m2cofs.metrics.segmentation import (
    SEG_METRICS,
    dice,
    dice_many,
    hd95,
    hd95_penalty,
    region_metrics,
    spacing_from_affine,
)


def cube(shape, lo, size) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


# ----------------------------------------------------------------------------- hand-computed
@pytest.mark.parametrize("axis,k,spacing", [
    (0, 1, (1.0, 1.0, 1.0)),
    (0, 3, (1.0, 1.0, 1.0)),
    (2, 3, (1.0, 1.0, 2.5)),   # anisotropic: the shift is along the 2.5 mm axis
    (1, 2, (0.5, 0.8, 3.0)),
    (2, 1, (0.9, 0.9, 5.0)),
])
def test_shifted_cube(axis, k, spacing):
    n = 10
    gt = cube((24, 24, 24), (6, 6, 6), n)
    pred = np.roll(gt, k, axis=axis)
    # overlap of a cube of side n with itself shifted by k along one axis: n*n*(n-k)
    assert dice(pred, gt) == pytest.approx(2 * n * n * (n - k) / (2 * n ** 3), abs=1e-6)
    assert dice(pred, gt) == pytest.approx((n - k) / n, abs=1e-6)
    # the face that moved (n*n of the 488 boundary voxels, > 5 %) lies k voxels from the other cube's face
    assert hd95(pred, gt, spacing) == pytest.approx(k * spacing[axis], abs=1e-5)


def test_dice_formula_on_overlapping_boxes():
    a = np.zeros((12, 12, 12), bool)
    b = np.zeros((12, 12, 12), bool)
    a[2:8, 2:8, 2:8] = True          # 216 voxels
    b[4:10, 3:9, 2:5] = True         # 108 voxels
    inter = (a & b).sum()            # 4*5*3 = 60
    assert inter == 60
    assert dice(a, b) == pytest.approx(2 * 60 / (216 + 108), abs=1e-6)


def test_hd95_is_symmetric_and_the_larger_directed_percentile():
    gt = cube((30, 30, 30), (5, 5, 5), 10)
    pred = gt.copy()
    pred[5:15, 5:15, 15:21] = True   # the prediction grows by 6 voxels along z
    h1 = hd95(pred, gt, (1, 1, 2))
    h2 = hd95(gt, pred, (1, 1, 2))
    assert h1 == pytest.approx(h2)
    # the P->G direction has the new top face 6 voxels (12 mm) from G's top face
    assert h1 == pytest.approx(12.0, abs=1e-5)


def test_identical_masks():
    gt = cube((16, 16, 16), (3, 4, 5), 6)
    assert dice(gt, gt) == 1.0
    assert hd95(gt, gt, (1, 2, 3)) == 0.0


# ----------------------------------------------------------------------------- empty rules
def test_empty_rules():
    shape, sp = (20, 30, 10), (1.0, 0.5, 3.0)
    empty = np.zeros(shape, bool)
    some = cube(shape, (2, 2, 2), 4)
    diag = math.sqrt((20 * 1.0) ** 2 + (30 * 0.5) ** 2 + (10 * 3.0) ** 2)
    assert hd95_penalty(shape, sp) == pytest.approx(diag)
    # both empty: perfect
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty, sp) == 0.0
    # one empty: Dice 0, HD95 = the penalty (never NaN / inf)
    for p, g in ((empty, some), (some, empty)):
        assert dice(p, g) == 0.0
        assert hd95(p, g, sp) == pytest.approx(diag)
        assert hd95(p, g, sp, penalty=123.0) == 123.0


def test_brats_penalty_is_the_challenge_value():
    assert hd95_penalty((240, 240, 155), (1, 1, 1)) == pytest.approx(373.13, abs=0.01)


def test_region_metrics_reports_penalised_and_empty_regions():
    conv = CONVENTIONS["brats2017"]
    gt = np.zeros((20, 20, 20), np.int16)
    gt[5:10, 5:10, 5:10] = 2          # oedema only: ET and TC empty in the ground truth
    pred = gt.copy()
    pred[6:8, 6:8, 6:8] = 4           # the prediction has a small ET (so ET and TC non-empty)
    s = region_metrics(pred, gt, conv, (1, 1, 1))
    assert s.penalised == ["ET", "TC"] and s.both_empty == []
    row = s.as_row()
    assert list(row) == ["Dice/ET", "Dice/TC", "Dice/WT", "HD95/ET", "HD95/TC", "HD95/WT"]
    assert row["Dice/ET"] == 0.0 and row["Dice/TC"] == 0.0 and row["Dice/WT"] == 1.0
    assert row["HD95/ET"] == pytest.approx(hd95_penalty((20, 20, 20))) == row["HD95/TC"]
    assert row["HD95/WT"] == 0.0
    assert not any(math.isnan(v) for v in row.values())
    # nothing at all in either map: every region perfect
    z = np.zeros_like(gt)
    s = region_metrics(z, z, conv, (1, 1, 1))
    assert s.both_empty == ["ET", "TC", "WT"] and s.penalised == []
    assert s.as_row() == {"Dice/ET": 1.0, "Dice/TC": 1.0, "Dice/WT": 1.0, "HD95/ET": 0.0, "HD95/TC": 0.0, "HD95/WT": 0.0}


# ----------------------------------------------------------------------------- conventions
# Written out here from the BraTS / Decathlon / MRBrainS documentation, independently of labels.py.
REGIONS = {
    "brats2013": {"ET": {4}, "TC": {1, 3, 4}, "WT": {1, 2, 3, 4}},
    "brats2017": {"ET": {4}, "TC": {1, 4}, "WT": {1, 2, 4}},
    "brats2023": {"ET": {3}, "TC": {1, 3}, "WT": {1, 2, 3}},
    "msd": {"ET": {3}, "TC": {2, 3}, "WT": {1, 2, 3}},
    "mrbrains": {"CSF": {1}, "GM": {2}, "WM": {3}},
    "mrbrains9": {"CSF": {5, 6}, "GM": {1, 2}, "WM": {3, 4}},
}


def _np_dice(p, g):
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else 2.0 * (p & g).sum() / s


@pytest.mark.parametrize("name", sorted(REGIONS))
def test_every_convention(name):
    conv = CONVENTIONS[name]
    assert list(conv.regions) == list(REGIONS[name])
    values = sorted(v for v in conv.values if v)
    rng = np.random.default_rng(len(name))
    gt = np.zeros((24, 24, 24), np.int16)
    for i, v in enumerate(values):          # one 4x8x8 block per label value
        gt[2 + 4 * i % 20: 6 + 4 * i % 20, 4 + (i // 5) * 8: 12 + (i // 5) * 8, 6:14] = v
    pred = gt.copy()
    flip = rng.random(gt.shape) < 0.15      # relabel 15 % of the voxels at random
    pred[flip] = rng.choice([0, *values], size=int(flip.sum()))
    s = region_metrics(pred, gt, conv, (1.0, 1.2, 2.0))
    assert s.regions == list(REGIONS[name])
    for r, members in REGIONS[name].items():
        p, g = np.isin(pred, list(members)), np.isin(gt, list(members))
        assert s.dice[r] == pytest.approx(_np_dice(p, g), abs=1e-6), r
        assert s.hd95[r] == pytest.approx(_scipy_hd95(p, g, (1.0, 1.2, 2.0)), abs=1e-4), r
        assert s.voxels_pred[r] == p.sum() and s.voxels_gt[r] == g.sum()
    perfect = region_metrics(gt, gt, conv, (1, 1, 1))
    assert all(v == 1.0 for v in perfect.dice.values()) and all(v == 0.0 for v in perfect.hd95.values())


def test_metric_subset_and_errors():
    conv = CONVENTIONS["brats2023"]
    gt = np.zeros((10, 10, 10), np.int16)
    gt[2:6, 2:6, 2:6] = 3
    assert list(region_metrics(gt, gt, conv, metrics=["Dice"]).as_row(["Dice"])) == ["Dice/ET", "Dice/TC", "Dice/WT"]
    with pytest.raises(ValueError, match="shape"):
        region_metrics(gt, gt[:-1], conv)
    with pytest.raises(ValueError, match="no regions"):
        region_metrics(gt, gt, CONVENTIONS["none"])
    with pytest.raises(ValueError, match="unknown"):
        region_metrics(gt, gt, conv, metrics=["Jaccard"])
    assert SEG_METRICS == ("Dice", "HD95")


def test_spacing_from_affine():
    aff = np.diag([-0.9, -0.9, 3.0, 1.0])
    assert spacing_from_affine(aff) == pytest.approx((0.9, 0.9, 3.0))
    # permuted / oblique axes: the column norms
    rot = np.array([[0, 0, 2.0, 5], [1.5, 0, 0, 1], [0, -0.5, 0, 2], [0, 0, 0, 1]])
    assert spacing_from_affine(rot) == pytest.approx((1.5, 0.5, 2.0))


# ----------------------------------------------------------------------------- references
def _scipy_hd95(p, g, spacing):
    """Independent HD95: boundary voxels (mask minus its erosion), EDT to the other boundary,
    95th percentile (linear interpolation) of each direction, the larger of the two."""
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return hd95_penalty(p.shape, spacing)
    ep = p & ~ndimage.binary_erosion(p)
    eg = g & ~ndimage.binary_erosion(g)
    d_to_g = ndimage.distance_transform_edt(~eg, sampling=spacing)
    d_to_p = ndimage.distance_transform_edt(~ep, sampling=spacing)
    return float(max(np.percentile(d_to_g[ep], 95), np.percentile(d_to_p[eg], 95)))


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_and_scipy_on_random_blobs(seed):
    from monai.metrics import DiceMetric, compute_hausdorff_distance

    shape, sp = (28, 26, 18), (0.8, 1.1, 2.4)
    rng = np.random.default_rng(seed)
    g = ndimage.gaussian_filter(rng.random(shape), 2.0)
    g = g > np.quantile(g, 0.7)
    p = ndimage.binary_dilation(g, iterations=1) ^ (rng.random(shape) < 0.02)
    ours_d, ours_h = dice(p, g), hd95(p, g, sp)
    t = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    ref_d = DiceMetric(include_background=True, reduction="none")(t(p), t(g)).item()
    ref_h = compute_hausdorff_distance(t(p), t(g), include_background=True, percentile=95, spacing=list(sp)).item()
    assert ours_d == pytest.approx(ref_d, abs=1e-6)
    assert ours_d == pytest.approx(_np_dice(p, g), abs=1e-6)
    assert ours_h == pytest.approx(ref_h, abs=1e-5)
    assert ours_h == pytest.approx(_scipy_hd95(p, g, sp), abs=1e-4)


def test_dice_many_matches_per_channel():
    rng = np.random.default_rng(5)
    p = rng.random((3, 9, 9, 9)) < 0.3
    g = rng.random((3, 9, 9, 9)) < 0.3
    g[2] = False
    p[2] = False
    out = dice_many(p, g)
    assert out[2] == 1.0
    for i in range(2):
        assert out[i] == pytest.approx(_np_dice(p[i], g[i]), abs=1e-6)
