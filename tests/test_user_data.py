"""A user's own data, end to end (issue #33): predict → evaluate on other namings, bare file
names, unlabelled scans; the Python API as the CLI; honest device, provenance and headers."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case, write_nifti

from m2cofs.data import discover
from m2cofs.errors import M2CofsError


def _bare_case(folder: Path, names=("flair", "t1", "t1c", "t2"), seed: int = 0, shape=(20, 22, 18)) -> Path:
    rng = np.random.default_rng(seed)
    for name in names:
        vol = np.zeros(shape, np.float32)
        vol[2:-2, 2:-2, 2:-2] = rng.uniform(10, 100, size=tuple(s - 4 for s in shape))
        write_nifti(folder / f"{name}.nii.gz", vol)
    return folder


# ----------------------------------------------------------------------------- #33.4 bare file names
def test_bare_modality_names_are_the_case_folders_modalities_not_mrbrains(tmp_path):
    _bare_case(tmp_path / "data" / "met01")
    _bare_case(tmp_path / "data" / "met02", seed=1)
    spec = discover(tmp_path / "data")
    assert spec.format == "plain"
    assert spec.ids == ["met01", "met02"]
    assert set(spec.cases[0].images) == {"flair", "t1", "t1ce", "t2"}
    assert not any("ignored" in n for c in spec.cases for n in c.notes)
    one = discover(tmp_path / "data" / "met01")  # the case folder itself
    assert one.ids == ["met01"] and set(one.cases[0].images) == {"flair", "t1", "t1ce", "t2"}
    # MRBrainS13's own names still make it MRBrainS
    _bare_case(tmp_path / "mrb" / "1", names=("T1", "T1_IR", "T2_FLAIR"))
    assert discover(tmp_path / "mrb").format == "mrbrains"


# ----------------------------------------------------------------------------- #33.10 header codes
@pytest.mark.parametrize("qcode,scode", [(1, 0), (2, 0), (0, 1), (1, 1)])
def test_save_nifti_keeps_the_input_header_qform_and_sform_codes(tmp_path, qcode, scode):
    from m2cofs.io import save_nifti

    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = [-10, 20, 5]
    img = nib.Nifti1Image(np.ones((5, 6, 7), np.float32), aff)
    img.set_qform(aff, code=qcode)
    img.set_sform(aff, code=scode)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    src = nib.load(str(tmp_path / "in.nii.gz"))
    save_nifti(tmp_path / "out.nii.gz", np.zeros((5, 6, 7)), src.affine, src.header, dtype=np.uint8)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (qcode, scode)
    np.testing.assert_allclose(out.affine, src.affine)


# ----------------------------------------------------------------------------- predict on BraTS-2023 naming
def _as_brats2023(raw: Path, root: Path, sform_code: int = 0) -> Path:
    """``m2cofs synth``'s BraTS-2021 case(s) renamed to BraTS 2023 (<id>-t1c, -t2f, -seg), the
    images written with ``sform_code`` (qform 1) as some scanners' exports are."""
    names = {"t1ce": "t1c", "flair": "t2f", "seg": "seg", "brainmask": "brainmask"}
    for f in sorted(raw.rglob("*.nii.gz")):
        cid, key = f.name[: -len(".nii.gz")].rsplit("_", 1)
        img = nib.load(str(f))
        out = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
        out.set_qform(img.affine, code=1)
        out.set_sform(img.affine, code=sform_code)
        (root / cid).mkdir(parents=True, exist_ok=True)
        nib.save(out, str(root / cid / f"{cid}-{names[key]}.nii.gz"))
    return root


@pytest.fixture(scope="module")
def brats2023_run(tmp_path_factory):
    """One ``m2cofs predict`` (the bundled model, CLI defaults) on a BraTS-2023-named phantom
    with 2023 labels and sform_code 0: the data, the outputs, what predict said, the previews'
    inputs."""
    from m2cofs.cli import main

    tmp = tmp_path_factory.mktemp("b23")
    assert main(["synth", str(tmp / "raw"), "--cases", "1", "--size", "64", "--seed", "3",
                 "--modalities", "t1ce,flair", "--labels", "brats2023"]) == 0
    data = _as_brats2023(tmp / "raw", tmp / "data")
    shown: dict = {}
    import m2cofs.previews as previews

    real = previews.save_case_preview

    def spy(path, sources, fused, seg, convention, **kw):
        shown.update(sources=dict(sources), fused=fused, convention=convention)
        return real(path, sources, fused, seg, convention, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(previews, "save_case_preview", spy)
    try:
        import contextlib
        import io

        out_s, err_s = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out_s), contextlib.redirect_stderr(err_s):
            code = main(["predict", "--input", str(data), "--out", str(tmp / "pred"), "--no-progress"])
    finally:
        mp.undo()
    assert code == 0, err_s.getvalue()
    cid = next(p.name for p in data.iterdir())
    return {"data": data, "pred": tmp / "pred", "cid": cid, "out": out_s.getvalue(), "err": err_s.getvalue(),
            "shown": shown, "record": json.loads((tmp / "pred" / "predict.json").read_text()), "tmp": tmp}


