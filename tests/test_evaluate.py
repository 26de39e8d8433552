"""``m2cofs evaluate``: matching, metrics.csv / summary.json content, refusals, nothing half-written,
and end to end on the real cases of ../shared/data against hand-computed expectations."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case, write_nifti

from m2cofs.cli import main
from m2cofs.errors import M2CofsError
from m2cofs.evaluation import evaluate, find_predictions, resolve_metric_names, resolve_modes

ANISO = np.diag([1.0, 1.0, 2.5, 1.0])  # 2.5 mm along the last axis
SHAPE = (20, 22, 18)


# ----------------------------------------------------------------------------- helpers
def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        r = csv.DictReader(fh)
        return list(r.fieldnames), list(r)


def case_arrays(data: Path, cid: str, modalities=("t1ce", "flair")):
    imgs = [nib.load(str(data / cid / f"{cid}_{m}.nii.gz")) for m in modalities]
    lab = nib.load(str(data / cid / f"{cid}_seg.nii.gz"))
    return [np.asarray(i.dataobj, dtype=np.float32) for i in imgs], np.asarray(lab.dataobj).astype(np.int16), lab.affine


def write_pred(out: Path, cid: str, affine, fused=None, seg=None) -> None:
    if fused is not None:
        write_nifti(out / cid / f"{cid}_fused.nii.gz", np.asarray(fused, np.float32), affine)
    if seg is not None:
        write_nifti(out / cid / f"{cid}_seg.nii.gz", np.asarray(seg, np.uint8), affine)


@pytest.fixture
def aniso_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        make_case(root, f"case{i}", affine=ANISO, seed=i)
    return root


@pytest.fixture
def shifted_preds(tmp_path: Path, aniso_data: Path) -> Path:
    """Fused = mean of the sources; seg = the ground truth shifted by one voxel (2.5 mm) along z."""
    out = tmp_path / "pred"
    for i in range(3):
        cid = f"case{i}"
        srcs, lab, aff = case_arrays(aniso_data, cid)
        write_pred(out, cid, aff, fused=np.mean(srcs, axis=0), seg=np.roll(lab, 1, axis=2))
    return out


FAST = ["--metrics", "Q_MI,SSIM,Dice,HD95", "--quiet"]


# ----------------------------------------------------------------------------- outputs
def test_end_to_end_synthetic(shifted_preds, aniso_data, tmp_path, capsys):
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(shifted_preds), "--data", str(aniso_data), "--out", str(rep), *FAST])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in rep.iterdir()) == ["metrics.csv", "report.html", "summary.json"]
    header, rows = read_csv(rep / "metrics.csv")
    assert header == ["id", "Dice/ET", "Dice/TC", "Dice/WT", "HD95/ET", "HD95/TC", "HD95/WT",
                      "volume/Q_MI", "volume/SSIM", "slice/Q_MI", "slice/SSIM", "hd95_penalised"]
    assert [r["id"] for r in rows] == ["case0", "case1", "case2"]
    for r in rows:
        # each label block is 4 voxels deep along z: shifted by one, 3 of 4 layers overlap
        for reg in ("ET", "TC", "WT"):
            assert float(r[f"Dice/{reg}"]) == pytest.approx(0.75, abs=1e-6)
            assert float(r[f"HD95/{reg}"]) == pytest.approx(2.5, abs=1e-5)   # one voxel of 2.5 mm
        assert 0 < float(r["volume/Q_MI"]) < 2 and 0 < float(r["slice/SSIM"]) <= 1
        assert r["hd95_penalised"] == ""
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["labels"] == "brats2017" and summary["modalities"] == ["t1ce", "flair"]
    assert summary["modes"] == ["volume", "slice"]
    assert summary["cases"]["evaluated"] == 3 and summary["cases"]["ids"] == ["case0", "case1", "case2"]
    assert list(summary["metrics"]) == header[1:-1]
    for col in header[1:-1]:
        vals = np.array([float(r[col]) for r in rows])
        s = summary["metrics"][col]
        assert s["n"] == 3 and s["n_nonfinite"] == 0
        assert s["mean"] == pytest.approx(vals.mean()) and s["std"] == pytest.approx(vals.std(ddof=1), abs=1e-12)
        assert s["median"] == pytest.approx(np.median(vals)) and s["min"] == pytest.approx(vals.min())
    assert summary["metrics"]["Dice/ET"]["higher_is_better"] is True
    assert summary["metrics"]["HD95/ET"]["higher_is_better"] is False and summary["metrics"]["HD95/ET"]["n_penalised"] == 0
    out = capsys.readouterr().out
    assert "Dice/ET" in out and "0.750 ± 0  (n=3)" in out   # one format: 3 significant digits


def test_identical_source_term_synthetic(tmp_path, aniso_data):
    """Fused = one source: its Q_MI term is 1 (the maximum), its MI term is that source's entropy."""
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import PreprocessConfig, scale_intensity

    pred = tmp_path / "pred"
    srcs, lab, aff = case_arrays(aniso_data, "case0")
    write_pred(pred, "case0", aff, fused=srcs[0])
    res = evaluate(pred, aniso_data, tmp_path / "rep", mode="volume", metrics="Q_MI,MI", report=False, progress=False)
    fg = foreground_mask(np.stack(srcs))
    a, b = (scale_intensity(s, fg, PreprocessConfig())[0] for s in srcs)
    h_a, h_b, mi_ab = _entropies(a, b, fg)
    row = res.results[0].values
    assert row["volume/Q_MI"] == pytest.approx(1.0 + 2 * mi_ab / (h_a + h_b), abs=1e-9)
    assert row["volume/MI"] == pytest.approx(h_a + mi_ab, abs=1e-9)
    assert set(row) == {"volume/Q_MI", "volume/MI"}


