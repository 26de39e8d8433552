"""ψ reading φ's region probabilities (``model.fusion_reads_seg``): a zero path changes nothing,
a trained one changes only the weights of the sources, inference computes φ before ψ's weights in
both trunk modes, and Stage III trains the path at its own rate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_PRESET, tiny_inference_model, tiny_model_config

from m2cofs.checkpoint import load_model_file, save_model_file
from m2cofs.cli import main
from m2cofs.config import load_config
from m2cofs.errors import M2CofsError
from m2cofs.inference import load_model, predict_array
from m2cofs.models import M2CoFSNet
from m2cofs.models.heads import compose
from m2cofs.training.engine import read_log
from m2cofs.training.pipeline import TrainOptions, train

GAINS = dataclasses.replace(tiny_model_config(), fusion_head="weights", fusion_weights="gains")
READS = ["model.fusion_head=weights", "model.fusion_weights=gains", "model.fusion_reads_seg=true"]


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda m, i, o: calls.__setitem__(0, calls[0] + 1))
    return calls


def _strong_path(net: M2CoFSNet) -> None:
    """A path that moves the weights a lot: region probabilities towards source 0 (T1ce)."""
    with torch.no_grad():
        w = net.fusion_head.seg_path.weight
        w.zero_()
        w[0] = 4.0
        w[1] = -4.0


def test_a_zero_path_gives_todays_output_bit_for_bit_and_skips_phi():
    torch.manual_seed(0)
    plain = M2CoFSNet(2, 3, GAINS, (32, 32, 32)).eval()
    reads = M2CoFSNet(2, 3, dataclasses.replace(GAINS, fusion_reads_seg=True), (32, 32, 32)).eval()
    with torch.no_grad():
        reads.fusion_head.seg_path.weight.fill_(1.0)
    reads.load_state_dict(plain.state_dict())  # strict: a ψ saved without the path loads as a zero path
    with torch.no_grad():  # ψ trained a little: the weights vary per voxel
        for net in (plain, reads):
            torch.manual_seed(1)
            torch.nn.init.normal_(net.fusion_head.out.weight, std=1.0)
    assert not reads.fusion_head.reads_seg and float(reads.fusion_head.seg_path.weight.detach().abs().sum()) == 0.0
    x = torch.rand(1, 2, 32, 32, 32)
    calls = _count_calls(reads.seg_head)
    with torch.no_grad():
        a, b = plain(x), reads(x)
        fused_only = reads(x, tasks=("fusion",))
    assert calls[0] == 1  # the two-task pass only: a zero path needs no φ
    for k in ("fused", "fusion_weights", "seg"):
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(fused_only["fused"], a["fused"])


def test_a_trained_path_moves_only_the_source_weights():
    """With the path, a fusion-only pass runs φ and ψ's weights follow its probabilities; the
    fused volume is still Σ gain_i · source_i with each gain in [0, 1] (two sources): where the
    sources are zero it is zero whatever φ sees."""
    torch.manual_seed(0)
    net = M2CoFSNet(2, 3, dataclasses.replace(GAINS, fusion_reads_seg=True), (32, 32, 32)).eval()
    _strong_path(net)
    assert net.fusion_head.reads_seg
    x = torch.rand(1, 2, 32, 32, 32)
    x[:, :, :8] = 0.0
    calls = _count_calls(net.seg_head)
    with torch.no_grad():
        both = net(x)
        fused_only = net(x, tasks=("fusion",))
        z = net.trunk(x)
        prob = torch.sigmoid(net.seg_head(z))
        expected = compose(net.fusion_head.weights_from_logits(net.fusion_head(z) + net.fusion_head.seg_path(prob)), x)
    assert calls[0] == 3  # the two-task pass, the fusion-only pass, and the check above
    torch.testing.assert_close(both["fused"], expected)
    torch.testing.assert_close(fused_only["fused"], both["fused"])
    w = both["fusion_weights"]
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    # T1ce's gain rose by 4·Σ prob in the logit wherever φ gives probability: more than ψ alone gives
    with torch.no_grad():
        alone = net.fusion_head.weights_from_logits(net.fusion_head(z))
    assert float((w[:, 0] - alone[:, 0]).min()) > 0.0 and float((w[:, 1] - alone[:, 1]).max()) < 0.0
    assert float(both["fused"][:, :, :8].abs().max()) == 0.0
    with pytest.raises(ValueError, match="pass seg_prob"):
        net.fusion_head.fuse(z, x)


def test_a_zero_path_keeps_a_zero_gradient_in_stages_without_phi():
    """Stages before φ exists call ψ without probabilities: the path stays in the graph (DDP sees
    every trained parameter used) with a zero gradient, so Adam leaves it at zero."""
    torch.manual_seed(0)
    net = M2CoFSNet(2, 3, dataclasses.replace(GAINS, fusion_reads_seg=True), (32, 32, 32))
    x = torch.rand(1, 2, 32, 32, 32)
    opt = torch.optim.AdamW(net.fusion_head.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        net.fusion_head.fuse(net.trunk(x), x).square().mean().backward()
        assert net.fusion_head.seg_path.weight.grad is not None
        assert float(net.fusion_head.seg_path.weight.grad.abs().max()) == 0.0
        opt.step()
    assert float(net.fusion_head.seg_path.weight.abs().max()) == 0.0
    assert float(net.fusion_head.out.weight.abs().max()) > 0.0  # ψ itself did train


@pytest.mark.parametrize("overrides, key", [
    (["model.fusion_head=image", "model.fusion_reads_seg=true"], "model.fusion_reads_seg"),
    (["train.seg_path_lr_scale=0"], "train.seg_path_lr_scale"),
])
def test_bad_settings_are_refused(overrides, key):
    with pytest.raises(M2CofsError, match=key.replace(".", r"\.")):
        load_config("lite", overrides=overrides)


def test_both_trunk_modes_run_phi_before_psis_weights():
    """``trunk="volume"``: ψ's logits tile by tile, φ in the windows over F's features, then the
    1×1×1 path from the blended probabilities — the same as doing those steps on the whole
    volume at once; fusion-only calls give the same fused volume as two-task ones, in both modes."""
    model = tiny_inference_model(extra=READS)
    _strong_path(model.net)
    image = np.random.default_rng(1).random((2, 150, 75, 37)).astype(np.float32)
    one = predict_array(model, image, trunk="volume")
    tiled = predict_array(model, image, trunk="volume", tile_voxels=300_000)
    alone = predict_array(model, image, trunk="volume", tasks=["fusion"])
    assert set(alone) == {"fused", "fusion_weights"}
    for k in ("fused", "fusion_weights", "seg_prob"):
        np.testing.assert_allclose(tiled[k], one[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(alone["fused"], one["fused"], rtol=1e-5, atol=1e-6)
    head = model.net.fusion_head
    with torch.inference_mode():
        x = torch.nn.functional.pad(torch.from_numpy(image)[None], (0, 3, 0, 5, 0, 2))
        logits = head(model.net.trunk(x))[:, :, :150, :75, :37]
        w = head.weights_from_logits(logits + head.seg_path(torch.from_numpy(one["seg_prob"])[None]))
    np.testing.assert_allclose(one["fusion_weights"], w[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one["fused"], (w[0].numpy() * image).sum(0), rtol=1e-4, atol=1e-5)
    window = predict_array(model, image)
    window_alone = predict_array(model, image, tasks=["fusion"])
    np.testing.assert_allclose(window_alone["fused"], window["fused"], rtol=1e-5, atol=1e-6)
    # the path matters: without it the same network fuses differently
    with torch.no_grad():
        head.seg_path.weight.zero_()
    assert np.abs(predict_array(model, image, tasks=["fusion"])["fused"] - window["fused"]).max() > 1e-2


@pytest.fixture(scope="module")
def reads_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reads")
    data = root / "data"
    assert main(["synth", str(data), "--cases", "3", "--size", "40", "--seed", "5", "--modalities", "t1ce,flair"]) == 0
    run = root / "run"
    train(TrainOptions(data=str(data), out=str(run), preset=TINY_PRESET, progress=False, exclude=["synth_002"],
                       overrides=[*READS, "data.spacing=[2,2,2]", "train.epochs.stage3=3"]))
    return data, run


def test_stage3_trains_the_path_at_its_own_rate_and_predict_uses_it(reads_run, tmp_path):
    """The path is zero until Stage III, which moves it further than Adam could at the loop's own
    rate (about the rate per step); the unified model predicts with it on the input grid."""
    data, run = reads_run
    specialist, _ = load_model_file(run / "fusion_specialist.ckpt")
    assert float(specialist["fusion_head.seg_path.weight"].abs().max()) == 0.0
    unified, meta = load_model_file(run / "unified.ckpt")
    moved = float(unified["fusion_head.seg_path.weight"].abs().max())
    rows = read_log(run / "logs" / "stage3_unification.csv")
    lr = load_config(TINY_PRESET).train.lr
    assert moved > 2.0 * lr * len(rows), (moved, len(rows))
    assert load_model(run / "fusion_specialist.ckpt").net.fusion_head.reads_seg is False
    assert load_model(run / "unified.ckpt").net.fusion_head.reads_seg is True
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "unified.ckpt"), "--input", str(data), "--out", str(out),
                 "--ids", "synth_002", "--no-preview"]) == 0
    assert (out / "synth_002" / "synth_002_fused.nii.gz").exists()
    assert json.loads((out / "predict.json").read_text())["cases"]["synth_002"]["fusion_grid"] == "input"
    # a fusion-only file whose ψ reads φ must carry φ
    no_seg = {k: v for k, v in unified.items() if not k.startswith("seg_head.")}
    path = save_model_file(tmp_path / "fusion_only.ckpt", no_seg, {**{k: v for k, v in meta.items() if k != "sha256"}, "tasks": ["fusion"]})
    with pytest.raises(M2CofsError, match="has no seg_head weights"):
        load_model(path)


def test_stage3_with_the_path_starts_from_stage_i_ii_results_trained_without_it(reads_run, tmp_path):
    """The path is zero before Stage III either way, so a run's Stage I/II results trained with the
    option off serve a Stage III with it on (an exact pair: same Stage I/II, path on or off)."""
    import shutil

    data, _ = reads_run
    plain = tmp_path / "plain"
    train(TrainOptions(data=str(data), out=str(plain), preset=TINY_PRESET, progress=False, exclude=["synth_002"],
                       overrides=[*READS[:2], "data.spacing=[2,2,2]", "train.epochs.stage3=3"], stages=[0, 1, 2]))
    on = tmp_path / "on"
    shutil.copytree(plain / "stages", on / "stages")
    train(TrainOptions(data=str(data), out=str(on), preset=TINY_PRESET, progress=False, exclude=["synth_002"],
                       overrides=[*READS, "data.spacing=[2,2,2]", "train.epochs.stage3=3"], stages=[3]))
    unified, _ = load_model_file(on / "unified.ckpt")
    assert float(unified["fusion_head.seg_path.weight"].abs().max()) > 0.0
    assert load_model(on / "unified.ckpt").net.fusion_head.reads_seg is True
