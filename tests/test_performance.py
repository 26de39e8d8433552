"""The fast paths give the results of the plain ones: fused attention at inference, per-region
restoring, post-processing inside the segmentation's bounding box, only the asked-for heads,
prefetched training batches. Plus a memory bound for the original-grid work of ``predict_case``
(numpy allocations, counted by tracemalloc; no timings here — ``benchmarks/`` times things)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from m2cofs.config import load_config
from m2cofs.data.labels import get_convention
from m2cofs.data.preprocess import CaseMeta, PreparedCase, restore
from m2cofs.inference import LoadedModel, _postprocess_box, postprocess_regions, predict_array, predict_case, prob_to_regions
from m2cofs.models import M2CoFSNet

TINY = ["model.feature_channels=4", "model.embed_dim=6", "model.num_heads=[2,2]", "model.window_size=4",
        "model.fusion_growth=4", "model.fusion_channels=4", "model.seg_feature_size=12", "model.seg_window_size=2",
        "data.patch_size=[64,32,32]", "inference.sw_batch_size=2"]


def _tiny_model(tasks=("fusion", "segmentation")) -> LoadedModel:
    cfg = load_config("lite", overrides=TINY)
    torch.manual_seed(0)
    net = M2CoFSNet(2, 3, cfg.model, tuple(cfg.data.patch_size)).eval()
    meta = {"tasks": list(tasks), "modalities": ["t1ce", "flair"], "regions": ["ET", "TC", "WT"],
            "label_convention": "brats2013"}
    return LoadedModel(net, meta, cfg, None)


def _meta(original, box, shape) -> CaseMeta:
    """A case read from an LPS-like file: x flipped, y and z swapped on the way to RAS; cropped to
    ``box`` (canonical space) and resampled to ``shape``."""
    ornt = [[0, -1], [2, 1], [1, 1]]
    canonical = [original[0], original[2], original[1]]
    assert all(0 <= lo < hi <= n for (lo, hi), n in zip(box, canonical))
    return CaseMeta(id="c", modalities=["t1ce", "flair"], original_shape=list(original),
                    original_affine=np.diag([-1.0, 1.0, 1.0, 1.0]).tolist(), ornt=ornt, canonical_shape=canonical,
                    canonical_affine=np.eye(4).tolist(), crop_box=[list(b) for b in box],
                    cropped_shape=[hi - lo for lo, hi in box], shape=list(shape), affine=np.eye(4).tolist(),
                    spacing=[2.0, 2.0, 2.0])


def test_inference_attention_path_matches_training_path():
    """Under inference_mode the Swin attention runs as fused SDPA; same outputs as with autograd."""
    model = _tiny_model()
    x = torch.rand(2, 2, 64, 32, 32)
    with torch.inference_mode():
        fast = model.net(x)
    slow = model.net(x)  # autograd on: MONAI's explicit softmax(QKᵀ)V
    for k in fast:
        torch.testing.assert_close(fast[k], slow[k].detach(), rtol=1e-4, atol=1e-5)


def test_prob_to_regions_equals_thresholded_restore():
    rng = np.random.default_rng(0)
    box = ((3, 37), (2, 30), (2, 34))
    for shape in ((17, 14, 16), (34, 28, 32)):  # resampled; on the cropped grid (pad + reorient only)
        meta = _meta((40, 36, 30), box, shape)
        prob = rng.random((3, *shape)).astype(np.float32)
        expected = (restore(prob, meta, "prob", fill=0.0) > 0.5).astype(np.uint8)
        got = prob_to_regions(prob, meta)
        assert got.dtype == np.uint8 and got.shape == expected.shape == (3, 40, 36, 30)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_postprocess_in_bounding_box_equals_whole_volume(seed):
    rng = np.random.default_rng(seed)
    conv = get_convention("brats2013")
    wt = np.zeros((48, 40, 36), bool)
    for _ in range(6):  # blobs of several sizes, some below 100 mm³
        c = rng.integers(8, 30, 3)
        r = rng.integers(1, 6)
        wt[c[0] - r:c[0] + r, c[1] - r:c[1] + r, c[2] - r:c[2] + r] = True
    wt[40:44, 30:34, 2:6] = True  # two equal largest candidates: the tie must break the same way
    wt[2:6, 2:6, 28:32] = True
    tc = wt & (rng.random(wt.shape) < 0.6)
    et = tc & (rng.random(wt.shape) < 0.5)
    regions = np.stack([et, tc, wt]).astype(np.uint8)
    spacing = (1.0, 1.2, 0.9)
    for keep in (True, False):
        whole = _postprocess_box(regions, conv, spacing, 30.0, keep)
        np.testing.assert_array_equal(postprocess_regions(regions, conv, spacing, 30.0, keep), whole)
    empty = np.zeros_like(regions)
    np.testing.assert_array_equal(postprocess_regions(empty, conv, spacing, 30.0, True), empty)


def test_predict_array_runs_only_the_asked_for_heads():
    model = _tiny_model()
    calls = {"fusion_head": 0, "seg_head": 0}
    for name in calls:
        getattr(model.net, name).register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls[n] + 1))
    image = np.random.default_rng(0).random((2, 70, 36, 34)).astype(np.float32)
    out = predict_array(model, image, tasks=["fusion"])
    assert set(out) == {"fused"} and calls["seg_head"] == 0 and calls["fusion_head"] > 0
    both = predict_array(model, image)
    assert set(both) == {"fused", "seg_prob"} and both["seg_prob"].shape == (3, 70, 36, 34)
    np.testing.assert_allclose(both["fused"], out["fused"], rtol=1e-5, atol=1e-6)  # same Φ, F, ψ either way


def test_original_grid_memory_is_a_few_bytes_per_voxel(monkeypatch):
    """predict_case's work on the original grid (resampling, thresholds, post-processing,
    decoding) allocates under 12 bytes per original voxel beyond the fused volume and the label
    map it returns; restoring the three region probabilities as float32 alone would take 12."""
    import m2cofs.inference as inference

    model = _tiny_model()
    meta = _meta((160, 150, 96), ((10, 150), (5, 91), (8, 136)), (70, 43, 64))
    image = np.zeros((2, *meta.shape), np.float32)
    case = PreparedCase("c", image, np.ones(meta.shape, bool), None, meta)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in meta.shape], indexing="ij"))
    dist = np.sqrt(((grid - np.array([35, 20, 30])[:, None, None, None]) ** 2).sum(0))
    prob = np.stack([dist < 4, dist < 7, dist < 10]).astype(np.float32)  # a tumour: ET ⊂ TC ⊂ WT
    prob[2, 60:62, 5:7, 5:7] = 1.0  # and a speck that post-processing removes
    raw = {"fused": image[0] + 0.5, "seg_prob": prob}
    monkeypatch.setattr(inference, "predict_array", lambda *a, **k: {k2: v.copy() for k2, v in raw.items()})
    tracemalloc.start()
    pred = predict_case(model, case, postprocess=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    voxels = int(np.prod(meta.original_shape))
    returned = pred.fused.nbytes + pred.label.nbytes  # 5 B/voxel
    assert pred.fused.shape == pred.label.shape == tuple(meta.original_shape)
    assert 0 < (pred.label > 0).sum() < 0.02 * voxels and pred.info["postprocess"]
    assert (peak - returned) / voxels < 12, f"{(peak - returned) / voxels:.1f} extra bytes per voxel"
