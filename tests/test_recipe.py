"""The lite recipe of issues #30 and #31: the time budget split per loop, the gains fusion head,
the retention term of the fusion loss, shift- and scale-free intensity scaling, mirror test-time
augmentation, and post-processing that chooses tumour components by evidence, not size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m2cofs.config import BUDGET_LOOPS, load_config
from m2cofs.data.labels import get_convention
from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
from m2cofs.inference.postprocess import postprocess_regions
from m2cofs.losses import FusionLoss, _standardised_contrast, contrast_roles, retention_loss
from m2cofs.models.heads import WeightFusionHead, compose
from m2cofs.training.options import LOOP_NAMES, SEGMENTATION_LOOPS, loop_budgets

EPOCHS = {"stage0": 10, "stage1": 30, "stage2": 12, "stage3": 10}


# ------------------------------------------------------------------------------- the budget
def test_config_spells_the_training_loops_as_the_trainer_does():
    assert list(BUDGET_LOOPS) == LOOP_NAMES


def test_loop_budgets_follow_the_shares_and_give_segmentation_most_of_lite():
    shares = load_config("lite").train.budget_shares
    b = loop_budgets(shares, EPOCHS, [0, 1, 2, 3], 10)
    assert sum(b.values()) == pytest.approx(600.0)
    seg = sum(v for k, v in b.items() if k in SEGMENTATION_LOOPS)
    assert seg / 600.0 >= 0.7  # the floor for the segmentation path
    assert b["stage1_segmentation"] == pytest.approx(600.0 * shares["stage1_segmentation"] / sum(shares.values()))
    # a subset of stages shares the whole budget among its own loops
    sub = loop_budgets(shares, EPOCHS, [1], 2)
    assert set(sub) == {"stage1_fusion", "stage1_segmentation"} and sum(sub.values()) == pytest.approx(120.0)
    # no shares: the epochs' proportions, each stage split evenly over its loops (the old rule)
    old = loop_budgets({k: 0 for k in BUDGET_LOOPS}, EPOCHS, [0, 1, 2, 3], 104)
    assert old["stage0_autoencoder"] == pytest.approx(600.0) and old["stage1_fusion"] == pytest.approx(1800.0)


def test_budget_shares_are_checked_by_name():
    from m2cofs.errors import M2CofsError

    with pytest.raises(M2CofsError, match="budget_shares.stage9"):
        load_config("lite", overrides=["train.budget_shares.stage9=3"])
    with pytest.raises(M2CofsError, match="budget_shares.stage0_autoencoder"):
        load_config("lite", overrides=["train.budget_shares.stage0_autoencoder=-1"])


# ------------------------------------------------------------------------------- fusion
def test_gains_head_starts_at_mean_fusion_and_can_add_the_sources_up():
    head = WeightFusionHead(4, 2, "gains")
    head.zero_output()
    z = torch.rand(1, 4, 8, 8, 8)
    w = head.weights(z)
    assert torch.allclose(w, torch.full_like(w, 0.5))  # 1/N each: mean fusion at the start
    with torch.no_grad():
        head.out.bias.fill_(20.0)  # both gains saturate at 2/N = 1
    x = torch.rand(1, 2, 8, 8, 8)
    fused = compose(head.weights(z), x)
    assert torch.allclose(fused, x.sum(1, keepdim=True), atol=1e-6)  # brighter than either source
    soft = WeightFusionHead(4, 2, "softmax")
    with torch.no_grad():
        soft.out.bias.fill_(20.0)
    assert torch.allclose(soft.weights(z).sum(1), torch.ones(1, 8, 8, 8))  # convex: never above the brightest


def _lesion_batch():
    """Two sources on a 32³ patch: T1ce shows an enhancing core (ET) brighter than the rest of the
    lesion; FLAIR shows the whole lesion (WT) brighter than the brain."""
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.05 * torch.rand(1, 2, 32, 32, 32, generator=g)
    target = torch.zeros(1, 3, 32, 32, 32)
    target[:, 2, 8:24, 8:24, 8:24] = 1  # WT
    target[:, 0, 12:20, 12:20, 12:20] = 1  # ET
    target[:, 1] = target[:, 0]  # TC
    x[:, 0, 12:20, 12:20, 12:20] += 0.5
    x[:, 1, 8:24, 8:24, 8:24] += 0.4
    return x, target


def test_retention_loss_is_zero_only_when_both_contrasts_are_kept():
    x, target = _lesion_batch()
    roles = contrast_roles(["t1ce", "flair"], ["ET", "TC", "WT"])
    assert roles == [(0, "ET", "WT-ET"), (1, "WT", "brain-WT")]
    regions = ["ET", "TC", "WT"]
    has = torch.ones(1)
    copy_t1ce = retention_loss(x[:, :1], x, target, has, roles, regions)
    copy_flair = retention_loss(x[:, 1:], x, target, has, roles, regions)
    mean = retention_loss(x.mean(1, keepdim=True), x, target, has, roles, regions)
    rule = retention_loss(x[:, 1:] + 2 * x[:, :1] ** 3, x, target, has, roles, regions)  # FLAIR + 2·T1ce³
    # copying one source keeps its contrast (term 0) and loses most of the other's
    assert 0.3 < float(copy_t1ce) < 0.51 and 0.3 < float(copy_flair) < 0.51
    assert float(rule) < float(mean) - 0.05  # a per-voxel, non-convex combination keeps more of both
    assert float(mean) <= max(float(copy_t1ce), float(copy_flair))
    scaled = retention_loss(3.0 * x[:, :1] + 7.0, x, target, has, roles, regions)
    assert float(scaled) == pytest.approx(float(copy_t1ce), abs=1e-5)  # no shift or scale changes it
    assert retention_loss(x[:, :1], x, target, torch.zeros(1), roles, regions) is None  # no label, no term
    assert contrast_roles(["t1", "flair"], ["CSF", "GM", "WM"]) == []  # tissue conventions have no lesion


def test_retention_overshoot_penalises_a_contrast_stronger_than_the_source():
    """With ``overshoot`` the term is also > 0 above the source's contrast, by (r − 1) times the
    weight; without, a contrast stronger than the source's costs nothing (today's one-sided term)."""
    x, target = _lesion_batch()
    x[:, 0] += 0.3 * torch.rand(x[:, 0].shape, generator=torch.Generator().manual_seed(1))  # a noisy T1ce
    regions = ["ET", "TC", "WT"]
    roles = contrast_roles(["t1ce", "flair"], regions)[:1]  # T1ce's rim alone
    has = torch.ones(1)
    clean = 0.3 + 0.5 * target[:, :1]  # the rim without T1ce's noise: it stands out more than in T1ce
    brain, et, rest = torch.ones(1, 32, 32, 32), target[:, 0], target[:, 2] - target[:, 0]
    ratio = float(_standardised_contrast(clean[:, 0], et, rest, brain) / _standardised_contrast(x[:, 0], et, rest, brain))
    assert ratio > 1.3
    over = float(retention_loss(clean, x, target, has, roles, regions, overshoot=1.0))
    assert over == pytest.approx(ratio - 1.0, rel=1e-4)
    assert float(retention_loss(clean, x, target, has, roles, regions)) == 0.0
    assert float(retention_loss(clean, x, target, has, roles, regions, overshoot=0.5)) == pytest.approx(over / 2, rel=1e-4)
    assert float(retention_loss(x[:, :1], x, target, has, roles, regions, overshoot=1.0)) == pytest.approx(0.0, abs=1e-6)
    loss = FusionLoss(retention=1.0, modalities=["t1ce", "flair"], regions=regions, overshoot=1.0)
    assert loss(clean, x, target, has)[1]["retention"] > 0.3  # both contrasts: the rim's overshoot, FLAIR's loss


def test_fusion_loss_gradient_pushes_towards_both_contrasts():
    """One step of the retention term on a gains head's weights moves the fused volume's rim
    contrast up when it starts from FLAIR alone."""
    x, target = _lesion_batch()
    loss = FusionLoss(alpha=0.1, ssim=0.0, retention=1.0, modalities=["t1ce", "flair"], regions=["ET", "TC", "WT"])
    logits = torch.zeros(1, 2, 32, 32, 32)
    logits[:, 0] = -6.0  # T1ce weight ≈ 0: FLAIR copied
    logits.requires_grad_(True)
    fused = compose(torch.sigmoid(logits), x)
    total, parts = loss(fused, x, target, torch.ones(1))
    assert parts["retention"] > 0.3
    total.backward()
    inside_et = target[0, 0].bool()
    assert float(logits.grad[0, 0][inside_et].mean()) < 0  # raise T1ce's weight in the enhancing tumour


# ------------------------------------------------------------------------------- normalisation
def test_robust_scaling_is_free_of_shift_and_scale():
    rng = np.random.default_rng(0)
    vol = rng.gamma(4.0, 100.0, (20, 20, 20)).astype(np.float32)
    fg = np.ones_like(vol, bool)
    fg[:2] = False
    cfg = PreprocessConfig(intensity="robust")
    a, _ = scale_intensity(vol, fg, cfg)
    z = (vol - vol[fg].mean()) / vol[fg].std()  # the BraTS-2013 redistribution's z-scoring
    b, _ = scale_intensity(z, fg, cfg)
    c, _ = scale_intensity(0.01 * vol + 50.0, fg, cfg)  # another scanner's offset and scale
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-5)
    p, _ = scale_intensity(vol, fg, PreprocessConfig())
    q, _ = scale_intensity(0.01 * vol + 50.0, fg, PreprocessConfig())
    assert np.abs(p - q).max() > 0.3  # the old default is not: an offset scan looks different


@pytest.mark.real_data
def test_real_case_looks_the_same_raw_and_zscored(real_data):
    """A BraTS-2018 case and the same case z-scored inside the brain (as the BraTS-2013 data were
    redistributed) reach the network alike under lite's scaling."""
    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import preprocess_case

    ds = MultiModalDataset(real_data / "brats2018", modalities=["t1ce", "flair"], preprocess=None,
                           ids=["Brats18_CBICA_ABM_1"])
    case = ds.load_raw(0)
    fg = foreground_mask(case.images, case.mask)
    z = case.images.copy()
    for ch in z:
        ch[fg] = (ch[fg] - ch[fg].mean()) / ch[fg].std()
        ch[~fg] = ch[fg].min() - 1.0  # background below the brain, as in the redistributed data
    import dataclasses

    intensity = load_config("lite").data.intensity
    cfg = PreprocessConfig(spacing=None, intensity=intensity)
    a = preprocess_case(case, cfg).image
    b = preprocess_case(dataclasses.replace(case, images=z), cfg).image
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-3
    # and on the 2 mm grid: the scale comes from the scan's own voxels, and the background takes the
    # brain's low percentile before resampling, so the brain's edge blends alike
    cfg = PreprocessConfig(spacing=(2.0, 2.0, 2.0), intensity=intensity)
    a = preprocess_case(case, cfg).image
    b = preprocess_case(dataclasses.replace(case, images=z), cfg).image
    assert np.abs(a - b).max() < 1e-4