def _entropies(a, b, mask):
    """H(a), H(b), MI(a, b) in bits over 256 grey levels round(255 x) inside the mask (numpy only)."""
    qa = np.clip(np.rint(a[mask].astype(np.float64) * 255), 0, 255).astype(np.int64)
    qb = np.clip(np.rint(b[mask].astype(np.float64) * 255), 0, 255).astype(np.int64)

    def H(counts):
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())

    ha, hb = H(np.bincount(qa, minlength=256)), H(np.bincount(qb, minlength=256))
    hab = H(np.bincount(qa * 256 + qb, minlength=256 * 256))
    return ha, hb, ha + hb - hab


def test_partial_predictions_and_notes(tmp_path, aniso_data, capsys):
    pred = tmp_path / "pred"
    s0, lab0, aff = case_arrays(aniso_data, "case0")
    s1, lab1, _ = case_arrays(aniso_data, "case1")
    write_pred(pred, "case0", aff, fused=np.max(s0, axis=0))      # fusion-only method
    write_pred(pred, "case1", aff, seg=lab1)                     # segmentation-only method
    write_pred(pred, "ghost", aff, seg=lab1)                     # no such case
    (pred / "stray").mkdir()
    write_nifti(pred / "stray" / "something.nii.gz", lab1, aff)  # not in the prediction layout
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(pred), "--data", str(aniso_data), "--out", str(rep), *FAST,
               "--mode", "volume"])
    err = capsys.readouterr().err
    assert rc == 0, err
    header, rows = read_csv(rep / "metrics.csv")
    assert header[1:-1] == ["Dice/ET", "Dice/TC", "Dice/WT", "HD95/ET", "HD95/TC", "HD95/WT", "volume/Q_MI", "volume/SSIM"]
    by = {r["id"]: r for r in rows}
    assert list(by) == ["case0", "case1"]
    assert by["case0"]["Dice/ET"] == "" and by["case0"]["volume/Q_MI"] != ""
    assert by["case1"]["volume/Q_MI"] == "" and float(by["case1"]["Dice/WT"]) == 1.0
    assert float(by["case1"]["HD95/WT"]) == 0.0
    assert "ghost" in err and "case2" in err and "something.nii.gz" in err
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["cases"]["predictions_without_case"] == ["ghost"]
    assert summary["cases"]["cases_without_prediction"] == ["case2"]
    assert summary["metrics"]["Dice/WT"]["n"] == 1 and summary["metrics"]["volume/Q_MI"]["n"] == 1
    assert summary["metrics"]["Dice/WT"]["std"] == 0.0


