"""The bundled model: found by name and by default, its card (rendered, and its numbers equal to
results/bundled), clear refusals, the demo on it, and training that repeats itself exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m2cofs.bundled import DEFAULT_MODEL, get_model, list_models, render_card, resolve_model
from m2cofs.checkpoint import read_sidecar, sha256_file
from m2cofs.cli import main
from m2cofs.errors import M2CofsError

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_model_is_bundled_with_its_card_and_checksum():
    models = {m.name: m for m in list_models()}
    assert DEFAULT_MODEL in models
    m = models[DEFAULT_MODEL]
    side = read_sidecar(m.path)
    assert sha256_file(m.path) == side["sha256"] == m.card["sha256"]
    assert m.card["modalities"] == side["modalities"] == ["t1ce", "flair"]
    assert m.path.stat().st_size < 30e6  # float16: half of the float32 run's file
    assert set(m.card["training"]["held_out"]).isdisjoint(side["trained_on"]) and len(side["trained_on"]) == 18
    assert "Not for clinical use" in render_card(m)
    assert (m.folder / "MODEL_CARD.md").read_text(encoding="utf-8") == render_card(m)


def test_card_numbers_are_the_results():
    card = get_model(DEFAULT_MODEL).card
    summary = json.loads((ROOT / "results/bundled/heldout_summary.json").read_text())
    assert summary["cases"]["ids"] == card["quality"]["held_out_case"].split(",")
    for key, value in card["quality"]["held_out"].items():
        assert value == pytest.approx(summary["metrics"][key]["mean"], abs=1e-9), key


def test_card_peers_are_the_compare_results():
    """The card's columns beside the model are the per-case numbers of the committed peer run."""
    card = get_model(DEFAULT_MODEL).card["quality"]
    per_case = json.loads((ROOT / "results/bundled/compare_peer/results.json").read_text())["per_case"]
    case = card["held_out_case"]
    labels = {"SegResNet-16, same time": "segresnet", "mean fusion": "mean", "copy T1ce": "copy1",
              "copy FLAIR": "copy2"}
    assert set(card["compared"]) == set(labels)
    for label, values in card["compared"].items():
        for key, value in values.items():
            assert value == pytest.approx(per_case[labels[label]][case][key], abs=1e-9), (label, key)
    # the model's own row in that run is the packaged file on the same case: the card's numbers
    for key, value in card["held_out"].items():
        if key.startswith("Dice/"):
            assert per_case["m2cofs"][case][key] == pytest.approx(value, abs=1e-6), key


def test_peer_time_scales_by_the_models_own_step(tmp_path):
    """results/bundled/peer_time.py: the model's seconds × (its loop's seconds here / there) on the
    same first steps; known values."""
    import importlib.util

    def log(folder, loop, rows):
        folder.mkdir(exist_ok=True)
        (folder / f"{loop}.csv").write_text("stage,step,seconds\n" + "".join(f"{loop},{s},{t}\n" for s, t in rows))

    old, new = tmp_path / "old", tmp_path / "new"
    log(old, "stage1_segmentation", [(10, 30.0), (20, 60.0), (30, 95.0)])
    log(new, "stage1_segmentation", [(10, 12.0), (20, 24.0)])
    log(old, "stage0_autoencoder", [(5, 10.0)])
    log(new, "stage0_autoencoder", [(5, 4.0)])
    (old / "m2cofs_summary.json").write_text(json.dumps({"stage_seconds": {"a": 600.0, "b": 400.0}}))
    spec = importlib.util.spec_from_file_location("peer_time", ROOT / "results/bundled/peer_time.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--old", str(old), "--new", str(new), "--out", str(tmp_path / "t.json")]) == 0
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["loops"]["stage1_segmentation"]["steps"] == 20 and t["ratio"] == 0.4
    assert t["peer_seconds_here"] == 400.0 and t["loops"]["stage0_autoencoder"]["ratio"] == 0.4


def test_card_puts_the_peers_beside_the_model(tmp_path):
    from m2cofs.bundled import BundledModel

    card = {"modalities": ["t1ce", "flair"], "regions": ["WT"],
            "quality": {"held_out_case": "c1", "results": "x/RUN.md", "held_out": {"Dice/WT": 0.81234},
                        "compared": {"SegResNet-16": {"Dice/WT": 0.7}, "mean fusion": {"retention/both": 0.5}},
                        "compared_note": "same time"}}
    md = render_card(BundledModel("m", tmp_path, card))
    assert "| metric | m | SegResNet-16 | mean fusion |" in md
    assert "| Dice/WT | 0.812 | 0.700 | — |" in md  # a metric the peer lacks shows a dash
    assert "| retention/both | — | — | 0.500 |" in md
    assert "same time" in md
    del card["quality"]["compared"]
    assert "| metric | m |" in render_card(BundledModel("m", tmp_path, card))