# ------------------------------------------------------------------------------- inference
def test_mirror_tta_averages_the_flipped_pass():
    from conftest import tiny_inference_model

    from m2cofs.inference import predict_array

    plain = tiny_inference_model(tasks=("segmentation",))
    tta = tiny_inference_model(tasks=("segmentation",), extra=["inference.tta_axes=[0]"])
    tta.net.load_state_dict(plain.net.state_dict())
    image = np.random.default_rng(0).uniform(0, 1, (2, 64, 32, 32)).astype(np.float32)
    once = predict_array(plain, image)["seg_prob"]
    flipped = predict_array(plain, np.ascontiguousarray(image[:, ::-1]))["seg_prob"][:, ::-1]
    both = predict_array(tta, image)["seg_prob"]
    np.testing.assert_allclose(both, (once + flipped) / 2, atol=1e-5)
    assert np.abs(both - once).max() > 1e-4  # the network is not symmetric: the mirror pass counts


def _regions(shape=(40, 40, 40)):
    wt = np.zeros(shape, np.uint8)
    tc = np.zeros(shape, np.uint8)
    et = np.zeros(shape, np.uint8)
    wt[2:22, 2:38, 2:38] = 1  # a large false component with no core (a cortex-like band)
    wt[26:36, 26:36, 26:36] = 1  # the tumour: smaller, with a core and enhancement
    tc[28:34, 28:34, 28:34] = 1
    et[29:33, 29:33, 29:33] = 1
    return np.stack([et, tc, wt])


