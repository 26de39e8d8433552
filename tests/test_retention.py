"""Lesion contrast retention (issue #31): hand-made volumes whose answer is known, then the
measure through ``m2cofs evaluate`` (metrics.csv, summary.json, the report and its tumour panel)
and ``m2cofs compare``'s tables."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import write_nifti

from m2cofs.data.labels import CONVENTIONS
from m2cofs.metrics.retention import MIN_REGION_VOXELS, contrast, contrast_kind, lesion_retention

SHAPE = (40, 40, 30)


def phantom(seed: int = 0, et: bool = True):
    """A brain (a box), a lesion (WT, label 2 oedema) with an enhancing core (label 4) in it.

    T1ce: the ET bright, the rest of the lesion dark by as much, so that the whole lesion's mean
    equals the brain's (T1ce shows the rim, not the oedema). FLAIR: the whole lesion uniformly
    bright (it shows the oedema, not the rim). Independent noise on both."""
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, bool)
    brain[4:36, 4:36, 3:27] = True
    lab = np.zeros(SHAPE, np.uint8)
    lab[10:26, 10:26, 8:22] = 2
    if et:
        lab[14:22, 14:22, 11:19] = 4
    wt, etm = lab > 0, lab == 4
    t1ce = np.where(brain, 1.0 + 0.1 * rng.standard_normal(SHAPE), 0.0)
    flair = np.where(brain, 1.0 + 0.1 * rng.standard_normal(SHAPE), 0.0)
    if et:
        n_et, n_rest = etm.sum(), (wt & ~etm).sum()
        t1ce[etm] += 0.6
        t1ce[wt & ~etm] -= 0.6 * n_et / n_rest
    flair[wt] += 0.5
    return {"t1ce": t1ce, "flair": flair}, lab, brain


BRATS = CONVENTIONS["brats2017"]


def test_contrast_is_shift_and_scale_free():
    src, lab, brain = phantom()
    r, b = lab == 4, (lab > 0) & (lab != 4)
    d = contrast(src["t1ce"], r, b, brain)
    assert d > 1
    assert contrast(3.0 * src["t1ce"] - 7.0, r, b, brain) == pytest.approx(d, rel=1e-9)
    assert contrast(-src["t1ce"], r, b, brain) == pytest.approx(-d, rel=1e-9)


def test_copy_one_source_is_one_for_it_and_about_zero_for_the_other():
    src, lab, brain = phantom()
    for kept, other in (("t1ce", "flair"), ("flair", "t1ce")):
        ret = lesion_retention(src, src[kept], lab, BRATS, brain)
        assert ret.values[kept] == pytest.approx(1.0, abs=1e-12)
        assert abs(ret.values[other]) < 0.05, (kept, ret.values)
        assert ret.values["both"] == pytest.approx(ret.values[other])


def test_shifted_and_scaled_copy_is_one():
    src, lab, brain = phantom()
    ret = lesion_retention(src, 2.5 * src["t1ce"] + 40.0, lab, BRATS, brain)
    assert ret.values["t1ce"] == pytest.approx(1.0, abs=1e-9)
    inv = lesion_retention(src, 1.0 - src["flair"], lab, BRATS, brain)
    assert inv.values["flair"] == pytest.approx(-1.0, abs=1e-9)  # an inverted copy shows the lesion dark


def test_mean_of_two_keeps_about_half_of_each():
    src, lab, brain = phantom()
    ret = lesion_retention(src, (src["t1ce"] + src["flair"]) / 2, lab, BRATS, brain)
    assert 0.35 < ret.values["t1ce"] < 0.85 and 0.35 < ret.values["flair"] < 0.85, ret.values
    assert ret.values["both"] == min(ret.values["t1ce"], ret.values["flair"])
    # the fixed rule on [0,1]-scaled sources keeps more of the rim than the mean does
    s = {k: (v - v[brain].min()) / np.ptp(v[brain]) for k, v in src.items()}
    rule = lesion_retention(src, s["flair"] + 2 * s["t1ce"] ** 3, lab, BRATS, brain)
    assert rule.values["t1ce"] > ret.values["t1ce"]


def test_case_without_et_is_flair_alone():
    src, lab, brain = phantom(et=False)
    ret = lesion_retention(src, src["flair"], lab, BRATS, brain)
    assert set(ret.values) == {"flair", "both"}
    assert ret.values["both"] == ret.values["flair"] == pytest.approx(1.0)
    assert any("ET has fewer than" in n for n in ret.notes)
    # an ET below the threshold counts as absent too
    small = lab.copy()
    small[15:19, 15:19, 12:15] = 4
    assert (small == 4).sum() < MIN_REGION_VOXELS
    assert "t1ce" not in lesion_retention(src, src["flair"], small, BRATS, brain).values


def test_conventions_and_modalities():
    src, lab, brain = phantom()
    # brats2013 and msd give the same regions for these values (msd: ET = 3, WT = {1,2,3})
    assert lesion_retention(src, src["t1ce"], lab, CONVENTIONS["brats2013"], brain).values["t1ce"] == pytest.approx(1)
    msd = np.select([lab == 4, lab == 2], [3, 1], 0)
    assert lesion_retention(src, src["t1ce"], msd, CONVENTIONS["msd"], brain).values["t1ce"] == pytest.approx(1)
    # tissue classes: not defined, a note, no values
    ret = lesion_retention(src, src["t1ce"], lab, CONVENTIONS["mrbrains"], brain)
    assert ret.values == {} and "not defined" in ret.notes[0]
    # T1Gd is T1ce's rim, T2 the oedema, T1 none
    assert contrast_kind("T1Gd") == "rim" and contrast_kind("t2") == "oedema" and contrast_kind("t1") is None
    four = {"t1": src["t1ce"] * 0 + brain, "t1ce": src["t1ce"], "t2": src["flair"] + 0.01, "flair": src["flair"]}
    ret = lesion_retention(four, src["flair"], lab, BRATS, brain)
    assert set(ret.values) == {"t1ce", "t2", "flair", "both"}
    # a source that does not show its lesion contrast has no retention (a ratio to nothing)
    flat = {"t1ce": np.where(brain, 1.0, 0.0) + 0.001 * np.random.default_rng(1).standard_normal(SHAPE),
            "flair": src["flair"]}
    ret = lesion_retention(flat, src["flair"], lab, BRATS, brain)
    assert "t1ce" not in ret.values and any("below" in n for n in ret.notes)


# ------------------------------------------------------------------------- through evaluate
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from m2cofs.evaluation import evaluate

    tmp = tmp_path_factory.mktemp("retention")
    src, lab, brain = phantom()
    data, preds = tmp / "data", {}
    for name, fused in (("copy_t1ce", 2.0 * src["t1ce"] + 5.0), ("mean", (src["t1ce"] + src["flair"]) / 2)):
        preds[name] = tmp / "pred" / name
        write_nifti(preds[name] / "c0" / "c0_fused.nii.gz", np.where(brain, fused, 0).astype(np.float32))
    for m, v in src.items():
        write_nifti(data / "c0" / f"c0_{m}.nii.gz", (100 * v).astype(np.float32))
    write_nifti(data / "c0" / "c0_seg.nii.gz", lab)
    outs = {}
    for name, pred in preds.items():
        outs[name] = tmp / "eval" / name
        evaluate(pred, data, outs[name], metrics="Q_MI", mode="volume", progress=False)
    return outs


def _row(out):
    with open(out / "metrics.csv", newline="") as fh:
        return next(csv.DictReader(fh))


def test_evaluate_writes_retention(evaluated):
    copy, mean = _row(evaluated["copy_t1ce"]), _row(evaluated["mean"])
    assert list(copy)[-4:-1] == ["retention/t1ce", "retention/flair", "retention/both"]
    assert float(copy["retention/t1ce"]) == pytest.approx(1.0, abs=1e-4)
    assert abs(float(copy["retention/flair"])) < 0.1
    assert 0.3 < float(mean["retention/both"]) < 0.85
    summary = json.loads((evaluated["mean"] / "summary.json").read_text())
    assert summary["metrics"]["retention/both"]["higher_is_better"] is True
    assert summary["retention"]["regions"] == {"ET": [4], "WT": [1, 2, 4]}
    assert summary["retention"]["min_region_voxels"] == MIN_REGION_VOXELS


def test_report_shows_retention_and_the_tumour_panel(evaluated):
    import base64
    import re

    text = (evaluated["copy_t1ce"] / "report.html").read_text()
    assert "Lesion contrast retention (ours, not the paper&#x27;s)" in text
    m = re.search(r'<figure class="panel"><img src="data:image/png;base64,([^"]+)"', text)
    assert m, "no tumour panel"
    from test_report import decode_png

    img = decode_png(base64.b64decode(m.group(1)))
    # five columns (t1ce, flair, fused, mean fusion, ground truth): wider than tall, not blank
    assert img.shape[1] > 3 * img.shape[0] and img[..., :3].std() > 0.05
    assert "Tumour panel" in text


def test_tumour_slice_is_the_one_with_most_et():
    from m2cofs.previews import render_tumour_panel_png, tumour_slice

    lab = np.zeros((10, 10, 8), np.uint8)
    lab[2:8, 2:8, 1:7] = 2
    lab[4:6, 4:6, 5] = 4
    lab[4:5, 4:5, 2] = 4
    assert tumour_slice(lab, "brats2017") == 5
    lab[lab == 4] = 2
    lab[2:8, 2:8, 6] = 0
    assert tumour_slice(lab, "brats2017") in range(1, 6)
    assert render_tumour_panel_png({"a": np.ones(lab.shape)}, np.zeros_like(lab), "brats2017") is None


def test_compare_tables_have_a_retention_table():
    from m2cofs.compare.stats import aggregate
    from m2cofs.compare.tables import method_tables

    rows = {"m2cofs": {"a": {"volume/Q_MI": 1.0, "retention/t1ce": 0.2, "retention/flair": 1.0, "retention/both": 0.2},
                       "b": {"volume/Q_MI": 1.1, "retention/t1ce": 0.1, "retention/flair": 1.0, "retention/both": 0.1}},
            "mean": {"a": {"volume/Q_MI": 0.5, "retention/t1ce": 0.5, "retention/flair": 0.8, "retention/both": 0.5},
                     "b": {"volume/Q_MI": 0.4, "retention/t1ce": 0.6, "retention/flair": 0.7, "retention/both": 0.6}},
            "copy1": {"a": {"volume/Q_MI": 1.2, "retention/t1ce": 1.0, "retention/flair": 0.1, "retention/both": 0.1}}}
    stats = aggregate(rows, "volume")
    assert stats["retention_columns"] == ["retention/t1ce", "retention/flair", "retention/both"]
    t = method_tables(stats, ["m2cofs", "mean", "copy1"])["retention"]
    assert [r.method for r in t.rows] == ["m2cofs", "mean", "copy1"]
    md = t.markdown()
    assert "| t1ce | flair | both |" in md.replace("retention/", "")
    assert "**0.550 ± 0.071**" in md  # mean fusion keeps both best here
