"""Every real case of ../shared/data through the loader: shapes, spacing, labels, region sizes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from m2cofs.data import MultiModalDataset
from m2cofs.data.labels import labels_to_regions

pytestmark = pytest.mark.real_data

BRATS2013_IDS = ["brats2013_pat0003", "brats2013_pat0004", "brats2013_pat0005", "brats2013_pat0006"]


def _independent_regions(seg_path, members):
    """Region voxel counts read straight with nibabel, for comparison with the loader."""
    seg = np.rint(nib.load(str(seg_path)).get_fdata()).astype(int)
    return {r: int(np.isin(seg, m).sum()) for r, m in members.items()}


def test_brats2013_folder(real_data):
    ds = MultiModalDataset(real_data / "brats2013", preprocess=None)
    assert ds.format == "brats2021"
    assert ds.ids == BRATS2013_IDS
    assert ds.modalities == ["t1ce", "flair"]
    assert ds.convention.name == "brats2013"
    for i, cid in enumerate(ds.ids):
        case = ds.load_raw(i)
        assert case.images.shape == (2, 240, 240, 155) and case.images.dtype == np.float32
        assert case.spacing == (1.0, 1.0, 1.0)
        assert case.orientation == "LPS"
        assert set(np.unique(case.label)) == {0, 1, 2, 3, 4}
        assert case.mask is not None and 0.1 < case.mask.mean() < 0.3
        regions = labels_to_regions(case.label, ds.convention)
        counts = dict(zip(ds.convention.regions, regions.reshape(3, -1).sum(1).tolist()))
        expected = _independent_regions(real_data / "brats2013" / cid / f"{cid}_seg.nii.gz",
                                        {"ET": [4], "TC": [1, 3, 4], "WT": [1, 2, 3, 4]})
        assert counts == expected
        assert 0 < counts["ET"] <= counts["TC"] <= counts["WT"]


def test_brats2013_known_region_sizes(real_data):
    ds = MultiModalDataset(real_data / "brats2013", ids=["brats2013_pat0003"], preprocess=None)
    case = ds.load_raw(0)
    counts = labels_to_regions(case.label, ds.convention).reshape(3, -1).sum(1).tolist()
    assert counts == [21250, 25664, 173928]  # ET, TC, WT of pat0003 (voxels at 1 mm³)


def test_tcga_folder(real_data):
    ds = MultiModalDataset(real_data / "tcga", preprocess=None)
    assert ds.ids == ["TCGA-FG-6692"]
    assert ds.modalities == ["t1", "t1ce", "t2", "flair"]
    assert ds.convention.name == "brats2017"
    case = ds.load_raw(0)
    assert case.images.shape == (4, 240, 240, 155)
    assert set(np.unique(case.label)) == {0, 1, 2, 4}
    counts = dict(zip(ds.convention.regions, labels_to_regions(case.label, ds.convention).reshape(3, -1).sum(1).tolist()))
    assert counts == _independent_regions(real_data / "tcga" / "TCGA-FG-6692" / "TCGA-FG-6692_seg.nii.gz",
                                          {"ET": [4], "TC": [1, 4], "WT": [1, 2, 4]})
    assert counts == {"ET": 6840, "TC": 9317, "WT": 30179}


def test_preprocessed_real_cases_in_unit_range(real_data, tmp_path):
    from m2cofs.data import PreprocessConfig

    ds = MultiModalDataset(real_data / "tcga", modalities=["t1ce", "flair"], cache_dir=tmp_path,
                           preprocess=PreprocessConfig(spacing=(2, 2, 2)))
    item = ds[0]
    img = item["image"]
    assert img.shape[0] == 2 and img.min() >= 0 and img.max() <= 1
    # inside the brain most voxels carry signal; the background is zero
    assert (img[:, item["mask"]] > 0).mean() > 0.95
    assert np.all(img[:, ~item["mask"]] == 0)


def test_datalist_over_real_cases(real_data, tmp_path):
    """Any naming works through a datalist: link the real files under other names."""
    import json

    root = tmp_path / "renamed"
    entries = []
    for cid in BRATS2013_IDS[:2]:
        src = real_data / "brats2013" / cid
        (root / "img").mkdir(parents=True, exist_ok=True)
        (root / "img" / f"{cid}-contrast.nii.gz").symlink_to(src / f"{cid}_t1ce.nii.gz")
        (root / "img" / f"{cid}-fluid.nii.gz").symlink_to(src / f"{cid}_flair.nii.gz")
        (root / "img" / f"{cid}-truth.nii.gz").symlink_to(src / f"{cid}_seg.nii.gz")
        entries.append({"id": cid, "T1Gd": f"img/{cid}-contrast.nii.gz", "FLAIR": f"img/{cid}-fluid.nii.gz",
                        "label": f"img/{cid}-truth.nii.gz"})
    (root / "datalist.json").write_text(json.dumps(entries))
    ds = MultiModalDataset(root / "datalist.json", preprocess=None)
    assert ds.format == "datalist" and ds.ids == BRATS2013_IDS[:2] and ds.convention.name == "brats2013"
    assert ds.load_raw(1).images.shape == (2, 240, 240, 155)