def test_nothing_matches(tmp_path, aniso_data, capsys):
    pred = tmp_path / "pred"
    _, lab, aff = case_arrays(aniso_data, "case0")
    write_pred(pred, "other", aff, seg=lab)
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(pred), "--data", str(aniso_data), "--out", str(rep), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no prediction matches a case" in err and str(pred) in err
    assert not rep.exists() or not any(rep.iterdir())


def test_empty_region_penalty_in_outputs(tmp_path, aniso_data):
    pred = tmp_path / "pred"
    _, lab, aff = case_arrays(aniso_data, "case0")
    seg = lab.copy()
    seg[seg == 4] = 1                     # no enhancing tumour predicted: ET empty, TC/WT unchanged
    write_pred(pred, "case0", aff, seg=seg)
    rep = tmp_path / "rep"
    evaluate(pred, aniso_data, rep, metrics="seg", report=False, progress=False)
    _, rows = read_csv(rep / "metrics.csv")
    diag = math.sqrt(20 ** 2 + 22 ** 2 + (18 * 2.5) ** 2)
    assert float(rows[0]["Dice/ET"]) == 0.0 and float(rows[0]["HD95/ET"]) == pytest.approx(diag)
    assert float(rows[0]["Dice/TC"]) == 1.0 and float(rows[0]["HD95/WT"]) == 0.0
    assert rows[0]["hd95_penalised"] == "ET"
    s = json.loads((rep / "summary.json").read_text())
    assert s["metrics"]["HD95/ET"]["n_penalised"] == 1 and s["metrics"]["HD95/ET"]["mean"] == pytest.approx(diag)


# ----------------------------------------------------------------------------- refusals
def test_refuses_to_overwrite(shifted_preds, aniso_data, tmp_path, capsys):
    rep = tmp_path / "rep"
    args = ["evaluate", "--pred", str(shifted_preds), "--data", str(aniso_data), "--out", str(rep),
            "--metrics", "Dice", "--no-report", "--quiet"]
    assert main(args) == 0
    before = (rep / "metrics.csv").read_bytes(), (rep / "summary.json").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err and str(rep) in err
    assert ((rep / "metrics.csv").read_bytes(), (rep / "summary.json").read_bytes()) == before
    # a leftover report.html from another run also counts
    (rep / "metrics.csv").unlink()
    (rep / "summary.json").unlink()
    (rep / "report.html").write_text("old")
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0
    assert (rep / "metrics.csv").exists() and not (rep / "report.html").exists()  # the stale report is gone


def test_refuses_report_in_dataset(shifted_preds, aniso_data, capsys):
    for out in (aniso_data, aniso_data / "reports", aniso_data / "case0" / "r"):
        rc = main(["evaluate", "--pred", str(shifted_preds), "--data", str(aniso_data), "--out", str(out), "--quiet"])
        assert rc == 2
        assert "inside it" in capsys.readouterr().err
    assert not (aniso_data / "reports").exists() and not (aniso_data / "metrics.csv").exists()


def _pred_is_data_cases(tmp_path, data):
    link = tmp_path / "data-link"
    link.symlink_to(data, target_is_directory=True)
    return {
        "same": (data, data, "same folder"),
        "symlink": (link, data, "same folder"),            # a link to the dataset is the dataset
        "pred_inside_data": (data / "case0", data, "inside the dataset"),
        "data_inside_pred": (tmp_path, data, "contains the dataset"),
        "case_folder": (data / "case1", data / "case1", "same folder"),
    }