def test_brats2023_naming_gets_2023_label_values_and_says_so(brats2023_run):
    r, cid = brats2023_run, brats2023_run["cid"]
    seg = np.asarray(nib.load(str(r["pred"] / cid / f"{cid}_seg.nii.gz")).dataobj)
    assert seg.any() and set(np.unique(seg).tolist()) <= {0, 1, 2, 3}
    assert r["record"]["label_convention"] == "brats2023"
    assert r["record"]["cases"][cid]["label_convention"] == "brats2023"
    assert f"case {cid}:" in r["out"] and "labels brats2023 (BraTS 2023 file naming)" in r["out"]
    assert "labels brats2023 for brats2023 naming, brats2017 for brats2021 naming" in r["err"]  # the header
    assert "labels brats2013" not in r["err"] + r["out"]


def test_predict_labels_flag_wins_and_the_header_says_it(tmp_path, capsys):
    from m2cofs.cli import main
    from m2cofs.data.labels import get_convention, output_convention

    assert output_convention("brats2021", get_convention("brats2013"))[0].name == "brats2017"
    assert output_convention("plain", get_convention("brats2013"))[0].name == "brats2013"
    assert output_convention("msd", get_convention("brats2013"))[0].name == "msd"
    assert output_convention("brats2023", get_convention("mrbrains"))[0].name == "mrbrains"
    make_case(tmp_path / "d", "c", shape=(24, 24, 20))
    assert main(["predict", "--input", str(tmp_path / "d"), "--out", str(tmp_path / "p"), "--no-preview",
                 "--labels", "brats2023", "--no-progress"]) == 0
    said = capsys.readouterr()
    assert "labels brats2023 (--labels)" in said.err and "labels brats2023 (given with --labels)" in said.out
    rec = json.loads((tmp_path / "p" / "predict.json").read_text())
    assert rec["label_convention"] == "brats2023" and rec["cases"]["c"]["label_convention"] == "brats2023"


def test_predict_then_evaluate_on_brats2023_data_without_a_flag(brats2023_run, capsys):
    from m2cofs.cli import main

    r = brats2023_run
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(r["pred"]), "--data", str(r["data"]), "--out", str(r["tmp"] / "rep"),
                 "--quiet", "--no-report", "--metrics", "Dice,EN"]) == 0, capsys.readouterr().err
    summary = json.loads((r["tmp"] / "rep" / "summary.json").read_text())
    assert summary["labels"] == "brats2023" and summary["metrics"]["Dice/WT"]["n"] == 1


def test_outputs_keep_the_inputs_sform_code_0(brats2023_run):
    r, cid = brats2023_run, brats2023_run["cid"]
    src = nib.load(str(r["data"] / cid / f"{cid}-t1c.nii.gz"))
    for kind in ("fused", "seg"):
        out = nib.load(str(r["pred"] / cid / f"{cid}_{kind}.nii.gz"))
        assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (0, 1), kind
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)


def test_preview_shows_the_sources_at_full_resolution(brats2023_run):
    r, cid = brats2023_run, brats2023_run["cid"]
    shown = r["shown"]
    assert set(shown["sources"]) == {"t1ce", "flair"}
    for mod, name in (("t1ce", "t1c"), ("flair", "t2f")):
        on_disk = np.asarray(nib.load(str(r["data"] / cid / f"{cid}-{name}.nii.gz")).dataobj, dtype=np.float32)
        np.testing.assert_array_equal(shown["sources"][mod], on_disk)  # as read: not through the 2 mm grid
    assert shown["fused"].shape == on_disk.shape
    assert shown["convention"].name == "brats2023"
    assert (r["pred"] / cid / f"{cid}_preview.png").is_file()


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_scores_fusion_of_unlabelled_scans_and_skips_segmentation(brats2023_run, capsys):
    import shutil

    from m2cofs.cli import main

    r = brats2023_run
    data = r["tmp"] / "nolabels"
    shutil.copytree(r["data"], data)
    for f in data.rglob("*-seg.nii.gz"):
        f.unlink()
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(r["pred"]), "--data", str(data), "--out", str(r["tmp"] / "rep_nl"),
                 "--quiet", "--no-report", "--metrics", "EN,Q_MI,Dice"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "segmentation metrics skipped, fusion metrics only" in err
    summary = json.loads((r["tmp"] / "rep_nl" / "summary.json").read_text())
    assert summary["labels"] == "none"
    assert summary["metrics"]["volume/Q_MI"]["n"] == 1 and summary["metrics"]["volume/Q_MI"]["mean"] > 0
    assert not any(k.startswith("Dice/") for k in summary["metrics"])