def test_lookup_by_name_path_and_default(tmp_path):
    path, m = resolve_model(None)
    assert m.name == DEFAULT_MODEL and path == m.path
    assert resolve_model(DEFAULT_MODEL)[1].name == DEFAULT_MODEL
    own = tmp_path / "x.ckpt"
    assert resolve_model(str(own)) == (own, None)  # a path stays a path (and fails as a file later)
    with pytest.raises(M2CofsError, match=f"unknown model 'brats-t2'.*known: {DEFAULT_MODEL}"):
        resolve_model("brats-t2")


def test_models_command_lists_and_details(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_MODEL in out and "t1ce, flair" in out and "held-out Dice" in out
    assert main(["models", "--details", DEFAULT_MODEL]) == 0
    assert capsys.readouterr().out == render_card(get_model(DEFAULT_MODEL))
    assert main(["models", "--details", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_predict_without_model_uses_the_bundled_one_and_refuses_missing_modalities(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["synth", str(data), "--cases", "1", "--size", "64", "--seed", "3"]) == 0
    out = tmp_path / "pred"
    assert main(["predict", "--input", str(data), "--out", str(out), "--no-preview"]) == 0
    said = capsys.readouterr()
    assert f"model: {DEFAULT_MODEL} (bundled; the default" in said.err and "far from" not in said.err
    assert "-> model grid 2x2x2 mm" in said.out and "window(s) of" in said.out
    rec = json.loads((out / "predict.json").read_text())
    assert rec["model_name"] == DEFAULT_MODEL and rec["cases"]
    cid = next(iter(rec["cases"]))
    seg = np.asarray(__import__("nibabel").load(str(out / cid / f"{cid}_seg.nii.gz")).dataobj)
    assert seg.any() and set(np.unique(seg)) <= {0, 1, 2, 3, 4}
    t2only = tmp_path / "t2only"
    assert main(["synth", str(t2only), "--cases", "1", "--size", "48", "--modalities", "t1ce,t2"]) == 0
    capsys.readouterr()
    assert main(["predict", "--input", str(t2only), "--out", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err
    assert "t1ce, flair" in err and "flair" in err and not (tmp_path / "p2").exists()


def test_predict_notes_a_grid_far_from_1mm(tmp_path, capsys):
    from conftest import make_case

    make_case(tmp_path / "thick", "c", shape=(40, 40, 12), affine=np.diag([1.0, 1.0, 5.0, 1.0]))
    assert main(["predict", "--input", str(tmp_path / "thick"), "--out", str(tmp_path / "p"), "--no-preview"]) == 0
    err = capsys.readouterr().err
    assert "case c has voxels of 1x1x5 mm, far from the ~1 mm" in err and "resampled to 2x2x2 mm" in err
    assert (tmp_path / "p" / "c" / "c_seg.nii.gz").is_file()


def test_demo_without_the_real_case_uses_a_phantom_and_says_so(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(tmp_path / "nowhere")]) == 0
    text = capsys.readouterr().out
    assert "synthetic phantom" in text and str((out / "report" / "report.html").resolve()) in text
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert any("synthetic phantom" in n for n in summary["notes"])
    assert summary["provenance"]["model_name"] == DEFAULT_MODEL


def test_training_repeats_itself_exactly(tmp_path):
    """A short version of the bundled model's training, run twice: the same weights, bit for bit."""
    from m2cofs.checkpoint import load_model_file
    from m2cofs.training.pipeline import TrainOptions, train

    data = tmp_path / "data"
    assert main(["synth", str(data), "--cases", "3", "--size", "32", "--seed", "1"]) == 0
    short = ["data.samples_per_case=1", "train.epochs.stage1=1"]  # on the tiny preset
    weights = []
    for run in ("a", "b"):
        train(TrainOptions(data=str(data), out=str(tmp_path / run), preset="tiny", overrides=short,
                           modalities=["t1ce", "flair"], progress=False))
        weights.append(load_model_file(tmp_path / run / "unified.ckpt")[0])
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert np.array_equal(weights[0][k].numpy(), weights[1][k].numpy()), k
