"""The three stages on small synthetic runs: each does what it claims; resume; predict."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_PRESET

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

# The tiny preset, trained long enough that the stages' effects show.
TINY = [
    "model.fusion_head=image",  # the module's run tests detail transfer; lite's weights head has its own run below
    # the paper's mechanics (Stage II brings the sets closer, L_M falls in Stage III) are checked on
    # the paper's loss and inputs, not on lite's recipe of 2026-12-06 (test_recipe.py checks that)
    "model.source_skip=false", "train.seg_loss=dice", "data.intensity=percentile",
    "data.samples_per_case=4", "train.lr=0.003", "train.checkpoint_every=3",
    "train.epochs.stage0=2", "train.epochs.stage1=12", "train.epochs.stage2=6", "train.epochs.stage3=4",
    "train.stage2_lr=0.001",
]
HELD_OUT = "synth_003"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", str(root), "--cases", "4", "--size", "40", "--seed", "3"]) == 0
    return root


def _opts(data, out, extra: list[str] = (), **kw) -> TrainOptions:
    return TrainOptions(data=str(data), out=str(out), preset=TINY_PRESET, overrides=[*TINY, *extra], exclude=[HELD_OUT],
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


def test_resume_after_interruptions_gives_the_same_weights(synth, tmp_path):
    """Interrupt the run every few steps (in every stage), resume each time: the final weights
    equal those of the uninterrupted run with the same seed (a shorter schedule than tiny_run's:
    two epochs per stage, so that every loop is interrupted and resumed mid-epoch)."""
    short = ["train.epochs.stage0=1", "train.epochs.stage1=2", "train.epochs.stage2=2", "train.epochs.stage3=2"]
    whole, out = tmp_path / "whole", tmp_path / "run"
    train(_opts(synth, whole, extra=short))
    interruptions = 0
    for attempt in range(200):
        try:
            train(_opts(synth, out, extra=short, resume=attempt > 0, stop_after_steps=5))
            break
        except KeyboardInterrupt:
            interruptions += 1
    assert interruptions >= 8
    a, b = _unified_weights(whole), _unified_weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_interrupted_run_needs_resume(synth, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_opts(synth, out, stop_after_steps=2))
    said = capsys.readouterr()  # 3 cases trained on; the label conventions were read from all 4
    assert "data: 3 case(s)" in said.out + said.err and "conventions read from all 4 cases found" in said.out + said.err
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


def test_weights_head_run_fuses_on_the_input_grid(synth, tmp_path):
    """A ``weights`` fusion head trains through all stages; ``predict`` composes the fused volume
    from the sources on the input grid (recorded), a per-voxel combination of the scaled sources (convex with softmax weights, each gain in [0, 1] with gains)."""
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import apply_intensity_range

    run = tmp_path / "run"
    fast = [o for o in TINY if not o.startswith("train.epochs")] + [
        "train.epochs.stage0=1", "train.epochs.stage1=2", "train.epochs.stage2=1", "train.epochs.stage3=1",
        "model.fusion_head=weights", "data.spacing=[1.5,1.5,1.5]", "data.samples_per_case=2"]
    train(TrainOptions(data=str(synth), out=str(run), preset=TINY_PRESET, overrides=fast, exclude=[HELD_OUT], progress=False))
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "unified.ckpt"), "--input", str(synth), "--out", str(out),
                 "--ids", HELD_OUT, "--no-preview"]) == 0
    assert json.loads((out / "predict.json").read_text())["cases"][HELD_OUT]["fusion_grid"] == "input"
    fused = np.asarray(nib.load(str(out / HELD_OUT / f"{HELD_OUT}_fused.nii.gz")).dataobj)
    ds = MultiModalDataset(str(synth), modalities=["t1ce", "flair"], preprocess=PreprocessConfig(spacing=(1.5, 1.5, 1.5)),
                           ids=[HELD_OUT])
    case, src = ds.prepared_with_source(0)
    fg = foreground_mask(src.images, src.mask)
    full = [apply_intensity_range(src.images[c], fg, case.meta.intensity_range[c], ds.preprocess) for c in range(2)]
    assert fused.shape == full[0].shape
    from m2cofs.config import load_config

    if load_config(TINY_PRESET).model.fusion_weights == "gains":  # each gain in [0, 1] for two sources
        lo, hi = np.zeros_like(full[0]), full[0] + full[1]
    else:  # softmax: a convex combination
        lo, hi = np.minimum(*full), np.maximum(*full)
    assert np.all(fused[fg] >= lo[fg] - 1e-4) and np.all(fused[fg] <= hi[fg] + 1e-4)
    # trained: not the mean any more (ψ starts at equal weights, so an untrained head gives the mean to ~1e-7)
    assert np.abs(fused[fg] - (full[0][fg] + full[1][fg]) / 2).max() > 1e-5


def test_time_budget_ends_each_loop_and_poly_lr_decays(synth, tmp_path):
    """``--time-budget`` splits the minutes over the stages run (preset proportions) and ends each
    loop on it however many epochs the preset asks for; poly LR falls over the loop."""
    from m2cofs.training.engine import LoopSettings, scheduled_lr
    from m2cofs.training.pipeline import stage_budgets

    b = stage_budgets({"stage0": 10, "stage1": 30, "stage2": 12, "stage3": 10}, [0, 1, 2, 3], 104)
    assert b == {0: 600.0, 1: 3600.0, 2: 1440.0, 3: 600.0}  # epochs × loops: 10, 60, 24, 10 of 104
    assert stage_budgets({"stage0": 10, "stage1": 30, "stage2": 12, "stage3": 10}, [0, 1], 7) == {0: 60.0, 1: 360.0}
    s = LoopSettings(epochs=10, batch_size=1, lr=0.01, lr_schedule="poly", max_seconds=100.0)
    assert scheduled_lr(s, 0, 50, 0.0) == 0.01
    assert scheduled_lr(s, 10, 50, 50.0) == pytest.approx(0.01 * 0.5 ** 0.9)  # time is further along than steps
    assert scheduled_lr(s, 50, 50, 10.0) == 0.0
    assert scheduled_lr(LoopSettings(epochs=1, batch_size=1, lr=0.01), 40, 50, 90.0) == 0.01
    run = tmp_path / "run"
    many = [o for o in TINY if not o.startswith("train.epochs.stage0")] + ["train.epochs.stage0=1000",
                                                                            "train.lr_schedule=poly"]
    summary = train(TrainOptions(data=str(synth), out=str(run), preset=TINY_PRESET, overrides=many, exclude=[HELD_OUT],
                                 progress=False, stages=[0], time_budget=0.05))
    assert summary["time_budget_seconds"] == {"stage0_autoencoder": 3.0}
    rows = read_log(run / "logs" / "stage0_autoencoder.csv")
    assert 1 <= len(rows) < 1000 * 3 / 2  # far fewer than 1000 epochs' steps
    assert rows[-1]["seconds"] < 3.0 + 30  # the step that crossed the budget was the last
    assert rows[-1]["lr"] < rows[0]["lr"] <= 0.003
    with pytest.raises(SystemExit):
        main(["train", "--data", str(synth), "--out", str(tmp_path / "x"), "--time-budget", "abc"])
    assert main(["train", "--data", str(synth), "--out", str(tmp_path / "x"), "--time-budget", "-1"]) == 2


def test_trainer_hands_on_the_stage_results_of_a_finished_run(tiny_run, synth):
    """Trainer's public interface: a resumed, finished run loads every stage's results into
    ``results`` (nothing trained), and its loop settings and patches are the run's."""
    from m2cofs.checkpoint import load_tensors
    from m2cofs.training import seeds
    from m2cofs.training.pipeline import Trainer
    from m2cofs.training.results import StageResults, part, prefixed

    t = Trainer(_opts(synth, tiny_run, resume=True))
    assert t.results == StageResults(theta0=t.results.theta0)  # only θ0 before the stages run
    t.run()
    assert t.timings == {}  # every stage was done: nothing trained again
    r = t.results
    assert all(getattr(r, f) is not None for f in StageResults.__dataclass_fields__)
    stage = load_tensors(tiny_run / "stages" / "stage3_unification.safetensors")
    theta_u = part(stage, "fusion")
    assert theta_u.keys() == r.theta_u.keys() and all(torch.equal(v, r.theta_u[k]) for k, v in theta_u.items())
    assert part(prefixed(fusion=r.theta_f, seg_head=r.phi_1), "seg_head").keys() == r.phi_1.keys()
    assert t.loop_settings(2).lr == 0.001 and t.loop_settings(1).lr == 0.003
    assert t.patch_dataset("stage1_fusion").stage_key == seeds.STAGE_KEYS["stage1_fusion"] == 1