def test_evaluate_convention_mismatch_says_how_to_fix_it(brats2023_run, tmp_path, capsys):
    import shutil

    from m2cofs.cli import main

    r, cid = brats2023_run, brats2023_run["cid"]
    pred = tmp_path / "pred"
    shutil.copytree(r["pred"], pred)
    seg_path = pred / cid / f"{cid}_seg.nii.gz"
    img = nib.load(str(seg_path))
    seg = np.asarray(img.dataobj).copy()
    seg[seg == 3] = 4  # as a brats2017 writer would have it
    seg[tuple(np.argwhere(seg == 1)[0])] = 4
    nib.save(nib.Nifti1Image(seg, img.affine, img.header), str(seg_path))
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--data", str(r["data"]), "--out", str(tmp_path / "rep"),
                 "--quiet", "--metrics", "Dice"]) == 2
    err = capsys.readouterr().err
    assert "not in the brats2023 convention" in err and "m2cofs predict --labels brats2023" in err
    assert not (tmp_path / "rep").exists()


# ----------------------------------------------------------------------------- #33.6 the device
def test_device_cuda_without_cuda_is_refused_and_the_device_used_is_recorded(brats2023_run, monkeypatch, tmp_path,
                                                                           capsys):
    import torch

    from m2cofs.cli import main
    from m2cofs.inference.predictor import resolve_device

    assert brats2023_run["record"]["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(M2CofsError, match="--device cuda: this torch .* pass --device cpu"):
        resolve_device("cuda")
    make_case(tmp_path / "d", "c", shape=(24, 24, 20))
    capsys.readouterr()
    assert main(["predict", "--input", str(tmp_path / "d"), "--out", str(tmp_path / "p"), "--device", "cuda"]) == 2
    assert "--device cuda: this torch" in capsys.readouterr().err and not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- #33.8 provenance
def test_provenance_of_the_bundled_model_is_its_cards(brats2023_run, capsys):
    from m2cofs.bundled import DEFAULT_MODEL, get_model
    from m2cofs.cli import main

    card = get_model(DEFAULT_MODEL).card["training"]
    rec = brats2023_run["record"]
    assert rec["git_commit"] == card["commit"] == "1993df8"
    assert rec["training_data"] == card["summary"] and rec["training_cases"] == len(card["cases"]) == 18
    r = brats2023_run
    assert main(["evaluate", "--pred", str(r["pred"]), "--data", str(r["data"]), "--out", str(r["tmp"] / "rep_pv"),
                 "--quiet", "--metrics", "EN"]) == 0, capsys.readouterr().err
    prov = json.loads((r["tmp"] / "rep_pv" / "summary.json").read_text())["provenance"]
    assert prov["git_commit"] == "1993df8" and prov["training_cases"] == 18
    html = (r["tmp"] / "rep_pv" / "report.html").read_text()
    assert "1993df8" in html and "not recorded" not in html


# ----------------------------------------------------------------------------- #33.5 the Python API
def test_python_api_takes_bundled_names_and_fuses_on_the_input_grid_as_the_cli(brats2023_run):
    from m2cofs.bundled import DEFAULT_MODEL
    from m2cofs.inference import fusion_head_kind, load_model, predict_case

    r, cid = brats2023_run, brats2023_run["cid"]
    model = load_model(DEFAULT_MODEL)
    assert fusion_head_kind(model) == "weights" and model.path.name == "model.safetensors"
    with pytest.raises(M2CofsError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    ds = model.dataset(r["data"])
    pred = predict_case(model, ds.prepared(0))
    assert pred.info["fusion_grid"] == "input"
    cli = np.asarray(nib.load(str(r["pred"] / cid / f"{cid}_fused.nii.gz")).dataobj)
    np.testing.assert_allclose(pred.fused, cli, atol=1e-4)


# ----------------------------------------------------------------------------- #33.9 fast errors
def test_predict_refuses_bad_input_before_importing_torch(tmp_path):
    from test_cli_startup import heavy, imported_modules

    make_case(tmp_path / "one", "c", modalities=("t1ce",))
    (tmp_path / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    make_case(tmp_path / "good", "g")
    for argv, text in (
        (["--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o1")], "no such file or folder"),
        (["--input", str(tmp_path / "one"), "--out", str(tmp_path / "o2")], "no flair image"),
        (["--input", str(tmp_path / "good"), "--out", str(tmp_path / "o3"), "--model", str(tmp_path / "random.ckpt")],
         "random.ckpt"),
    ):
        res, mods = imported_modules("predict", *argv)
        assert res.returncode == 2 and text in res.stderr, res.stderr[-1500:]
        assert not heavy(mods), f"{argv}: imported {heavy(mods)[:5]} before refusing"
        assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
