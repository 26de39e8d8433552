"""Inference details that shape the written volumes: detail transfer onto the input grid and the
whole-tumour component rule."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_inference_model

from m2cofs.data.labels import get_convention
from m2cofs.data.loading import Case, foreground_mask
from m2cofs.data.preprocess import PreprocessConfig, apply_intensity_range, preprocess_case, restore
from m2cofs.inference import detail_transfer_wanted, postprocess_regions, transfer_detail


def _case(shape=(48, 44, 40), zooms=(1.0, 1.0, 1.0), seed=0, same=False) -> Case:
    """A head with fine stripes (detail a 2 mm grid cannot hold) in two modalities."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (x**2 + y**2 + z**2) < 0.8
    a = np.where(head, 100 + 40 * (np.sin(9 * np.pi * x) > 0) + rng.normal(0, 2, shape), 0)
    b = a.copy() if same else np.where(head, 80 + 50 * (np.sin(7 * np.pi * y) > 0) + rng.normal(0, 2, shape), 0)
    images = np.stack([a, b]).astype(np.float32)
    return Case(id="c", modalities=["t1ce", "flair"], images=images, affine=np.diag([*zooms, 1.0]), header=None,
                label=None, mask=None, files={})


def test_detail_transfer_gives_back_the_full_resolution_source_exactly():
    """Two identical channels and a fused volume that is just what the model grid holds of them:
    the transferred detail is exactly what the 2 mm grid lost, so the result is the source."""
    pre = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    src = _case(same=True)
    case = preprocess_case(src, pre)
    low = restore(case.image[0], case.meta, "image", fill=0.0)
    out = transfer_detail(low, case, src, pre)
    fg = foreground_mask(src.images)
    expected = apply_intensity_range(src.images[0], fg, case.meta.intensity_range[0], pre)  # the model grid's scale
    inside = src.images[0] > 0
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-5)
    assert np.abs(low[inside] - expected[inside]).max() > 0.2  # the grid alone loses the stripes


def test_detail_transfer_adds_the_stronger_detail_and_nothing_on_the_model_grid():
    pre2 = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    src = _case()
    case = preprocess_case(src, pre2)
    fused = restore(case.image.mean(0), case.meta, "image", fill=0.0)
    out = transfer_detail(fused, case, src, pre2)
    grad = lambda v: sum(np.abs(np.diff(v, axis=a)).sum() for a in range(3))  # noqa: E731
    assert grad(out) > 1.5 * grad(fused)  # the stripes of both sources come back
    # on the model's own grid (no resampling) there is nothing to transfer
    pre1 = PreprocessConfig(spacing=None)
    case1 = preprocess_case(src, pre1)
    fused1 = restore(case1.image.mean(0), case1.meta, "image", fill=0.0)
    np.testing.assert_allclose(transfer_detail(fused1, case1, src, pre1), fused1, atol=1e-6)


def test_detail_transfer_auto_means_a_coarser_model_grid():
    src = _case(zooms=(1.0, 1.0, 3.0))
    assert detail_transfer_wanted("auto", preprocess_case(src, PreprocessConfig(spacing=(2.0, 2.0, 2.0))))
    coarse_in_plane = preprocess_case(src, PreprocessConfig(spacing=(1.0, 1.0, 3.0)))
    assert not detail_transfer_wanted("auto", coarse_in_plane)
    assert detail_transfer_wanted("on", coarse_in_plane) and not detail_transfer_wanted("off", coarse_in_plane)


@pytest.mark.parametrize("fraction, kept", [(1.0, {"big"}), (0.5, {"big", "twin"}), (0.04, {"big", "twin", "small"})])
def test_whole_tumour_components_alike_in_size_are_both_kept(fraction, kept):
    conv = get_convention("brats2013")
    wt = np.zeros((60, 40, 40), bool)
    parts = {"big": (slice(2, 22), slice(5, 25), slice(5, 25)),      # 8000 voxels
             "twin": (slice(30, 49), slice(5, 25), slice(5, 25)),    # 7600: alike in size
             "small": (slice(52, 58), slice(30, 38), slice(30, 38))}  # 384
    for sl in parts.values():
        wt[sl] = True
    regions = np.stack([wt, wt, wt]).astype(np.uint8)
    out = postprocess_regions(regions, conv, (1.0, 1.0, 1.0), 10.0, True, fraction)
    assert {name for name, sl in parts.items() if out[2][sl].all()} == kept
    assert out[2].sum() == sum(wt[parts[k]].sum() for k in kept)
    np.testing.assert_array_equal(out[0], out[2])  # ET, TC clipped to WT


