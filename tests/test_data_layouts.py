"""Discovery of cases in every supported layout, modality names and label conventions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_case, write_nifti

from m2cofs.data import MultiModalDataset, discover, resolve_convention
from m2cofs.data.labels import (
    CONVENTIONS,
    infer_convention,
    labels_to_regions,
    regions_to_labels,
)
from m2cofs.data.layouts import detect_format
from m2cofs.data.modalities import normalize_modality, parse_modality_list
from m2cofs.errors import M2CofsError


@pytest.mark.parametrize("alias,canon", [("t1ce", "t1ce"), ("T1c", "t1ce"), ("T1Gd", "t1ce"), ("t1-gd", "t1ce"),
                                         ("flair", "flair"), ("t2f", "flair"), ("T2_FLAIR", "flair"),
                                         ("t1n", "t1"), ("T1w", "t1"), ("t2w", "t2"), ("T1_IR", "t1_ir")])
def test_modality_aliases(alias, canon):
    assert normalize_modality(alias) == canon


def test_modality_list_errors():
    assert parse_modality_list("t1c, t2f") == ["t1ce", "flair"]
    with pytest.raises(ValueError, match="unknown modality 'dwi'"):
        parse_modality_list("t1,dwi")
    with pytest.raises(ValueError, match="twice"):
        parse_modality_list("t1ce,t1c")


def test_brats2021_layout(tmp_path):
    root = tmp_path / "d"
    make_case(root, "BraTS2021_00001", modalities=("t1", "t1ce", "t2", "flair"))
    make_case(root, "BraTS2021_00002", modalities=("t1", "t1ce", "t2", "flair"))
    write_nifti(root / "BraTS2021_00001" / "BraTS2021_00001_brainmask.nii.gz", np.ones((20, 22, 18), np.uint8))
    (root / "BraTS2021_00001" / "notes.txt").write_text("x")
    write_nifti(root / "BraTS2021_00001" / "BraTS2021_00001_dwi.nii.gz", np.ones((20, 22, 18)))
    spec = discover(root)
    assert spec.format == "brats2021"
    assert spec.ids == ["BraTS2021_00001", "BraTS2021_00002"]
    c = spec.cases[0]
    assert set(c.images) == {"t1", "t1ce", "t2", "flair"}
    assert c.mask is not None and c.mask.name.endswith("_brainmask.nii.gz")
    assert c.label.name == "BraTS2021_00001_seg.nii.gz"
    assert any("dwi" in n for n in c.notes)  # extra file: a note, not an error


def test_brats2023_layout(tmp_path):
    root = tmp_path / "d"
    names = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
    make_case(root, "BraTS-GLI-00000-000", modalities=("t1", "t1ce", "t2", "flair"), sep="-", names=names,
              label_values=(0, 1, 2, 3))
    spec = discover(root)
    assert spec.format == "brats2023"
    assert set(spec.cases[0].images) == {"t1", "t1ce", "t2", "flair"}
    conv, reason = resolve_convention(spec)
    assert conv.name == "brats2023" and "2023" in reason


def test_msd_layout(tmp_path):
    root = tmp_path / "Task01_BrainTumour"
    img = np.random.default_rng(0).uniform(1, 5, (12, 12, 10, 4)).astype(np.float32)
    write_nifti(root / "imagesTr" / "BRATS_001.nii.gz", img)
    lab = np.zeros((12, 12, 10), np.uint8)
    lab[4:8, 4:8, 4:6] = 1
    lab[5:7, 5:7, 4:6] = 3
    write_nifti(root / "labelsTr" / "BRATS_001.nii.gz", lab)
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
        "test": [],
    }))
    assert detect_format(root) == "msd"
    ds = MultiModalDataset(root, modalities=["t1ce", "flair"], preprocess=None)
    assert ds.convention.name == "msd"
    item = ds[0]
    np.testing.assert_allclose(item["image"][0], img[..., 2])  # t1gd is channel 2
    np.testing.assert_allclose(item["image"][1], img[..., 0])  # FLAIR is channel 0


def test_mrbrains_layout(tmp_path):
    root = tmp_path / "TrainingData"
    rng = np.random.default_rng(1)
    for cid in ("1", "2"):
        for name in ("T1", "T1_IR", "T2_FLAIR", "T1_1mm"):
            write_nifti(root / cid / f"{name}.nii", rng.uniform(1, 9, (16, 16, 8)).astype(np.float32))
        lab = rng.integers(0, 4, (16, 16, 8)).astype(np.uint8)
        write_nifti(root / cid / "LabelsForTesting.nii", lab)
        write_nifti(root / cid / "LabelsForTraining.nii", rng.integers(0, 9, (16, 16, 8)).astype(np.uint8))
    spec = discover(tmp_path)
    assert spec.format == "mrbrains"
    assert spec.ids == ["1", "2"]
    assert set(spec.cases[0].images) == {"t1", "t1_ir", "flair"}
    assert spec.cases[0].label.name == "LabelsForTesting.nii"
    conv, _ = resolve_convention(spec)
    assert conv.name == "mrbrains"
    assert list(conv.regions) == ["CSF", "GM", "WM"]


def test_datalist_with_other_names(tmp_path):
    root = tmp_path / "any"
    rng = np.random.default_rng(2)
    for cid in ("p1", "p2"):
        write_nifti(root / "scans" / f"{cid}_contrast.nii.gz", rng.uniform(1, 9, (10, 10, 10)).astype(np.float32))
        write_nifti(root / "scans" / f"{cid}_fl.nii.gz", rng.uniform(1, 9, (10, 10, 10)).astype(np.float32))
        lab = np.zeros((10, 10, 10), np.uint8)
        lab[3:6, 3:6, 3:6] = 2
        lab[4, 4, 4] = 4
        write_nifti(root / "gt" / f"{cid}.nii.gz", lab)
    dl = [{"id": c, "T1Gd": f"scans/{c}_contrast.nii.gz", "FLAIR": f"scans/{c}_fl.nii.gz", "label": f"gt/{c}.nii.gz"}
          for c in ("p1", "p2")]
    (root / "datalist.json").write_text(json.dumps(dl))
    for target in (root / "datalist.json", root):
        spec = discover(target)
        assert spec.format == "datalist"
        assert spec.ids == ["p1", "p2"]
        assert set(spec.cases[0].images) == {"t1ce", "flair"}
    conv, _ = resolve_convention(spec)
    assert conv.name == "brats2017"


def test_datalist_entry_names_its_own_convention(tmp_path):
    """A datalist entry's "labels" is that case's convention; the others are inferred."""
    rng = np.random.default_rng(3)
    for cid in ("p1", "p2"):
        for m in ("t1ce", "flair"):
            write_nifti(tmp_path / f"{cid}_{m}.nii.gz", rng.uniform(1, 9, (10, 10, 10)).astype(np.float32))
        lab = np.zeros((10, 10, 10), np.uint8)
        lab[3:6, 3:6, 3:6] = 2
        lab[4, 4, 4] = 4 if cid == "p1" else 3
        write_nifti(tmp_path / f"{cid}_seg.nii.gz", lab)
    dl = [{"id": c, "t1ce": f"{c}_t1ce.nii.gz", "flair": f"{c}_flair.nii.gz", "label": f"{c}_seg.nii.gz"}
          for c in ("p1", "p2")]
    dl[1]["labels"] = "brats2023"
    (tmp_path / "datalist.json").write_text(json.dumps(dl))
    spec = discover(tmp_path / "datalist.json")
    resolve_convention(spec)
    assert [(c.convention, c.convention_reason) for c in spec.cases] == [
        ("brats2017", "label 4 present without label 3"), ("brats2023", "given in the datalist")]
    ds = MultiModalDataset(tmp_path / "datalist.json", preprocess=None)
    et = labels_to_regions(ds[1]["label"], ds.case_convention(1))[0]
    assert et.sum() == 1  # p2's 3 is enhancing tumour in its own convention
    dl[1]["labels"] = "brats1999"
    (tmp_path / "datalist.json").write_text(json.dumps(dl))
    with pytest.raises(M2CofsError, match="unknown label convention 'brats1999'"):
        discover(tmp_path / "datalist.json")


def test_datalist_takes_absolute_and_parent_paths_but_checks_they_exist(tmp_path):
    make_case(tmp_path / "elsewhere", "x")
    (tmp_path / "d").mkdir()
    far = tmp_path / "elsewhere" / "x"
    (tmp_path / "d" / "list.json").write_text(json.dumps([{"id": "a", "t1ce": str(far / "x_t1ce.nii.gz"),
                                                            "flair": "../elsewhere/x/x_flair.nii.gz"}]))
    spec = discover(tmp_path / "d" / "list.json")
    assert {m: r.path for m, r in spec.cases[0].images.items()} == {"t1ce": far / "x_t1ce.nii.gz",
                                                                      "flair": far / "x_flair.nii.gz"}
    (tmp_path / "d" / "list.json").write_text(json.dumps([{"id": "a", "t1": "../x.nii.gz", "flair": "y.nii.gz"}]))
    with pytest.raises(M2CofsError, match=r"a t1: file not found: .*x\.nii\.gz"):
        discover(tmp_path / "d" / "list.json")


def test_duplicate_ids_refused(tmp_path):
    make_case(tmp_path / "a", "case1")
    make_case(tmp_path / "b", "case1")
    with pytest.raises(M2CofsError, match="duplicate case id 'case1'"):
        discover(tmp_path)


@pytest.mark.parametrize("values,naming,expected", [
    ({0, 1, 2, 3, 4}, None, "brats2013"),
    ({0, 2, 3, 4}, "brats2023", "brats2013"),
    ({0, 1, 2, 4}, None, "brats2017"),
    ({0, 4}, None, "brats2017"),
    ({0, 1, 2, 3}, "brats2023", "brats2023"),
    ({0, 1, 2, 3}, None, None),
    ({0, 1, 2}, None, None),
    ({0, 1, 2}, "brats2021", "brats2017"),
    ({0, 1, 2}, "brats2023", "brats2023"),
    ({0, 1, 2, 3}, "brats2021", None),
    ({0}, None, None),
    ({0, 1, 2, 3}, "mrbrains", "mrbrains"),
    ({0, 5, 6}, "mrbrains", "mrbrains9"),
])
def test_infer_convention(values, naming, expected):
    assert infer_convention(values, naming)[0] == expected


def test_undecidable_convention_asks_for_labels(tmp_path):
    # 3 without 4 in BraTS 2018-2021 naming: BraTS-2013 non-enhancing or BraTS-2023 enhancing; ET differs
    make_case(tmp_path, "c1", label_values=(0, 1, 2, 3))
    with pytest.raises(M2CofsError, match="pass --labels") as exc:
        resolve_convention(discover(tmp_path))
    assert "different regions" in str(exc.value) and "ET={3}" in str(exc.value)
    assert resolve_convention(discover(tmp_path), "brats2023")[0].name == "brats2023"


def test_convention_chosen_when_every_candidate_gives_the_same_regions(tmp_path):
    """A BraTS-named low-grade glioma (labels 1 and 2 only) means the same regions in every BraTS
    convention: one is picked, the reason says so, and the regions are the ones all would give."""
    make_case(tmp_path, "lgg", label_values=(0, 1, 2))
    conv, reason = resolve_convention(discover(tmp_path))
    assert conv.name == "brats2017"
    assert "same regions" in reason and "brats2013" in reason and "brats2023" in reason
    ds = MultiModalDataset(tmp_path, preprocess=None)
    label = ds[0]["label"]
    regions = labels_to_regions(label, conv)
    for other in ("brats2013", "brats2023"):
        np.testing.assert_array_equal(labels_to_regions(label, CONVENTIONS[other]), regions)
    # without a naming that rules out the Decathlon convention (1 = oedema there), it still asks
    assert infer_convention({0, 1, 2}, None)[0] is None
    assert "msd" in infer_convention({0, 1, 2}, None)[1]


def test_symlinked_case_folders_are_found(tmp_path):
    """Case folders that are links (nnU-Net style) are followed, a link loop ends, and a folder whose
    entries were all skipped is not called empty."""
    src = tmp_path / "store"
    make_case(src, "a")
    make_case(src, "b", seed=1)
    ds = tmp_path / "linked"
    ds.mkdir()
    for cid in ("a", "b"):
        (ds / cid).symlink_to(src / cid, target_is_directory=True)
    (src / "a" / "loop").symlink_to(ds, target_is_directory=True)  # a -> loop -> linked -> a ...
    spec = discover(ds)
    assert spec.format == "brats2021" and spec.ids == ["a", "b"]
    assert MultiModalDataset(ds, preprocess=None)[1]["image"].shape == (2, 20, 22, 18)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".a").symlink_to(src / "a", target_is_directory=True)
    with pytest.raises(M2CofsError) as exc:
        discover(hidden)
    assert "empty" not in str(exc.value) and "hidden" in str(exc.value) and ".a" in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(M2CofsError, match="the dataset folder is empty"):
        discover(tmp_path / "empty")


def test_symlinked_real_case_folders(real_data, tmp_path):
    for sub, cid in (("brats2013", "brats2013_pat0003"), ("brats2018", "Brats18_2013_3_1")):
        (tmp_path / cid).symlink_to(real_data / sub / cid, target_is_directory=True)
    spec = discover(tmp_path)
    assert spec.ids == ["Brats18_2013_3_1", "brats2013_pat0003"]
    assert all({"t1ce", "flair"} <= set(c.images) for c in spec.cases)


@pytest.mark.parametrize("name", ["brats2013", "brats2017", "brats2023", "msd"])
def test_regions_round_trip_brats(name):
    conv = CONVENTIONS[name]
    lab = np.array(sorted(conv.values), dtype=np.int16).reshape(-1, 1, 1)
    regions = labels_to_regions(lab, conv)
    assert list(conv.regions) == ["ET", "TC", "WT"]
    # nested: ET ⊂ TC ⊂ WT
    assert np.all(regions[0] <= regions[1]) and np.all(regions[1] <= regions[2])
    back = regions_to_labels(regions.astype(np.float32), conv)
    # decoding keeps every region exactly (labels that share a region's role may merge, e.g. 2013's 3 → 1)
    np.testing.assert_array_equal(labels_to_regions(back, conv), regions)


def test_regions_to_labels_tissue_argmax():
    conv = CONVENTIONS["mrbrains"]
    probs = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.2], [0.1, 0.3, 0.4]], dtype=np.float32).T.reshape(3, 3, 1, 1)
    np.testing.assert_array_equal(regions_to_labels(probs, conv).ravel(), [1, 2, 0])