@pytest.mark.parametrize("what", ["same", "symlink", "pred_inside_data", "data_inside_pred", "case_folder"])
def test_pred_is_data_is_refused(tmp_path, aniso_data, capsys, what):
    """--pred DATA --data DATA used to score the ground truth (<id>_seg) against itself: Dice 1, exit 0."""
    pred, data, expected = _pred_is_data_cases(tmp_path, aniso_data)[what]
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(rep), "--quiet", "--metrics", "seg"])
    captured = capsys.readouterr()
    assert rc == 2, captured.out
    assert expected in captured.err and str(pred) in captured.err and "Traceback" not in captured.err
    assert "Dice" not in captured.out
    assert not rep.exists()


def test_datalist_pointing_into_pred_is_refused(tmp_path, aniso_data, capsys):
    """A datalist whose labels are the prediction files themselves (no folder to compare)."""
    lst = tmp_path / "list.json"
    cases = [{"id": f"case{i}", "t1ce": f"data/case{i}/case{i}_t1ce.nii.gz",
              "flair": f"data/case{i}/case{i}_flair.nii.gz",
              "label": f"data/case{i}/case{i}_seg.nii.gz"} for i in range(3)]
    lst.write_text(json.dumps({"training": cases}))
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(aniso_data), "--data", str(lst), "--out", str(rep), "--quiet",
               "--metrics", "seg"])
    err = capsys.readouterr().err
    assert rc == 2 and "own file" in err and "case0_seg.nii.gz" in err
    assert not rep.exists()


@pytest.mark.parametrize("layout", ["empty", "other_names"])
def test_pred_without_prediction_files_says_so(tmp_path, aniso_data, capsys, layout):
    pred = tmp_path / "pred"
    pred.mkdir()
    if layout == "other_names":
        _, lab, aff = case_arrays(aniso_data, "case0")
        write_nifti(pred / "case0" / "case0_label.nii.gz", lab, aff)
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(pred), "--data", str(aniso_data), "--out", str(rep), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(pred) in err and "<id>/<id>_fused.nii.gz" in err and "<id>/<id>_seg.nii.gz" in err
    assert ("case0" in err) == (layout == "other_names")
    assert not rep.exists()


@pytest.mark.parametrize("what", ["shape", "affine", "seg_values", "seg_fraction"])
def test_bad_prediction_is_an_error_and_nothing_is_written(tmp_path, aniso_data, capsys, what):
    pred = tmp_path / "pred"
    srcs, lab, aff = case_arrays(aniso_data, "case0")
    write_pred(pred, "case0", aff, fused=np.mean(srcs, axis=0), seg=lab)
    s1, lab1, _ = case_arrays(aniso_data, "case1")
    bad = pred / "case1"
    if what == "shape":
        write_pred(pred, "case1", aff, fused=np.mean(s1, axis=0)[:, :, :-1])
        path = bad / "case1_fused.nii.gz"
    elif what == "affine":
        moved = aff.copy()
        moved[:3, 3] += (0, 0, 5.0)
        write_pred(pred, "case1", moved, seg=lab1)
        path = bad / "case1_seg.nii.gz"
    elif what == "seg_values":
        seg = lab1.copy()
        seg[0, 0, 0] = 7
        write_pred(pred, "case1", aff, seg=seg)
        path = bad / "case1_seg.nii.gz"
    else:
        write_nifti(bad / "case1_seg.nii.gz", lab1.astype(np.float32) + 0.3, aff)
        path = bad / "case1_seg.nii.gz"
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(pred), "--data", str(aniso_data), "--out", str(rep), "--quiet",
               "--metrics", "Q_MI,Dice"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(path) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    expected = {"shape": "shape differs", "affine": "affine differs", "seg_values": "[7]",
                "seg_fraction": "non-integer"}[what]
    assert expected in err
    assert not (rep / "metrics.csv").exists() and not (rep / "summary.json").exists()
    assert not (rep / "report.html").exists()