def test_weights_fuse_on_the_input_grid_keeping_full_resolution():
    """Source weights from a 2 mm model grid, applied on the 1 mm input grid: weight one on a
    source gives that source at full resolution (its stripes intact, which the 2 mm grid cannot
    hold); any weights give a convex combination of the scaled sources at every voxel."""
    from m2cofs.inference import compose_on_input_grid

    pre = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    src = _case()
    case = preprocess_case(src, pre)
    fg = foreground_mask(src.images)
    full = [apply_intensity_range(src.images[c], fg, case.meta.intensity_range[c], pre) for c in range(2)]
    one_hot = np.stack([np.ones(case.meta.shape, np.float32), np.zeros(case.meta.shape, np.float32)])
    out = compose_on_input_grid(one_hot, case, src, pre)
    assert out.shape == src.images.shape[1:]
    np.testing.assert_allclose(out[fg], full[0][fg], atol=1e-5)
    rng = np.random.default_rng(1)
    w = rng.uniform(0.1, 1.0, (2, *case.meta.shape)).astype(np.float32)
    w /= w.sum(0)
    out = compose_on_input_grid(w, case, src, pre)
    lo, hi = np.minimum(*full), np.maximum(*full)
    assert np.all(out[fg] >= lo[fg] - 1e-5) and np.all(out[fg] <= hi[fg] + 1e-5)
    assert np.all(out[~fg] == 0)
    grad = lambda v: np.abs(np.diff(v, axis=0)).sum()  # noqa: E731
    assert grad(compose_on_input_grid(one_hot, case, src, pre)) > 1.5 * grad(restore(case.image[0], case.meta, "image"))


# --------------------------------------------------------------- the fused volume guided by the segmentation (#31)
def test_guide_moves_towards_the_rim_source_inside_the_region_only():
    """``max``: fused + gain · s(region) · max(rim − fused, 0): unsmoothed, max(fused, rim) inside
    the region at gain 1 (halfway at 0.5), the fused volume where the rim source is darker or
    outside the region, zero outside the brain, never above the brighter input. ``add``: fused +
    gain · s · rim, wherever rim is. Smoothed, what is added keeps its sum far from the edges, the
    middle of a large region gets it all, and the blur reaches as far in millimetres along a
    coarse axis as along a fine one (fewer voxels)."""
    from m2cofs.inference.fusion_output import guide_fusion

    shape = (40, 40, 20)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    region = np.zeros(shape, bool)
    region[14:26, 14:26, 7:13] = True
    rim = np.full(shape, 0.8, np.float32)
    rim[:, 20:] = 0.1  # darker than the fused volume on this side
    fused = np.full(shape, 0.3, np.float32)
    bright, dark = region.copy(), region.copy()
    bright[:, 20:], dark[:, :20] = False, False
    added = guide_fusion(fused, region, rim, brain, (1, 1, 1), gain=0.5, sigma_mm=0, rule="add")
    np.testing.assert_allclose(added[region], 0.3 + 0.5 * rim[region])
    np.testing.assert_allclose(added[brain & ~region], 0.3)
    sharp = guide_fusion(fused, region, rim, brain, (1, 1, 1), gain=1.0, sigma_mm=0, rule="max")
    np.testing.assert_allclose(sharp[bright], 0.8)
    np.testing.assert_allclose(sharp[dark], 0.3)
    np.testing.assert_allclose(sharp[brain & ~region], 0.3)
    assert np.all(sharp[~brain] == 0) and np.all(sharp <= np.maximum(fused, rim) + 1e-6)
    half = guide_fusion(fused, region, rim, brain, (1, 1, 1), gain=0.5, sigma_mm=0, rule="max")
    np.testing.assert_allclose(half[bright], 0.55)
    rim[:] = 0.8
    soft = guide_fusion(fused, region, rim, brain, (1, 1, 3), gain=1.0, sigma_mm=1.5, rule="max")
    added = np.where(brain, soft - fused, 0)
    assert added.sum() == pytest.approx(0.5 * region.sum(), rel=1e-3)
    assert added[20, 20, 10] == pytest.approx(0.5, rel=1e-3)
    fine, coarse = added[26:30, 20, 10], added[20, 20, 13:17]  # 0.5..3.5 mm past the edge (fine axis), 1.5..10.5 (coarse)
    assert (fine > 0.003).sum() == 4 and (coarse > 0.003).sum() == 1


