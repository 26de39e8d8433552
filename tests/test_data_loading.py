"""Loading and checking cases: every bad input gives a one-line error naming the file."""

from __future__ import annotations

import os
import shutil

import bad_inputs as bad
import numpy as np
import pytest
from conftest import make_case, write_nifti

from m2cofs.cli import main
from m2cofs.data import MultiModalDataset, discover, load_case


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def run_check(root, capsys, *extra):
    before = _snapshot(root) if root.exists() else None
    code = main(["data", "check", str(root), *extra])
    out = capsys.readouterr()
    if before is not None:
        assert _snapshot(root) == before, "data check must not write anything"
    return code, out.out, out.err


def test_check_good_dataset(tiny_dataset, capsys):
    code, out, err = run_check(tiny_dataset, capsys)
    assert code == 0, err
    assert "labels brats2017" in out and "3 case(s)" in out
    rows = [line for line in out.splitlines() if line.startswith("case")]
    assert len(rows) == 3
    assert "t1ce,flair" in rows[0] and "20x22x18" in rows[0] and "ok" in rows[0]


@pytest.mark.parametrize("maker", bad.ALL, ids=[m.__name__ for m in bad.ALL])
def test_bad_input_named_and_nonzero(tmp_path, capsys, maker):
    root = tmp_path / "data"
    where, text = maker(root)
    extra = ["--labels", "brats2017"] if maker is bad.bad_labels else []
    code, out, err = run_check(root, capsys, *extra)
    assert code != 0
    msg = out + err
    assert text in msg, msg
    assert str(where) in msg or where.name in msg, msg
    # the failing case's problem is reported on one line
    line = next(line for line in msg.splitlines() if text in line)
    assert where.name in line


def test_label_outside_auto_convention_fails(tmp_path, capsys):
    make_case(tmp_path / "d", "a", label_values=(0, 1, 2, 3, 4))
    make_case(tmp_path / "d", "b", label_values=(0, 1, 2, 5))
    code, out, err = run_check(tmp_path / "d", capsys)
    assert code == 1 and "label values [5] are not in the brats2013 convention" in out


def test_resample_to_aligns_grids(tmp_path):
    folder = make_case(tmp_path, "c", shape=(20, 20, 20))
    # FLAIR at 2 mm on a 10³ grid covering the same field of view
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = 0.5
    write_nifti(folder / "c_flair.nii.gz", np.arange(1000, dtype=np.float32).reshape(10, 10, 10), aff)
    spec = discover(tmp_path).cases[0]
    case = load_case(spec, ["t1ce", "flair"], resample_to="t1ce")
    assert case.images.shape == (2, 20, 20, 20)
    assert any("resampled flair" in n for n in case.notes)
    # voxel (2,2,2) of the 1 mm grid is at world 2 mm = flair voxel 0.75 → interpolated between 0 and 111
    assert 0 < case.images[1, 2, 2, 2] < 111


def test_cli_format_and_labels_flags(tiny_dataset, capsys):
    code, out, err = run_check(tiny_dataset, capsys, "--format", "brats2023")
    assert code == 2 and "no cases found" in err
    code, out, err = run_check(tiny_dataset, capsys, "--modalities", "flair,t1c", "--labels", "brats2013")
    assert code == 0 and "labels brats2013 (given with --labels)" in out


def test_dataset_yields_channel_first_float32(tiny_dataset, tmp_path):
    ds = MultiModalDataset(tiny_dataset, modalities=["flair", "t1ce"], cache_dir=tmp_path / "cache")
    assert len(ds) == 3 and ds.ids == ["case0", "case1", "case2"]
    item = ds[1]
    assert item["image"].dtype == np.float32 and item["image"].shape[0] == 2
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["meta"].original_shape == [20, 22, 18]
    assert item["meta"].modalities == ["flair", "t1ce"]
    assert item["label"].dtype == np.int16
    # the cache is written once and reused
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 1
    mtime = (tmp_path / "cache" / files[0]).stat().st_mtime_ns
    again = ds[1]
    assert (tmp_path / "cache" / files[0]).stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again["image"], item["image"])
    # changing an input file invalidates the entry
    shutil.copy(tiny_dataset / "case0" / "case0_flair.nii.gz", tiny_dataset / "case1" / "case1_flair.nii.gz")
    ds[1]
    assert len(os.listdir(tmp_path / "cache")) == 2


