"""``m2cofs compare``: folds, method selection, paired tests, tables, and a small end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_PRESET

from m2cofs.cli import main
from m2cofs.compare import DEFAULT_METHODS, GROUPS, aggregate, make_folds, paired_test, parse_methods, table
from m2cofs.errors import M2CofsError


def test_folds_cover_every_case_once():
    ids = [f"c{i}" for i in range(7)]
    folds = make_folds(ids, 3)
    assert sorted(sum(folds, [])) == ids and len(folds) == 3
    assert all(2 <= len(f) <= 3 for f in folds)
    assert make_folds(ids, 3) == folds  # seeded
    with pytest.raises(M2CofsError, match="more than"):
        make_folds(ids[:2], 3)
    with pytest.raises(M2CofsError, match="at least 2"):
        make_folds(ids, 1)


def test_one_split_by_test_ids(synth32, tmp_path, capsys):
    """``--test-ids`` holds out the named cases in one split (e.g. a leave-one-source-out check):
    folds.json records it; unknown ids and holding out everything are refused by name."""
    from m2cofs.compare import CompareOptions
    from m2cofs.compare.run import plan_folds

    ids = sorted(p.name for p in synth32.iterdir() if p.is_dir())
    opts = CompareOptions(data=str(synth32), out=str(tmp_path / "cmp"), test_ids=[ids[1]])
    folds = plan_folds(opts, tmp_path / "cmp")
    assert len(folds) == 1 and folds[0].test_ids == [ids[1]] and folds[0].train_ids == [ids[0]]
    saved = json.loads((tmp_path / "cmp" / "folds.json").read_text())
    assert saved["k"] == "split" and saved["folds"] == [[ids[1]]]
    other = CompareOptions(data=str(synth32), out=str(tmp_path / "cmp"), test_ids=[ids[0]])
    with pytest.raises(M2CofsError, match="other folds"):
        plan_folds(other, tmp_path / "cmp")
    assert main(["compare", "--data", str(synth32), "--out", str(tmp_path / "x"), "--test-ids", "nope"]) == 2
    assert "no case 'nope'" in capsys.readouterr().err
    assert main(["compare", "--data", str(synth32), "--out", str(tmp_path / "y"), "--test-ids", ",".join(ids)]) == 2
    assert "nothing is left to train on" in capsys.readouterr().err


def test_method_selection():
    assert parse_methods(None) == DEFAULT_METHODS
    assert parse_methods("classical") == ["m2cofs", *GROUPS["classical"]]  # the reference is always there
    assert parse_methods("merging,average,ewc")[:5] == ["m2cofs", "average", "task_arithmetic", "ties", "fisher"]
    assert "plugin_unet" in parse_methods("all") and "plugin_unet" not in DEFAULT_METHODS
    with pytest.raises(M2CofsError, match="unknown method 'bogus'"):
        parse_methods("bogus")


def test_paired_test_known_values():
    from scipy import stats

    a = [0.9, 0.8, 0.85, 0.7, 0.95]
    b = [0.8, 0.7, 0.8, 0.72, 0.9]
    r = paired_test(a, b)
    assert r["n"] == 5 and r["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert r["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)
    assert paired_test([1, 2], [1, 2])["wilcoxon_p"] is None  # no difference: no test
    assert paired_test([1, np.nan, 3], [0, 1, 2])["n"] == 2


def test_tables_mark_best_and_significance():
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(8)]
    per = {
        "m2cofs": {i: {"Dice/WT": 0.9 + rng.normal(0, 0.01), "volume/Q_MI": 0.5} for i in ids},
        "mean": {i: {"volume/Q_MI": 0.7} for i in ids},
        "seg_specialist": {i: {"Dice/WT": 0.7 + rng.normal(0, 0.01)} for i in ids},
    }
    stats = aggregate(per, "volume")
    assert stats["methods"]["m2cofs"]["Dice/WT"]["n"] == 8
    assert stats["methods"]["seg_specialist"]["Dice/WT"]["vs_m2cofs"]["wilcoxon_p"] < 0.05
    md, csv_text = table(stats, ["m2cofs", "seg_specialist"], ["Dice/WT"])
    assert "**0.9" in md and "†" in md  # best in bold, significant difference marked
    assert csv_text.splitlines()[0].startswith("method,Dice/WT mean")
    md_f, _ = table(stats, ["m2cofs", "mean"], ["volume/Q_MI"])
    assert "| mean | 8 | **0.700" in md_f  # with n, the held-out cases behind the mean  # the table says when a baseline wins


@pytest.mark.slow
def test_compare_end_to_end_tiny(tmp_path, capfd):
    data, out = tmp_path / "data", tmp_path / "cmp"
    assert main(["synth", str(data), "--cases", "3", "--size", "32", "--seed", "4"]) == 0
    args = ["compare", "--data", str(data), "--out", str(out), "--folds", "3", "--no-progress",
            "--methods", "m2cofs,mean,laplacian,copy1,average,no_stage3,plugin_unet", "--preset", TINY_PRESET]
    # --fold runs one fold; the tables hold what is finished so far
    assert main([*args, "--fold", "1"]) == 0
    assert "case/s" not in capfd.readouterr().err  # --no-progress reaches the predictions too
    held1 = json.loads((out / "folds.json").read_text())["folds"][1]
    assert set(json.loads((out / "results.json").read_text())["per_case"]["m2cofs"]) == set(held1)
    assert not (out / "fold0").exists() and not (out / "fold2").exists()
    assert "| M²-CoFS (θU) | 1 |" in (out / "table_fusion.md").read_text()
    assert main([*args, "--fold", "3"]) == 2  # a clear error: folds are numbered 0..2
    assert main(args) == 0
    for name in ("table_fusion.md", "table_fusion.csv", "table_segmentation.md", "table_segmentation.csv",
                 "table_ablation.md", "weight_space.png", "index.html", "results.json", "folds.json"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    assert len(res["folds"]) == 3 and sorted(sum(res["folds"], [])) == ["synth_000", "synth_001", "synth_002"]
    assert set(res["per_case"]["m2cofs"]) == {"synth_000", "synth_001", "synth_002"}
    fusion = (out / "table_fusion.md").read_text()
    for label in ("M²-CoFS", "mean", "Laplacian pyramid", "copy source 1", "average θF, θS", "w/o Stage III"):
        assert label in fusion
    assert "Laplacian" not in (out / "table_segmentation.md").read_text()  # fusion-only methods have no Dice
    # "copy source 1" is the first modality itself and every rule sees the same scaled sources:
    # the mean is (s1 + s2) / 2, so 2·mean − copy1 is source 2, which lies in [0, 1]
    import nibabel as nib
    cid = held1[0]
    copy1, mean = (np.asanyarray(nib.load(str(out / "fold1" / "pred" / m / cid / f"{cid}_fused.nii.gz")).dataobj)
                   for m in ("copy1", "mean"))
    assert copy1.shape == mean.shape and 0 < np.abs(copy1 - mean).mean()
    s2 = 2 * mean.astype(np.float64) - copy1
    assert s2.min() > -1e-5 and s2.max() < 1 + 1e-5
    plugin = (out / "table_plugin.md").read_text()
    assert "unet + M²-CoFS" in plugin and "unet alone" in plugin
    for stage in ("stage0_autoencoder", "stage1_fusion"):  # the head never sees these: reused, not retrained
        a = (out / "fold0" / "m2cofs" / "stages" / f"{stage}.safetensors").read_bytes()
        assert (out / "fold0" / "methods" / "plugin_unet" / "stages" / f"{stage}.safetensors").read_bytes() == a
    # resumable: a second call reuses everything and gives the same numbers
    mtime = (out / "fold0" / "eval" / "m2cofs" / "metrics.csv").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "fold0" / "eval" / "m2cofs" / "metrics.csv").stat().st_mtime_ns == mtime
    assert json.loads((out / "results.json").read_text())["stats"] == res["stats"]

    # results/postprocess_cv.py re-predicts every learned segmentation method of every fold; its
    # "default" post-processing must be predict's own, number for number
    pp_mod = _results_script("postprocess_cv")
    assert pp_mod.main(["--compare", str(out), "--data", str(data), "--out", str(tmp_path / "pp")]) == 0
    pp = json.loads((tmp_path / "pp" / "postprocess.json").read_text())
    assert {"m2cofs", "average", "no_stage3", "plugin_unet"} <= set(pp["per_case"])
    assert "mean" not in pp["per_case"]  # fusion-only methods are not segmented
    for m in ("m2cofs", "average", "no_stage3"):
        default = pp["per_case"][m]["default"]
        assert set(default) == {"synth_000", "synth_001", "synth_002"}
        for cid, row in default.items():
            dice = [c for c in row if c.startswith("Dice/")]
            assert dice and all(row[c] == pytest.approx(res["per_case"][m][cid][c], abs=1e-9) for c in dice)
    assert (tmp_path / "pp" / "postprocess.md").read_text().count("| none |") == len(pp["per_case"])

    # results/trunk_modes.py predicts every fold's unified models with --trunk window and volume;
    # its window numbers are the compare's own
    tm = _results_script("trunk_modes")
    assert tm.main(["--compare", str(out), "--data", str(data), "--out", str(tmp_path / "tm")]) == 0
    rows = json.loads((tmp_path / "tm" / "trunk_modes.json").read_text())["rows"]
    assert sorted((r["fold"], r["model"]) for r in rows) == [(f, m) for f in range(3) for m in ("m2cofs", "plugin_unet")]
    for r in rows:
        method = "m2cofs" if r["model"] == "m2cofs" else r["model"]
        for c in ("Dice/WT", "volume/Q_MI"):
            assert r["window"][c] == pytest.approx(res["per_case"][method][r["case"]][c], abs=1e-9)
            assert np.isfinite(r["volume"][c])
    assert "| Dice/WT |" in (tmp_path / "tm" / "trunk_modes.md").read_text()
    # results/trunk_head_probe.py trains φ alone a few steps both ways and scores both trunk modes
    capfd.readouterr()
    probe = _results_script("trunk_head_probe")
    held0 = json.loads((out / "folds.json").read_text())["folds"][0][0]
    assert probe.main(["--run", str(out / "fold0" / "m2cofs"), "--data", str(data), "--held-out", held0, "--steps", "2"]) == 0
    lines = [ln for ln in capfd.readouterr().out.splitlines() if "window: ET" in ln and "volume: ET" in ln]
    assert len(lines) == 3 and "on volume features" in lines[1] and "on window features" in lines[2]


def test_compare_a_given_model_with_a_peer_at_its_time(synth32, tmp_path, capsys):
    """``--model`` scores a model trained elsewhere (e.g. the bundled one on its held-out case) as
    the θU row, with no M²-CoFS run trained per fold; the peers train for ``--peer-seconds``.
    Methods made from the fold's run, peers without a time, and a time of 0 are refused before
    anything is written."""
    import csv

    import nibabel as nib

    ids = sorted(p.name for p in synth32.iterdir() if p.is_dir())
    run, out = tmp_path / "run", tmp_path / "cmp"
    assert main(["train", "--data", str(synth32), "--out", str(run), "--exclude", ids[1], "--preset", TINY_PRESET,
                 "--no-progress"]) == 0
    base = ["compare", "--data", str(synth32), "--test-ids", ids[1], "--model", str(run / "unified.ckpt"),
            "--preset", TINY_PRESET, "--no-progress"]
    capsys.readouterr()
    for extra, message in ((["--methods", "mean,average"], "average need"),
                           (["--methods", "segresnet"], "--peer-seconds"),
                           (["--methods", "segresnet", "--peer-seconds", "0"], "positive number")):
        assert main([*base, "--out", str(tmp_path / "refused"), *extra]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()
    from m2cofs.compare import CompareOptions, compare

    with pytest.raises(M2CofsError, match="--peer-loss must be dice or dicece"):  # the Python API checks it too
        compare(CompareOptions(data=str(synth32), out=str(tmp_path / "refused"), methods=["segresnet"],
                               peer_seconds=2.0, peer_loss="ce"))
    assert not (tmp_path / "refused").exists()
    seen = [x if x != ids[1] else ids[0] for x in base]  # hold out the case the model was trained on
    assert main([*seen, "--out", str(tmp_path / "refused"), "--methods", "mean"]) == 2
    assert f"trained on 1 of the cases to hold out ({ids[0]})" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()

    assert main([*base, "--out", str(out), "--methods", "segresnet,mean,copy1", "--peer-seconds", "2"]) == 0
    assert not (out / "fold0" / "m2cofs" / "stages").exists()  # nothing of M²-CoFS trained here
    # the θU row is the given model's prediction, as `m2cofs predict` makes it
    assert main(["predict", "--model", str(run / "unified.ckpt"), "--input", str(synth32), "--ids", ids[1],
                 "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    for kind in ("seg", "fused"):
        a, b = (np.asanyarray(nib.load(str(d / ids[1] / f"{ids[1]}_{kind}.nii.gz")).dataobj)
                for d in (out / "fold0" / "pred" / "m2cofs", tmp_path / "pred"))
        assert np.array_equal(a, b), kind
    # the peer trained for the given time: its clock ends in the step that passes 2 s
    with open(out / "fold0" / "methods" / "segresnet" / "logs" / "peer_segresnet.csv") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    assert seconds[-1] >= 2.0 and seconds[-2] < 2.0
    res = json.loads((out / "results.json").read_text())
    assert set(res["per_case"]) == {"m2cofs", "segresnet", "mean", "copy1"}
    assert all(set(rows) == {ids[1]} for rows in res["per_case"].values())
    assert "SegResNet (seg only)" in (out / "table_segmentation.md").read_text()
    # the peer's settings are kept beside it (tiny trains on lite's Dice + BCE) and a rerun into the
    # same folder on another loss is refused rather than scored with the old peer
    peer = json.loads((out / "fold0" / "methods" / "segresnet" / "peer.json").read_text())
    assert peer == {"network": "segresnet", "seg_loss": "dicece", "max_seconds": 2.0}
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--methods", "segresnet", "--peer-seconds", "2", "--peer-loss", "dice"]) == 2
    assert "trained on the dicece loss, not dice" in capsys.readouterr().err


def _results_script(name: str):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "results" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_postprocess_choice_never_looks_at_the_case_it_decides(tmp_path):
    """results/postprocess_choice.py: each case's setting is the best on the *other* cases.
    Case a gains from post-processing, b loses, c and d do not care: a is decided by b (none),
    b by a (default), c and d by a against b, where a's gain is larger (default)."""
    mod = _results_script("postprocess_choice")

    def row(d):
        return {"Dice/ET": d, "Dice/TC": d, "Dice/WT": d, "HD95/WT": 10.0}

    per_setting = {
        "default": {"a": row(1.0), "b": row(0.0), "c": row(0.5), "d": row(0.5)},
        "small_only": {"a": row(0.5), "b": row(0.4), "c": row(0.5), "d": row(0.5)},
        "none": {"a": row(0.5), "b": row(0.4), "c": row(0.5), "d": row(0.5)},
    }
    assert mod.choose(per_setting) == {"a": "none", "b": "default", "c": "default", "d": "default"}
    # a tie goes to the simplest setting
    flat = {s: {c: row(0.5) for c in "abc"} for s in ("default", "small_only", "none")}
    assert set(mod.choose(flat).values()) == {"none"}
    src = tmp_path / "postprocess.json"
    src.write_text(json.dumps({"per_case": {"net": per_setting}}))
    assert mod.main(["--postprocess", str(src), "--out", str(tmp_path / "o")]) == 0
    out = json.loads((tmp_path / "o" / "postprocess_choice.json").read_text())["net"]
    assert out["per_case"]["a"]["Dice/WT"] == 0.5 and out["per_case"]["b"]["Dice/WT"] == 0.0
    assert "| net | chosen |" in (tmp_path / "o" / "postprocess_choice.md").read_text()


def test_method_registry():
    from m2cofs.compare import ALL_METHODS, CompareOptions, label, method
    from m2cofs.compare.folds import Fold, FoldContext
    from m2cofs.compare.methods import MODEL

    assert ALL_METHODS == [m for ms in GROUPS.values() for m in ms]
    assert all((method(m).kind == MODEL) == (method(m).make is not None) for m in ALL_METHODS)
    assert [method(m).kind for m in ("m2cofs", "mean", "unet")] == ["model", "classical", "peer"]
    assert label("seg_specialist") == "Stage I segmentation (θS)"
    assert label("plugin_unet") == "unet + M²-CoFS" and label("plugin_unet_specialist") == "unet alone"
    with pytest.raises(M2CofsError, match="unknown method"):
        method("bogus")
    # a fold context trains only when asked to
    ctx = FoldContext(CompareOptions(data="d", out="o"), Fold(0, ["a"], ["b"], Path("f")), Path("cache"), print)
    with pytest.raises(RuntimeError, match="not trained"):
        ctx.t
