"""The three stages on small synthetic runs: each does what it claims; resume; predict."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from m2cofs.checkpoint import load_model_file
from m2cofs.cli import main
from m2cofs.data import MultiModalDataset, PreprocessConfig
from m2cofs.data.labels import labels_to_regions
from m2cofs.errors import M2CofsError
from m2cofs.inference import load_model, predict_array
from m2cofs.losses import fusion_loss
from m2cofs.models import M2CoFSNet
from m2cofs.training.engine import read_log
from m2cofs.training.pipeline import TrainOptions, train

# A CPU-tiny network and schedule: the same code paths as the presets, a fraction of the cost.
TINY = [
    "model.feature_channels=4", "model.embed_dim=6", "model.depths=[1]", "model.num_heads=[2]", "model.window_size=4",
    "model.fusion_growth=4", "model.fusion_channels=4", "model.seg_head=unet", "model.seg_feature_size=4",
    "data.spacing=null", "data.patch_size=[32,32,32]", "data.batch_size=2", "data.samples_per_case=4",
    "train.lr=0.003", "train.checkpoint_every=3",
    "train.epochs.stage0=2", "train.epochs.stage1=12", "train.epochs.stage2=6", "train.epochs.stage3=4",
    "train.stage2_lr=0.001",
]
HELD_OUT = "synth_003"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", str(root), "--cases", "4", "--size", "40", "--seed", "3"]) == 0
    return root


def _opts(data, out, **kw) -> TrainOptions:
    return TrainOptions(data=str(data), out=str(out), preset="lite", overrides=list(TINY), exclude=[HELD_OUT],
                        progress=False, **kw)


@pytest.fixture(scope="module")
def tiny_run(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    train(_opts(synth, out))
    return out


def test_run_folder_contents(tiny_run):
    for name in ("run.json", "summary.json", "unified.ckpt", "unified.ckpt.json", "fusion_specialist.ckpt",
                 "seg_specialist.ckpt"):
        assert (tiny_run / name).is_file(), name
    for stage in ("stage0_autoencoder", "stage1_fusion", "stage1_segmentation", "stage2_seg_to_fusion",
                  "stage2_fusion_to_seg", "stage3_unification"):
        assert (tiny_run / "stages" / f"{stage}.safetensors").is_file()
        assert (tiny_run / "logs" / f"{stage}.csv").is_file() and (tiny_run / "logs" / f"{stage}.png").is_file()
    assert not any((tiny_run / "checkpoints").glob("*.pt")), "in-stage checkpoints are removed when a stage ends"
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["modalities"] == ["t1ce", "flair"] and run["label_convention"] == "brats2017"
    assert HELD_OUT not in run["cases"] and len(run["cases"]) == 3
    meta = json.loads((tiny_run / "unified.ckpt.json").read_text())
    assert meta["kind"] == "unified" and meta["tasks"] == ["fusion", "segmentation"]
    tensors, _ = load_model_file(tiny_run / "unified.ckpt")
    assert not any(k.startswith(("generator.", "decoder.")) for k in tensors), "θU is materialised: no G at inference"


def test_stage2_brings_the_weight_sets_closer(tiny_run):
    d = json.loads((tiny_run / "summary.json").read_text())["weight_distances"]
    assert d["stage2_theta_sf_vs_theta_fs"] < d["stage1_theta_s_vs_theta_f"]


def test_stage3_manifold_distance_decreases(tiny_run):
    rows = read_log(tiny_run / "logs" / "stage3_unification.csv")
    lm = [r["manifold"] for r in rows]
    assert len(lm) >= 8
    assert np.mean(lm[-3:]) < np.mean(lm[:3])


def test_each_stage1_loss_decreases(tiny_run):
    for stage, key in (("stage1_fusion", "loss"), ("stage1_segmentation", "dice_loss"), ("stage0_autoencoder", "loss")):
        vals = [r[key] for r in read_log(tiny_run / "logs" / f"{stage}.csv")]
        assert np.mean(vals[-4:]) < np.mean(vals[:4]), stage


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.logical_and(pred, gt).sum()
    return float(2 * inter / max(pred.sum() + gt.sum(), 1))


def test_unified_weight_beats_the_untrained_network(tiny_run, synth):
    """θU gives a fused volume and a segmentation that both beat the untrained network on the
    held-out case."""
    model = load_model(tiny_run / "unified.ckpt")
    pre = PreprocessConfig.from_dict(model.meta["preprocessing"])
    ds = MultiModalDataset(synth, modalities=model.modalities, preprocess=pre, ids=[HELD_OUT])
    case = ds[0]
    gt = labels_to_regions(case["label"], ds.convention).astype(bool)
    trained = predict_array(model, case["image"])
    torch.manual_seed(model.config.train.seed)
    untrained_net = M2CoFSNet(2, 3, model.config.model, tuple(model.config.data.patch_size)).eval()
    untrained = predict_array(type(model)(untrained_net, model.meta, model.config, model.path), case["image"])
    src = torch.from_numpy(case["image"])[None]

    def f_loss(fused):
        return float(fusion_loss(torch.from_numpy(fused)[None, None], src)[0])

    assert f_loss(trained["fused"]) < f_loss(untrained["fused"])
    d_trained = _dice(trained["seg_prob"][2] > 0.5, gt[2])  # WT
    d_untrained = _dice(untrained["seg_prob"][2] > 0.5, gt[2])
    assert d_trained > d_untrained
    assert d_trained > d_untrained + 0.1, (d_trained, d_untrained)


def test_predict_writes_on_the_input_grid(tiny_run, synth, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(tiny_run / "unified.ckpt"), "--input", str(synth), "--out", str(out),
                 "--ids", HELD_OUT]) == 0
    src = nib.load(str(synth / HELD_OUT / f"{HELD_OUT}_flair.nii.gz"))
    for kind, dtype in (("fused", np.float32), ("seg", np.uint8)):
        img = nib.load(str(out / HELD_OUT / f"{HELD_OUT}_{kind}.nii.gz"))
        assert img.shape == src.shape
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
        assert np.asarray(img.dataobj).dtype == dtype
    seg = np.asarray(nib.load(str(out / HELD_OUT / f"{HELD_OUT}_seg.nii.gz")).dataobj)
    assert set(np.unique(seg)) <= {0, 1, 2, 4}
    assert (out / HELD_OUT / f"{HELD_OUT}_preview.png").stat().st_size > 1000
    rec = json.loads((out / "predict.json").read_text())
    assert rec["modalities"] == ["t1ce", "flair"] and rec["postprocess"] is True
    # --detail-transfer on/off is recorded; this model works on the input grid (data.spacing null), so
    # there is no finer detail to take back: inside the head "on" is the network's fused volume itself
    fused = {}
    for setting in ("on", "off"):
        dest = tmp_path / f"pred_{setting}"
        assert main(["predict", "--model", str(tiny_run / "unified.ckpt"), "--input", str(synth), "--out", str(dest),
                     "--ids", HELD_OUT, "--no-preview", "--detail-transfer", setting]) == 0
        assert json.loads((dest / "predict.json").read_text())["cases"][HELD_OUT]["detail_transfer"] is (setting == "on")
        fused[setting] = np.asarray(nib.load(str(dest / HELD_OUT / f"{HELD_OUT}_fused.nii.gz")).dataobj)
    head = fused["on"] != 0
    assert head.mean() > 0.05 and np.abs(fused["on"] - fused["off"])[head].max() < 1e-4
    # refuses to overwrite without --overwrite, and refuses to write into the input
    assert main(["predict", "--model", str(tiny_run / "unified.ckpt"), "--input", str(synth), "--out", str(out),
                 "--ids", HELD_OUT]) == 2
    assert main(["predict", "--model", str(tiny_run / "unified.ckpt"), "--input", str(synth), "--out",
                 str(synth / "x")]) == 2


def test_predict_trunk_volume_gives_the_same_kind_of_output(tiny_run, synth, tmp_path):
    """--trunk volume (Φ, F and ψ once per voxel, φ alone in the windows) writes the same files,
    records the mode, and gives the trained model's fused volume and segmentation nearly as the
    default sliding window does."""
    outs = {}
    for mode in ("window", "volume"):
        dest = tmp_path / mode
        assert main(["predict", "--model", str(tiny_run / "unified.ckpt"), "--input", str(synth), "--out", str(dest),
                     "--ids", HELD_OUT, "--no-preview", "--trunk", mode]) == 0
        assert json.loads((dest / "predict.json").read_text())["trunk"] == mode
        outs[mode] = {k: np.asarray(nib.load(str(dest / HELD_OUT / f"{HELD_OUT}_{k}.nii.gz")).dataobj)
                      for k in ("fused", "seg")}
    a, b = outs["window"], outs["volume"]
    assert a["seg"].shape == b["seg"].shape and set(np.unique(b["seg"])) <= {0, 1, 2, 4}
    assert np.corrcoef(a["fused"].ravel(), b["fused"].ravel())[0, 1] > 0.95
    assert _dice(a["seg"] > 0, b["seg"] > 0) > 0.8
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--model", str(tiny_run / "unified.ckpt"), "--input", str(synth), "--out",
              str(tmp_path / "bad"), "--trunk", "tiles"])
    assert exc.value.code == 2 and not (tmp_path / "bad").exists()


def _unified_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model_file(run / "unified.ckpt")[0]


def test_resume_after_interruptions_gives_the_same_weights(tiny_run, synth, tmp_path):
    """Interrupt the run every few steps (in every stage), resume each time: the final weights
    equal those of the uninterrupted run with the same seed."""
    out = tmp_path / "run"
    interruptions = 0
    for attempt in range(200):
        try:
            train(_opts(synth, out, resume=attempt > 0, stop_after_steps=7))
            break
        except KeyboardInterrupt:
            interruptions += 1
    assert interruptions >= 5
    a, b = _unified_weights(tiny_run), _unified_weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_interrupted_run_needs_resume(synth, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_opts(synth, out, stop_after_steps=2))
    assert main(["train", "--data", str(synth), "--out", str(out), "--exclude", HELD_OUT, "--no-progress",
                 *[x for s in TINY for x in ("--set", s)]]) == 2


def test_resume_accepts_new_inference_settings_but_not_new_training_ones(synth, tmp_path):
    """A run recorded before inference settings changed (or were added) still resumes; one
    recorded with another training setting does not."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_opts(synth, out, stop_after_steps=1))
    info = json.loads((out / "run.json").read_text())
    info["config"]["inference"] = {"overlap": 0.25}  # older run.json: fewer keys, another overlap
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(KeyboardInterrupt):  # resumes: the check passed, training went on
        train(_opts(synth, out, resume=True, stop_after_steps=1))
    info["config"]["train"]["lr"] = 0.5
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(M2CofsError, match="different config"):
        train(_opts(synth, out, resume=True, stop_after_steps=1))