def test_unknown_metric_and_mode(shifted_preds, aniso_data, tmp_path, capsys):
    rc = main(["evaluate", "--pred", str(shifted_preds), "--data", str(aniso_data), "--out", str(tmp_path / "r"),
               "--metrics", "Q_MI,Jaccard"])
    assert rc == 2 and "Jaccard" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", str(shifted_preds), "--data", str(aniso_data), "--out", str(tmp_path / "r"),
              "--mode", "both-ways"])


def test_resolve_metric_names_and_modes():
    from m2cofs.metrics.fusion import FUSION_METRICS, PAPER_METRICS

    assert resolve_metric_names(None) == (list(FUSION_METRICS), ["Dice", "HD95"])
    assert resolve_metric_names("paper") == (list(PAPER_METRICS), [])
    assert resolve_metric_names("hd95, q_mi,QABF, ssim") == (["Q_MI", "Q_G", "SSIM"], ["HD95"])
    assert resolve_metric_names(["seg"]) == ([], ["Dice", "HD95"])
    with pytest.raises(M2CofsError):
        resolve_metric_names("")
    assert resolve_modes("both") == ["volume", "slice"] and resolve_modes("slice") == ["slice"]
    with pytest.raises(M2CofsError):
        resolve_modes("3d")


def test_modalities_from_predict_json(tmp_path):
    data = tmp_path / "data"
    make_case(data, "c0", modalities=("t1", "t1ce", "flair"), affine=ANISO)
    srcs, lab, aff = case_arrays(data, "c0", ("t1ce", "flair"))
    pred = tmp_path / "pred"
    write_pred(pred, "c0", aff, fused=np.mean(srcs, axis=0))
    (pred / "predict.json").write_text(json.dumps({"modalities": ["T1c", "flair"], "checkpoint": "x.pt"}))
    r1 = evaluate(pred, data, tmp_path / "r1", mode="volume", metrics="MI", report=False, progress=False)
    assert r1.summary["modalities"] == ["t1ce", "flair"] and "predict.json" in r1.summary["modalities_reason"]
    r2 = evaluate(pred, data, tmp_path / "r2", mode="volume", metrics="MI", report=False, progress=False,
                  modalities=["t1", "t1ce", "flair"])
    assert r2.summary["modalities"] == ["t1", "t1ce", "flair"]
    # three sources: MI sums one more non-negative term
    assert r2.results[0].values["volume/MI"] > r1.results[0].values["volume/MI"]
    (pred / "predict.json").write_text("{not json")
    with pytest.raises(M2CofsError, match="predict.json"):
        evaluate(pred, data, tmp_path / "r3", report=False, progress=False)


def test_find_predictions_layout(tmp_path):
    pred = tmp_path / "pred"
    write_pred(pred, "a", np.eye(4), fused=np.ones((4, 4, 4)))
    write_pred(pred, "b", np.eye(4), seg=np.ones((4, 4, 4)))
    (pred / "c").mkdir()
    ps = find_predictions(pred)
    assert sorted(ps.cases) == ["a", "b"]
    assert ps.cases["a"].seg is None and ps.cases["b"].fused is None
    with pytest.raises(M2CofsError, match="not found"):
        find_predictions(tmp_path / "nope")


def test_workers_give_the_same_numbers(shifted_preds, aniso_data, tmp_path):
    kw = dict(mode="volume", metrics="Q_MI,Dice,HD95", report=False, progress=False)
    serial = evaluate(shifted_preds, aniso_data, tmp_path / "r1", **kw)
    parallel = evaluate(shifted_preds, aniso_data, tmp_path / "r2", workers=2, **kw)
    assert (tmp_path / "r1" / "metrics.csv").read_text() == (tmp_path / "r2" / "metrics.csv").read_text()
    assert [r.values for r in serial.results] == [r.values for r in parallel.results]


# ----------------------------------------------------------------------------- real data
def _real_case(root: Path, cid: str, modalities):
    from m2cofs.data import MultiModalDataset

    ds = MultiModalDataset(root, ids=[cid], modalities=modalities, preprocess=None)
    return ds.load_raw(0), ds.convention


def _np_dice(p, g):
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(p, g).sum() / s


