"""The fast paths give the results of the plain ones: fused attention at inference, per-region
restoring, post-processing inside the segmentation's bounding box, only the asked-for heads,
prefetched training batches. Plus a memory bound for the original-grid work of ``predict_case``
(numpy allocations, counted by tracemalloc; no timings here — ``benchmarks/`` times things)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from conftest import tiny_inference_model, tiny_model_config, tiny_prepared_cases
from m2cofs.data.labels import get_convention
from m2cofs.data.preprocess import CaseMeta, PreparedCase, restore
from m2cofs.inference import (_postprocess_box, plan_trunk_tiles, postprocess_regions, predict_array, predict_case,
                              prob_to_regions)
from m2cofs.models import M2CoFSNet

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
    model = tiny_inference_model()
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


@pytest.mark.parametrize("head", ["image", "weights"])
def test_predict_array_runs_only_the_asked_for_heads(head):
    model = tiny_inference_model(extra=[f"model.fusion_head={head}"])
    fusion_keys = {"fused"} if head == "image" else {"fused", "fusion_weights"}
    calls = {"fusion_head": 0, "seg_head": 0}
    for name in calls:
        getattr(model.net, name).register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls[n] + 1))
    image = np.random.default_rng(0).random((2, 66, 32, 32)).astype(np.float32)
    out = predict_array(model, image, tasks=["fusion"])
    assert set(out) == fusion_keys and calls["seg_head"] == 0 and calls["fusion_head"] > 0
    both = predict_array(model, image)
    assert set(both) == fusion_keys | {"seg_prob"} and both["seg_prob"].shape == (3, 66, 32, 32)
    for k in fusion_keys:
        np.testing.assert_allclose(both[k], out[k], rtol=1e-5, atol=1e-6)  # same Φ, F, ψ either way


def test_trunk_tiles_cover_the_volume_once_on_the_window_grid():
    shape, align, halo = (192, 160, 80), 8, 24
    for budget in (10**7, 800_000, 100_000):
        tiles = plan_trunk_tiles(shape, align, halo, budget)
        seen = np.zeros(shape, np.int32)
        for src, inner, dst in tiles:
            seen[dst] += 1
            assert all(d.start % align == 0 for d in dst)  # Swin windows on the volume's grid
            assert all(i.stop - i.start == d.stop - d.start and d.start - s.start == i.start
                       for s, i, d in zip(src, inner, dst))
            # up to `halo` voxels of context on every side, as far as the volume goes
            assert all(d.start - s.start == min(halo, d.start) and s.stop - d.stop == min(halo, n - d.stop)
                       for s, d, n in zip(src, dst, shape))
        assert (seen == 1).all()
        for ax, n in enumerate(shape):  # an axis is split only where that shortens the sources along it
            if len({dst[ax].start for _, _, dst in tiles}) > 1:
                assert max(src[ax].stop - src[ax].start for src, _, _ in tiles) < n
        sizes = [int(np.prod([s.stop - s.start for s in src])) for src, _, _ in tiles]
        if budget == 10**7:
            assert len(tiles) == 1
        elif budget == 800_000:
            assert len(tiles) > 1 and max(sizes) <= budget
        else:  # out of reach: cores stop at twice the halo rather than drown in halos
            assert max(sizes) > budget
            assert min(d.stop - d.start for _, _, dst in tiles for d, n in zip(dst, shape) if d.stop < n) >= 2 * halo
    # paper-like margins on a 1 mm brain grid: splitting would make every source the whole volume
    assert len(plan_trunk_tiles((252, 252, 168), 14, 70, 128**3)) == 1
    with pytest.raises(ValueError, match="multiple"):
        plan_trunk_tiles((90, 80, 40), align, halo, 10**7)


@pytest.mark.parametrize("depths", ["[1,1]", "[2]"])  # [2]: a block with shifted windows
def test_volume_trunk_tiles_give_the_one_pass_result(depths):
    """trunk="volume": Φ → F → ψ tile by tile equals one pass over the whole (padded) volume, and
    φ then runs in the sliding window over those features."""
    heads = "[2,2]" if depths == "[1,1]" else "[2]"
    model = tiny_inference_model(extra=[f"model.depths={depths}", f"model.num_heads={heads}"])
    image = np.random.default_rng(1).random((2, 150, 75, 37)).astype(np.float32)
    align, halo = model.net.trunk_geometry()
    assert (align, halo) == ((8, 24) if depths == "[1,1]" else (8, 32))
    one = predict_array(model, image, trunk="volume")
    tiled = predict_array(model, image, trunk="volume", tile_voxels=300_000)
    assert len(plan_trunk_tiles((152, 80, 40), align, halo, 300_000)) > 1
    for k in ("fused", "seg_prob"):
        np.testing.assert_allclose(tiled[k], one[k], rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        x = torch.nn.functional.pad(torch.from_numpy(image)[None], (0, 3, 0, 5, 0, 2))
        direct = model.net.fusion_head(model.net.trunk(x))[0, 0, :150, :75, :37].numpy()
    np.testing.assert_allclose(one["fused"], direct, rtol=1e-4, atol=1e-5)
    window = predict_array(model, image)
    assert window["seg_prob"].shape == one["seg_prob"].shape == (3, 150, 75, 37)
    with pytest.raises(ValueError, match="trunk"):
        predict_array(model, image, trunk="tiles")


def test_volume_trunk_runs_phi_and_psi_once_per_tile():
    model = tiny_inference_model()
    calls = {"encoders": 0, "fusion_head": 0, "seg_head": 0}
    model.net.encoders[0].register_forward_hook(lambda m, i, o: calls.__setitem__("encoders", calls["encoders"] + 1))
    for name in ("fusion_head", "seg_head"):
        getattr(model.net, name).register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls[n] + 1))
    image = np.random.default_rng(0).random((2, 66, 32, 32)).astype(np.float32)
    out = predict_array(model, image, tasks=["fusion"], trunk="volume")
    assert set(out) == {"fused"} and calls == {"encoders": 1, "fusion_head": 1, "seg_head": 0}
    both = predict_array(model, image, trunk="volume")
    assert set(both) == {"fused", "seg_prob"} and calls["encoders"] == 2 and calls["seg_head"] == 1  # 2 windows, 1 batch
    np.testing.assert_allclose(both["fused"], out["fused"], rtol=1e-5, atol=1e-6)


def test_original_grid_memory_is_a_few_bytes_per_voxel(monkeypatch):
    """predict_case's work on the original grid (resampling, thresholds, post-processing,
    decoding) allocates under 12 bytes per original voxel beyond the fused volume and the label
    map it returns; restoring the three region probabilities as float32 alone would take 12."""
    import m2cofs.inference as inference

    model = tiny_inference_model()
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


# ------------------------------------------------------------------------------------ training
def _loop_run(run_dir, workers=0, channels_last=None, stop_after=None):
    from m2cofs.data.labels import CONVENTIONS
    from m2cofs.training.distributed import DistInfo
    from m2cofs.training.engine import LoopSettings, run_loop
    from m2cofs.training.patches import PatchDataset
    from m2cofs.training.stage1_independent import SegmentationTask

    tiny = tiny_model_config(fusion_head="image")
    cases = tiny_prepared_cases(36)
    torch.manual_seed(0)
    net = M2CoFSNet(2, 3, tiny, (32, 32, 32))
    task = SegmentationTask(net, si_xi=1e-3)
    ds = PatchDataset(cases, CONVENTIONS["brats2017"], (32, 32, 32), samples_per_case=3, seed=5, stage_key=2)
    s = LoopSettings(epochs=1, batch_size=2, lr=1e-3, checkpoint_every=100, seed=5, progress=False, workers=workers,
                     channels_last=channels_last, stop_after_steps=stop_after)
    result = run_loop("perf_test", task, ds, s, run_dir, DistInfo(0, 1), stage_key=2, resume=stop_after is None and
                      (run_dir / "checkpoints" / "perf_test.pt").exists())
    return result, net


def test_prefetched_batches_train_exactly_like_plain_ones(tmp_path):
    """Batches cut by the prefetch thread (workers 0) or by a worker process give the same
    losses and weights; the loop reports its data wait and voxel throughput."""
    res_thread, net_thread = _loop_run(tmp_path / "a", workers=0)
    res_worker, net_worker = _loop_run(tmp_path / "b", workers=1)
    assert [r["loss"] for r in res_thread.history] == [r["loss"] for r in res_worker.history]
    for (k, a), b in zip(net_thread.state_dict().items(), net_worker.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert res_thread.steps == 3 and res_thread.voxels == 3 * 2 * 32**3
    assert res_thread.step_seconds > 0 and 0 <= res_thread.data_share < 1 and res_thread.voxels_per_second > 0


def test_channels_last_training_matches_and_saves_contiguous(tmp_path):
    """The default layout (channels_last_3d) against the contiguous one: same losses up to
    rounding, and the weights are contiguous again when the loop returns (safetensors needs that)."""
    ref, _ = _loop_run(tmp_path / "a", channels_last=False)
    cl, net = _loop_run(tmp_path / "b", channels_last=True)
    np.testing.assert_allclose([r["loss"] for r in cl.history], [r["loss"] for r in ref.history], rtol=1e-4, atol=1e-5)
    assert all(p.is_contiguous() for p in net.parameters())


def test_prefetch_stops_early_and_passes_errors_on():
    from m2cofs.training.engine import _Prefetch

    assert list(_Prefetch(iter(range(7)))) == list(range(7))
    endless = _Prefetch(iter(range(10**9)), depth=2)
    assert next(endless) == 0
    endless.close()
    assert not endless._thread.is_alive()

    def broken():
        yield 1
        raise ValueError("bad patch")

    feed = _Prefetch(broken())
    assert next(feed) == 1
    with pytest.raises(ValueError, match="bad patch"):
        next(feed)


# ------------------------------------------------------------------------------------ GPU check
def test_gpu_check_script_runs_its_whole_path_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py is only timed on a GPU; here it runs the same path (every stage,
    a full prediction, the table and JSON) on the CPU so that it cannot rot between GPU loans."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--steps", "1", "--size", "40",
                           "--volume", "48,40,32", "--out", str(out), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [s["stage"] for s in res["stages"]] == ["stage0_autoencoder", "stage1_fusion", "stage1_segmentation",
                                                    "stage2_seg_to_fusion", "stage2_fusion_to_seg", "stage3_unification"]
    assert all(s["steps"] >= 1 and s["voxels_per_s"] > 0 for s in res["stages"])
    assert res["predict_volume"] == [48, 40, 32] and res["predict_seconds"] > 0
    assert "| stage3_unification |" in proc.stdout


def test_profile_script_times_every_part_in_both_layouts():
    """benchmarks/profile_parts.py (the profile the speed work started from) keeps running, also
    on a variant given with --set (here a SegResNet head)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "profile_parts.py"
    proc = subprocess.run([sys.executable, str(script), "--repeats", "1", "--top", "3", "--threads", "1",
                           "--set", "model.seg_head=segresnet", "--set", "model.seg_feature_size=8"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == ["encoders Φ (all)", "F (fusion module)",
                                                   "F, concatenating form (before)", "ψ (fusion head)",
                                                   "φ (segresnet head)", "whole network", "SegResNet-16 (reference)"]
    assert all(float(v) > 0 for r in rows for v in r.strip(" |").split(" | ")[1:])
    assert "convolution" in proc.stdout.split("top operators")[1]  # the profile names the dominant op