def test_enhance_adds_only_what_enhances_above_the_regions_median():
    """``enhance``: fused + gain · s · max(rim − median of rim in the region, 0). With the region's
    T1ce 40 % at 0.1, 20 % at 0.5 and 40 % at 0.9 (median 0.5), sharp: + gain · 0.4 where it is 0.9,
    nothing where it is 0.5 or 0.1, nothing outside the region (T1ce bright there too) or the
    brain; a region under GUIDE_MIN_VOXELS voxels in the brain adds nothing; gains above 1 scale it."""
    from m2cofs.inference.fusion_output import GUIDE_MIN_VOXELS, guide_fusion

    shape = (30, 30, 10)
    brain = np.zeros(shape, bool)
    brain[1:-1, 1:-1, 1:-1] = True
    region = np.zeros(shape, bool)
    region[5:25, 10:20, 3:7] = True  # 20 x 10 x 4 = 800 voxels
    rim = np.full(shape, 0.95, np.float32)  # bright outside the region: no median of its own there
    rim[5:13, 10:20, 3:7] = 0.1
    rim[13:17, 10:20, 3:7] = 0.5
    rim[17:25, 10:20, 3:7] = 0.9
    fused = np.full(shape, 0.4, np.float32)
    out = guide_fusion(fused, region, rim, brain, (1, 1, 1), gain=1.0, sigma_mm=0, rule="enhance")
    np.testing.assert_allclose(out[17:25, 10:20, 3:7], 0.8, atol=1e-6)
    np.testing.assert_allclose(out[5:17, 10:20, 3:7], 0.4)
    np.testing.assert_allclose(out[brain & ~region], 0.4)
    assert np.all(out[~brain] == 0)
    twice = guide_fusion(fused, region, rim, brain, (1, 1, 1), gain=2.5, sigma_mm=0, rule="enhance")
    np.testing.assert_allclose(twice[17:25, 10:20, 3:7], 0.4 + 2.5 * 0.4, atol=1e-6)
    tiny = np.zeros(shape, bool)
    tiny[17:17 + GUIDE_MIN_VOXELS // 10 - 1, 10:20, 4] = True
    np.testing.assert_array_equal(guide_fusion(fused, tiny, rim, brain, (1, 1, 1), 1.0, 0, "enhance")[brain], fused[brain])
    with pytest.raises(ValueError, match="unknown guide rule"):
        guide_fusion(fused, region, rim, brain, (1, 1, 1), 1.0, 0, "paint")


def _guided_pair(guide="TC", modalities=("t1ce", "flair"), **guide_options):
    """The same case predicted by a weights-head model without and with the guide."""
    import dataclasses

    from m2cofs.inference import predict_case

    model = tiny_inference_model(extra=["model.fusion_head=weights", "model.fusion_weights=gains"], seed=3)
    model.meta["modalities"] = list(modalities)
    src = dataclasses.replace(_case(), modalities=list(modalities))
    case = preprocess_case(src, PreprocessConfig())
    plain = predict_case(model, case, source=src, postprocess=False, trust=False, threshold=0.6, fusion_guide="none")
    guided = predict_case(model, case, source=src, postprocess=False, trust=False, threshold=0.6, fusion_guide=guide,
                          **guide_options)
    return model, src, case, plain, guided


def test_predict_case_guides_the_fused_volume_by_its_own_tumour_core():
    """The guided volume is the plain one plus T1ce (scaled as the model saw it) times the
    smoothed predicted tumour core of the same pass (the default rule, add); the segmentation is
    unchanged."""
    from m2cofs.data.labels import labels_to_regions
    from m2cofs.inference.fusion_output import guide_fusion

    model, src, case, plain, guided = _guided_pair()
    conv = model.convention
    tc = labels_to_regions(plain.label, conv)[list(conv.regions).index("TC")] > 0
    fg = foreground_mask(src.images)
    assert 0 < (tc & fg).sum() < fg.sum()  # a region in the brain that is neither empty nor all of it
    np.testing.assert_array_equal(guided.label, plain.label)
    t1ce = apply_intensity_range(src.images[0], fg, case.meta.intensity_range[0], model.preprocessing)
    expected = guide_fusion(plain.fused, tc, t1ce, fg, (1, 1, 1), 1.0, 1.5, "add")
    np.testing.assert_allclose(guided.fused, expected, atol=1e-5)
    assert np.abs(guided.fused - plain.fused).max() > 0.1
    assert guided.info["fusion_guide"] == {"region": "TC", "applied": True, "rule": "add", "source": "t1ce", "gain": 1.0,
                                           "sigma_mm": 1.5}
    assert "fusion_guide" not in plain.info


def test_predict_case_takes_the_rule_and_gain_it_is_given():
    """``enhance`` at gain 2 through predict_case is guide_fusion's on the same pass's core."""
    from m2cofs.data.labels import labels_to_regions
    from m2cofs.inference.fusion_output import guide_fusion

    model, src, case, plain, guided = _guided_pair(fusion_guide_rule="enhance", fusion_guide_gain=2.0)
    conv = model.convention
    tc = labels_to_regions(plain.label, conv)[list(conv.regions).index("TC")] > 0
    fg = foreground_mask(src.images)
    t1ce = apply_intensity_range(src.images[0], fg, case.meta.intensity_range[0], model.preprocessing)
    expected = guide_fusion(plain.fused, tc, t1ce, fg, (1, 1, 1), 2.0, 1.5, "enhance")
    np.testing.assert_allclose(guided.fused, expected, atol=1e-5)
    assert np.abs(guided.fused - plain.fused).max() > 0.05
    assert guided.info["fusion_guide"]["rule"] == "enhance" and guided.info["fusion_guide"]["gain"] == 2.0


def test_the_guide_says_why_it_does_not_apply_and_changes_nothing():
    """Without a T1ce among the sources the fused volume is the plain one, and the record says why."""
    *_, plain, guided = _guided_pair(modalities=("t1", "flair"))
    np.testing.assert_array_equal(guided.fused, plain.fused)
    assert guided.info["fusion_guide"]["applied"] is False
    assert "enhancing rim" in guided.info["fusion_guide"]["why"]


def test_fusion_guide_setting_is_checked():
    from m2cofs.config import load_config
    from m2cofs.errors import M2CofsError
    from m2cofs.inference import Predictor

    with pytest.raises(M2CofsError, match="inference.fusion_guide"):
        load_config("lite", overrides=["inference.fusion_guide=NCR"])
    with pytest.raises(M2CofsError, match=r"inference.fusion_guide_gain: must be in \[0, 4\]"):
        load_config("lite", overrides=["inference.fusion_guide_gain=4.5"])
    assert load_config("lite", overrides=["inference.fusion_guide_gain=2"]).inference.fusion_guide_gain == 2
    with pytest.raises(M2CofsError, match="inference.fusion_guide_rule: must be one of add, max, enhance"):
        load_config("lite", overrides=["inference.fusion_guide_rule=swap"])
    with pytest.raises(ValueError, match="fusion_guide must be one of"):
        Predictor(tiny_inference_model(), fusion_guide="NCR", log=None)
    with pytest.raises(ValueError, match=r"fusion_guide_gain must be in \[0, 4\]"):
        Predictor(tiny_inference_model(), fusion_guide_gain=-1, log=None)


# --------------------------------------------------------------- cases matched to the model (#19)
def _reordered(case, order):
    """``case`` with its channels (and their names and intensity ranges) in ``order``."""
    import dataclasses

    from m2cofs.data.preprocess import PreparedCase

    have = case.meta.modalities
    idx = [have.index(m) for m in order]
    ranges = [case.meta.intensity_range[i] for i in idx] if case.meta.intensity_range else []
    meta = dataclasses.replace(case.meta, modalities=list(order), intensity_range=ranges)
    return PreparedCase(case.id, case.image[idx].copy(), case.mask, case.label, meta)


def _with_t2(case):
    """``case`` with a third channel, t2, appended (a noise volume)."""
    import dataclasses

    from m2cofs.data.preprocess import PreparedCase

    extra = np.random.default_rng(1).uniform(0, 1, case.image.shape[1:]).astype(np.float32)
    meta = dataclasses.replace(case.meta, modalities=[*case.meta.modalities, "t2"],
                               intensity_range=[*case.meta.intensity_range, [0.0, 1.0]])
    return PreparedCase(case.id, np.concatenate([case.image, extra[None]]), case.mask, case.label, meta)


def test_predict_case_reorders_swapped_modalities_and_narrows_a_superset():
    """A case in flair, t1ce order (or with a t2 besides) gives the model's t1ce, flair result,
    not the swapped channels' or a bare ValueError."""

    from m2cofs.inference import predict_case

    model = tiny_inference_model()
    case = preprocess_case(_case(), PreprocessConfig())
    ref = predict_case(model, case, postprocess=False)
    assert "notes" not in ref.info
    swapped = predict_case(model, _reordered(case, ["flair", "t1ce"]), postprocess=False)
    np.testing.assert_allclose(swapped.fused, ref.fused, atol=1e-5)
    np.testing.assert_array_equal(swapped.label, ref.label)
    assert "reordered" in swapped.info["notes"][0]
    superset = predict_case(model, _reordered(_with_t2(case), ["t2", "flair", "t1ce"]), postprocess=False)
    np.testing.assert_allclose(superset.fused, ref.fused, atol=1e-5)
    assert "left out t2" in superset.info["notes"][0]


def test_predict_case_names_the_missing_modality():
    import dataclasses

    from conftest import tiny_prepared_cases

    from m2cofs.errors import M2CofsError
    from m2cofs.inference import predict_case

    model = tiny_inference_model()
    case = tiny_prepared_cases(n=1)[0]
    case.meta = dataclasses.replace(case.meta, modalities=["t1ce", "t2"])
    with pytest.raises(M2CofsError) as exc:
        predict_case(model, case)
    msg = str(exc.value)
    assert "needs t1ce, flair" in msg and "has t1ce, t2" in msg and "without flair" in msg and ".dataset(" in msg


def test_predict_case_refuses_other_preprocessing_and_dataset_builds_the_matching_one(tiny_dataset):
    """A case prepared on another grid (or with another intensity scaling) than the model's sidecar
    says is refused with what differs; ``model.dataset(path)`` builds the dataset that fits."""

    from m2cofs.errors import M2CofsError
    from m2cofs.inference import match_case_to_model

    model = tiny_inference_model()
    model.meta["modalities"] = ["flair", "t1ce"]
    model.meta["preprocessing"] = PreprocessConfig(spacing=(2.0, 2.0, 2.0)).to_dict()
    src = _case()
    with pytest.raises(M2CofsError, match=r"grid 1x1x1 mm \(the model's: 2x2x2 mm\).*dataset\("):
        match_case_to_model(model, preprocess_case(src, PreprocessConfig(spacing=(1.0, 1.0, 1.0))))
    with pytest.raises(M2CofsError, match="intensity 'minmax'"):
        match_case_to_model(model, preprocess_case(src, PreprocessConfig(spacing=(2.0, 2.0, 2.0), intensity="minmax")))
    ds = model.dataset(tiny_dataset)
    assert ds.modalities == ["flair", "t1ce"] and ds.preprocess == model.preprocessing
    prepared = ds.prepared(0)
    assert prepared.meta.modalities == ["flair", "t1ce"] and prepared.meta.spacing == pytest.approx([2.0] * 3, rel=0.05)
    case, _, notes = match_case_to_model(model, prepared)
    assert case is prepared and notes == []
    with pytest.raises(M2CofsError, match="come.* from the model"):
        model.dataset(tiny_dataset, modalities=["t1ce", "flair"])
