"""The trust check of ``m2cofs predict`` (m2cofs.inference.trust): signals, reference ranges,
verdicts, and the record in predict.json / the evaluation summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m2cofs.inference.trust import check_signals, reference_ranges, trust_signals, warning_line

REGIONS = ["ET", "TC", "WT"]


def _prob(shape=(20, 20, 20), box=(slice(5, 10), slice(5, 10), slice(5, 10)), et_box=None, p=0.9):
    prob = np.zeros((3, *shape), np.float32)
    prob[(slice(1, 3), *box)] = p
    if et_box is not None:
        prob[(0, *et_box)] = p
    return prob


def test_signals_are_the_volumes_confidence_and_mirror_agreement():
    image = np.zeros((2, 20, 20, 20), np.float32)
    image[0, 2:18, 2:18, 2:18] = 0.25
    image[1, 2:18, 2:18, 2:18] = 0.5
    mask = image[0] > 0
    prob = _prob(et_box=(slice(5, 7), slice(5, 10), slice(5, 10)))
    mirrored = prob.copy()
    mirrored[2, 5:10, 5:10, 5:10] = 0.0  # the mirrored pass finds no tumour: no agreement
    s = trust_signals(image, mask, prob, mirrored, [2, 2, 2], REGIONS)
    assert s["wt_ml"] == pytest.approx(125 * 8 / 1000)  # 125 voxels of 8 mm³
    assert s["et_ml"] == pytest.approx(50 * 8 / 1000)
    assert s["et_wt"] == pytest.approx(0.4)
    assert s["lesion_prob"] == pytest.approx(0.9)
    assert s["mirror_dice"] == pytest.approx(0.0)
    assert s["median_t1ce"] == pytest.approx(0.25) and s["median_flair"] == pytest.approx(0.5)
    same = trust_signals(image, mask, prob, prob, [2, 2, 2], REGIONS)
    assert same["mirror_dice"] == pytest.approx(0.9)  # soft: 2Σp²/2Σp, the same answer at p = 0.9
    empty = trust_signals(image, mask, np.zeros_like(prob), np.zeros_like(prob), [2, 2, 2], REGIONS)
    assert empty["wt_ml"] == 0 and empty["lesion_prob"] is None and empty["et_wt"] is None


def test_reference_ranges_flag_only_what_is_outside():
    cases = [{"wt_ml": v, "mirror_dice": d} for v, d in ((20.0, 0.9), (80.0, 0.95), (160.0, 0.85))]
    ref = reference_ranges(cases, margin=0.5)
    wt = ref["ranges"]["wt_ml"]
    assert wt["min"] == 20 and wt["max"] == 160
    assert wt["allowed"][0] == pytest.approx(20 / 8 ** 0.5) and wt["allowed"][1] == pytest.approx(160 * 8 ** 0.5)
    assert ref["ranges"]["mirror_dice"]["allowed"] == pytest.approx([0.8, 1.0])
    for case in cases:  # the reference cases themselves pass
        assert check_signals(case, ref) == []
    reasons = check_signals({"wt_ml": 600.0, "mirror_dice": 0.5}, ref)
    assert len(reasons) == 2
    assert "whole-tumour volume (mL) 600 is above" in reasons[0] and "mirrored" in reasons[1]
    assert check_signals({"wt_ml": 600.0}, None) == []  # no reference, no verdict
    line = warning_line("x", {"flags": reasons})
    assert line.startswith("warning: case x looks unlike the model's training data") and "600" in line


def test_predict_case_records_trust_and_uses_a_reference_beside_the_model(tmp_path, monkeypatch):
    from conftest import tiny_inference_model

    from m2cofs import inference
    from m2cofs.data.loading import Case
    from m2cofs.data.preprocess import PreprocessConfig, preprocess_case
    from m2cofs.inference import predict_case

    model = tiny_inference_model(tasks=("segmentation",))
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 36, 32)], indexing="ij")
    head = np.where((x**2 + y**2 + z**2) < 0.8, 100.0 + 20 * x, 0.0)
    case = preprocess_case(Case(id="c", modalities=["t1ce", "flair"], images=np.stack([head, head]).astype(np.float32),
                                affine=np.eye(4), header=None, label=None, mask=None, files={}), PreprocessConfig())
    calls = []

    def fake(model_, image, device="cpu", tasks=None, **kw):  # a big tumour; the mirrored pass sees half of it
        calls.append(image.copy())
        prob = np.zeros((3, *image.shape[1:]), np.float32)
        prob[1:, : image.shape[1] // (2 if len(calls) > 1 else 1)] = 0.8
        return {"seg_prob": prob}

    monkeypatch.setattr(inference, "predict_array", fake)
    pred = predict_case(model, case)
    assert len(calls) == 2 and np.array_equal(calls[1], case.image[:, ::-1])  # the mirror: axis X
    t = pred.info["trust"]
    assert t["ok"] is None and t["flags"] == [] and 0.5 < t["signals"]["mirror_dice"] < 0.8
    assert "trust" not in predict_case(model, case, trust=False).info
    # a reference beside the model file: the case's WT volume is far above its range
    model.path = tmp_path / "model.safetensors"
    ref = reference_ranges([{"wt_ml": 1.0, "mirror_dice": 0.95}, {"wt_ml": 2.0, "mirror_dice": 1.0}])
    (tmp_path / "trust.json").write_text(json.dumps(ref))
    t = predict_case(model, case).info["trust"]
    assert t["ok"] is False and len(t["flags"]) == 2 and t["reference"] == str(tmp_path / "trust.json")
    # a reference made for another model file (its SHA-256) is not used
    model.meta["sha256"] = "a" * 64
    (tmp_path / "trust.json").write_text(json.dumps({**ref, "model_sha256": "b" * 64}))
    assert predict_case(model, case).info["trust"]["ok"] is None


def test_bundled_model_has_reference_ranges_for_its_file():
    from m2cofs.bundled import resolve_model
    from m2cofs.inference.trust import TRUST_FILE

    path, _ = resolve_model("brats-t1ce-flair")
    ref = json.loads((path.parent / TRUST_FILE).read_text())
    meta = json.loads((path.parent / (path.name + ".json")).read_text())
    assert ref["model_sha256"] == meta["sha256"]
    assert {"wt_ml", "et_wt", "lesion_prob", "mirror_dice"} <= set(ref["ranges"])
    assert "Brats18_CBICA_ABM_1" not in ref["cases"]  # the held-out case is not a reference case


def test_evaluate_carries_the_trust_verdicts_into_summary_notes_and_report(tmp_path):
    import nibabel as nib
    from conftest import make_case, write_nifti

    from m2cofs.evaluation import evaluate

    data = tmp_path / "data"
    for i in range(2):
        make_case(data, f"case{i}", seed=i)
    pred = tmp_path / "pred"
    cases = {}
    for i in range(2):
        cid = f"case{i}"
        lab = nib.load(data / cid / f"{cid}_seg.nii.gz")
        write_nifti(pred / cid / f"{cid}_seg.nii.gz", np.asarray(lab.dataobj).astype(np.uint8), lab.affine)
        flags = ["whole-tumour volume (mL) 600 is above the training cases' 46.2–262"] if i else []
        cases[cid] = {"trust": {"ok": not flags, "flags": flags, "signals": {"wt_ml": 600.0 if i else 80.0},
                                "reference": "trust.json"}}
    (pred / "predict.json").write_text(json.dumps({"cases": cases}))
    res = evaluate(pred, data, tmp_path / "rep", metrics="seg", progress=False, log=lambda m: None)
    assert set(res.summary["trust"]) == {"case0", "case1"} and res.summary["trust"]["case1"]["ok"] is False
    assert any("out of domain" in n and "case1" in n and "case0" not in n for n in res.notes)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Trust check" in html and "out of domain" in html and "600 is above" in html