def test_core_selection_keeps_the_tumour_that_size_alone_deletes():
    conv = get_convention("brats2017")
    r = _regions()
    largest = postprocess_regions(r, conv, (1, 1, 1), 10, True, 1.0)
    assert largest[2, 30, 30, 30] == 0  # "keep the largest" throws the tumour away
    core = postprocess_regions(r, conv, (1, 1, 1), 10, True, 1.0, wt_select="core", min_core_mm3=50)
    assert core[2, 30, 30, 30] == 1 and core[2, 10, 10, 10] == 0
    no_core = r.copy()
    no_core[:2] = 0
    kept = postprocess_regions(no_core, conv, (1, 1, 1), 10, True, 1.0, wt_select="core", min_core_mm3=50)
    np.testing.assert_array_equal(kept[2], no_core[2])  # no evidence either way: nothing dropped


def test_small_enhancement_becomes_non_enhancing_core():
    conv = get_convention("brats2017")
    r = _regions()
    out = postprocess_regions(r, conv, (1, 1, 1), 10, True, 1.0, wt_select="core", et_min_mm3=100)
    assert out[0].sum() == 0 and out[1].sum() == r[1].sum()  # 64 mm³ of ET → core, TC unchanged
    keep = postprocess_regions(r, conv, (1, 1, 1), 10, True, 1.0, wt_select="core", et_min_mm3=50)
    assert keep[0].sum() == r[0].sum()


def test_source_skip_hands_the_sources_to_both_heads_through_f():
    """With ``model.source_skip`` F's output ends with the sources themselves (no parameters), so
    the heads read the image beside F's features; Stage 0's autoencoders still reconstruct from
    the encoders' own features (never from the copy of their input)."""
    from m2cofs.models.network import M2CoFSNet

    cfg = load_config("lite").model
    torch.manual_seed(0)
    net = M2CoFSNet(2, 3, cfg, (32, 32, 32))
    assert cfg.source_skip and net.trunk_channels == cfg.fusion_channels + 2
    x = torch.rand(1, 2, 32, 32, 32)
    with torch.no_grad():
        z = net.trunk(x)
        assert z.shape[1] == net.trunk_channels
        torch.testing.assert_close(z[:, -2:], x)  # the sources, unchanged
        c = cfg.feature_channels
        feats = net.encoders[0](x[:, :1])
        assert feats.shape[1] == c + 1 and torch.equal(feats[:, c:], x[:, :1])
        torch.testing.assert_close(net.reconstruct(x)[:, :1], net.decoder(feats[:, :c]))
        out = net(x)
    assert out["seg"].shape == (1, 3, 32, 32, 32) and out["fused"].shape == (1, 1, 32, 32, 32)