def test_parallel_preprocessing_after_torch_has_started(tiny_dataset, tmp_path):
    """Worker processes must not deadlock once torch's thread pool runs in the parent (they are
    spawned, not forked), and give the same arrays as one process."""
    import torch

    from m2cofs.data import PreprocessConfig

    torch.nn.functional.interpolate(torch.rand(1, 1, 8, 8, 8), size=(5, 5, 5), mode="trilinear")
    cfg = PreprocessConfig(spacing=(1.5, 1.5, 1.5))
    par = MultiModalDataset(tiny_dataset, cache_dir=tmp_path / "a", preprocess=cfg).prepare_all(workers=2)
    one = MultiModalDataset(tiny_dataset, preprocess=cfg).prepare_all(workers=1)
    assert [c.id for c in par] == [c.id for c in one]
    for a, b in zip(par, one):
        np.testing.assert_array_equal(a.image, b.image)


def test_label_convention_per_dataset_folder_and_common_modalities(tmp_path, capsys):
    """A folder of datasets: each sub-folder keeps its own convention (shown per row, used for the
    regions), and the modalities are those every case has, with a note, not all of them."""
    root = tmp_path / "d"
    make_case(root / "old", "a", label_values=(0, 1, 2, 3, 4))  # 2013 labels, t1ce + flair
    for i, cid in enumerate(("b", "c")):
        make_case(root / "new", cid, modalities=("t1", "t1ce", "t2", "flair"), seed=i + 1, label_values=(0, 1, 2, 4))
    code, out, err = run_check(root, capsys)
    assert code == 0, out + err
    rows = {line.split()[0]: line for line in out.splitlines() if line[:2] in ("a ", "b ", "c ")}
    assert "brats2013" in rows["a"] and "brats2017" in rows["b"] and "brats2017" in rows["c"]
    assert all(" t1ce,flair " in r for r in rows.values())
    assert "left out t1, t2" in out
    code, out, err = run_check(root, capsys, "--labels", "brats2013")
    rows = [line for line in out.splitlines() if line[:2] in ("a ", "b ", "c ")]
    assert code == 0 and all("brats2013" in r for r in rows)
    ds = MultiModalDataset(root)
    assert [ds.case_convention(i).name for i in range(3)] == ["brats2013", "brats2017", "brats2017"]
    assert ds.modalities == ["t1ce", "flair"] and "left out t1, t2" in ds.notes[0]
    assert ds.prepared(0).meta.label_convention == "brats2013"


def test_training_patches_use_each_cases_convention():
    """Labels become regions in the case's own convention: a BraTS-2023 case's 3 is ET even where
    the training set's convention is brats2017 (whose ET is 4)."""
    from conftest import tiny_prepared_cases

    from m2cofs.data.labels import CONVENTIONS
    from m2cofs.training.patches import PatchDataset

    case = tiny_prepared_cases(n=1)[0]
    case.label[case.label == 4] = 3
    case.meta.label_convention = "brats2023"
    patches = PatchDataset([case], CONVENTIONS["brats2017"], (36, 36, 36), samples_per_case=1, augment=False)
    target = np.asarray(patches[0]["target"])
    assert target[0].sum() == (case.label == 3).sum() > 0  # ET
    assert target[2].sum() == (case.label > 0).sum()  # WT


def test_real_folder_of_datasets_keeps_each_convention(real_data, tmp_path, capsys):
    """brats2013 (2013 labels, t1ce + flair) beside brats2018 and tcga (2017 labels, four modalities)."""
    for sub, cid in (("brats2013", "brats2013_pat0003"), ("brats2018", "Brats18_2013_3_1"), ("tcga", "TCGA-FG-6692")):
        (tmp_path / "data" / sub).mkdir(parents=True)
        (tmp_path / "data" / sub / cid).symlink_to(real_data / sub / cid, target_is_directory=True)
    code, out, err = run_check(tmp_path / "data", capsys)
    assert code == 0, out + err
    conv = {line.split()[0]: line.split()[5] for line in out.splitlines()
            if line.startswith(("brats2013_", "Brats18", "TCGA"))}
    assert conv == {"brats2013_pat0003": "brats2013", "Brats18_2013_3_1": "brats2017", "TCGA-FG-6692": "brats2017"}
    assert "left out t1, t2" in out and "all 3 case(s) usable" in out