@pytest.mark.real_data
def test_real_brats2013_shifted_label_and_identical_source(real_data, tmp_path):
    """pat0003: fused = the T1ce source itself; seg = ground truth shifted 2 voxels (2 mm) along x."""
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
    from m2cofs.io import save_nifti

    cid = "brats2013_pat0003"
    case, conv = _real_case(real_data / "brats2013", cid, ["t1ce", "flair"])
    pred = tmp_path / "pred"
    save_nifti(pred / cid / f"{cid}_fused.nii.gz", case.images[0], case.affine, case.header)
    seg = np.roll(case.label, 2, axis=0)
    save_nifti(pred / cid / f"{cid}_seg.nii.gz", seg, case.affine, case.header, dtype=np.uint8)
    rep = tmp_path / "rep"
    rc = main(["evaluate", "--pred", str(pred), "--data", str(real_data / "brats2013"), "--out", str(rep),
               "--mode", "volume", "--metrics", "Q_MI,MI,Dice,HD95", "--quiet"])
    assert rc == 0
    _, rows = read_csv(rep / "metrics.csv")
    assert len(rows) == 1 and rows[0]["id"] == cid
    row = {k: float(v) for k, v in rows[0].items() if k not in ("id", "hd95_penalised")}
    # Dice of the shifted label, computed independently (BraTS 2013: ET {4}, TC {1,3,4}, WT {1,2,3,4})
    for reg, members in {"ET": [4], "TC": [1, 3, 4], "WT": [1, 2, 3, 4]}.items():
        expect = _np_dice(np.isin(seg, members), np.isin(case.label, members))
        assert row[f"Dice/{reg}"] == pytest.approx(expect, abs=1e-6)
        assert 0.75 < row[f"Dice/{reg}"] < 1
        assert 1.0 < row[f"HD95/{reg}"] <= 2.0 + 1e-6        # a pure 2-voxel shift at 1 mm
    # fused == T1ce: the T1ce term of Q_MI is 1 (its maximum); MI's T1ce term is H(T1ce)
    fg = foreground_mask(case.images, case.mask)
    a, b = (scale_intensity(v, fg, PreprocessConfig())[0] for v in case.images)
    h_a, h_b, mi_ab = _entropies(a, b, fg)
    assert row["volume/Q_MI"] == pytest.approx(1.0 + 2 * mi_ab / (h_a + h_b), abs=1e-9)
    assert row["volume/MI"] == pytest.approx(h_a + mi_ab, abs=1e-9)
    html = (rep / "report.html").read_text()
    assert html.count("<img") >= 3 and cid in html


@pytest.mark.real_data
def test_real_tcga_predict_json_sources_slice_mode(real_data, tmp_path):
    """TCGA case (4 modalities on disk, predict.json says t1ce+flair were fused): seg shifted 3 voxels
    along y; the mean of the two scaled sources as the fused volume, slice mode."""
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
    from m2cofs.io import atomic_write_json, save_nifti

    cid = "TCGA-FG-6692"
    case, conv = _real_case(real_data / "tcga", cid, ["t1ce", "flair"])
    fg = foreground_mask(case.images, case.mask)
    scaled = [scale_intensity(v, fg, PreprocessConfig())[0] for v in case.images]
    pred = tmp_path / "pred"
    save_nifti(pred / cid / f"{cid}_fused.nii.gz", np.mean(scaled, axis=0), case.affine, case.header)
    seg = np.roll(case.label, 3, axis=1)
    save_nifti(pred / cid / f"{cid}_seg.nii.gz", seg, case.affine, case.header, dtype=np.uint8)
    atomic_write_json(pred / "predict.json", {"modalities": ["t1ce", "flair"]})
    res = evaluate(pred, real_data / "tcga", tmp_path / "rep", mode="slice", metrics="Q_MI,Dice,HD95",
                   report=False, progress=False)
    assert res.summary["modalities"] == ["t1ce", "flair"] and res.summary["labels"] == "brats2017"
    row = res.results[0].values
    assert list(row) == ["Dice/ET", "Dice/TC", "Dice/WT", "HD95/ET", "HD95/TC", "HD95/WT", "slice/Q_MI",
                         "retention/t1ce", "retention/flair", "retention/both"]
    # mean fusion keeps part of each source's lesion contrast, neither all nor none (issue #31)
    assert 0.2 < row["retention/t1ce"] < 0.9 and 0.2 < row["retention/flair"] < 0.95
    assert row["retention/both"] == min(row["retention/t1ce"], row["retention/flair"])
    for reg, members in {"ET": [4], "TC": [1, 4], "WT": [1, 2, 4]}.items():
        assert row[f"Dice/{reg}"] == pytest.approx(_np_dice(np.isin(seg, members), np.isin(case.label, members)), abs=1e-6)
        assert 2.0 < row[f"HD95/{reg}"] <= 3.0 + 1e-6        # a pure 3-voxel shift at 1 mm
    assert 0.3 < row["slice/Q_MI"] < 2.0


# ----------------------------------------------------------------------------- --mask none (paper's convention)
def _phantom_case(root: Path, cid: str = "ph0", shape=(36, 40, 20)):
    """A head-shaped ellipsoid in a large zero background: two sources with different contrast."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    head = (x ** 2 + y ** 2 + 0.5 * z ** 2) < 0.6
    blob = ((x - 0.25) ** 2 + (y - 0.1) ** 2 + z ** 2) < 0.06
    rng = np.random.default_rng(3)
    a = np.where(head, 100 + 30 * x + rng.normal(0, 5, shape), 0).astype(np.float32) + 150 * blob
    b = np.where(head, 60 - 20 * y + rng.normal(0, 5, shape), 0).astype(np.float32) + 60 * blob
    lab = np.zeros(shape, np.uint8)
    lab[blob] = 4
    for m, v in (("t1ce", a), ("flair", b)):
        write_nifti(root / cid / f"{cid}_{m}.nii.gz", v)
    write_nifti(root / cid / f"{cid}_seg.nii.gz", lab)
    return [a, b], head


def test_mask_none_is_whole_slices_and_matches_direct_metrics(tmp_path, capsys):
    from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
    from m2cofs.metrics.fusion import PAPER_METRICS, fusion_metrics

    data = tmp_path / "data"
    srcs, head = _phantom_case(data)
    fused = 0.7 * srcs[0] + 0.3 * srcs[1]
    pred = tmp_path / "pred"
    write_pred(pred, "ph0", np.eye(4), fused=fused)
    rc = main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(tmp_path / "none"),
               "--mask", "none", "--metrics", "paper", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    none = json.loads((tmp_path / "none" / "summary.json").read_text())
    brain = evaluate(pred, data, tmp_path / "brain", metrics="paper", report=False, progress=False).summary
    assert none["mask"] == "none" and brain["mask"] == "brain"
    assert "Table 1" in none["mask_description"] and "whole volume" in none["scaling"]
    html = (tmp_path / "none" / "report.html").read_text()
    assert "Table 1" in html and "background included" in html
    # a direct call of the metric functions with no mask, sources and fused scaled over the whole volume
    everything = np.ones(head.shape, bool)
    s01 = [scale_intensity(v, everything, PreprocessConfig())[0] for v in srcs]
    f01 = scale_intensity(fused.astype(np.float32), everything, PreprocessConfig())[0]
    for mode in ("slice", "volume"):
        direct = fusion_metrics(s01, f01, None, mode, PAPER_METRICS)
        for m in PAPER_METRICS:
            got = none["metrics"][f"{mode}/{m}"]["mean"]
            assert got == pytest.approx(direct[m], rel=1e-6), (mode, m)   # float32 rounding only
            # the background changes the numbers: not the brain-mask ones
            assert got != pytest.approx(brain["metrics"][f"{mode}/{m}"]["mean"], rel=1e-5), (mode, m)
    with pytest.raises(M2CofsError, match="--mask"):
        evaluate(pred, data, tmp_path / "bad", mask="head", report=False, progress=False)
