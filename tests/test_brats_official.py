"""``m2cofs evaluate --brats-official``: BraTS's lesion-wise Dice / HD95 from the brats-evaluation
package (an optional extra; the tests that need it are skipped where it is not installed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from m2cofs.data.labels import get_convention
from m2cofs.errors import M2CofsError
from m2cofs.evaluation.brats_official import require, to_brats2023

CASE = "Brats18_CBICA_ABM_1"


def test_labels_become_brats2023_values():
    # 2013: 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing; 2017: 1 NCR/NET, 2 oedema, 4 enhancing
    lab13 = np.array([0, 1, 2, 3, 4], dtype=np.int16)
    assert to_brats2023(lab13, get_convention("brats2013")).tolist() == [0, 1, 2, 1, 3]
    lab17 = np.array([0, 1, 2, 4], dtype=np.int16)
    assert to_brats2023(lab17, get_convention("brats2017")).tolist() == [0, 1, 2, 3]
    lab23 = np.array([0, 1, 2, 3], dtype=np.int16)
    assert to_brats2023(lab23, get_convention("brats2023")).tolist() == [0, 1, 2, 3]


def test_missing_package_is_a_clear_error_before_any_work(monkeypatch, tmp_path):
    from m2cofs.evaluation import evaluate

    monkeypatch.setitem(sys.modules, "brats_evaluation", None)  # import fails as if not installed
    with pytest.raises(M2CofsError, match=r"pip install 'm2cofs\[brats\]'"):
        require()
    out = tmp_path / "rep"
    with pytest.raises(M2CofsError, match="brats-evaluation"):
        evaluate(tmp_path / "pred", tmp_path / "data", out, brats_official=True)
    assert not out.exists()


def test_tissue_convention_is_refused():
    from m2cofs.evaluation.brats_official import check_convention

    with pytest.raises(M2CofsError, match="ET, TC, WT"):
        check_convention(get_convention("mrbrains"))


def _prediction_like(gt: np.ndarray) -> np.ndarray:
    """The true labels shrunk by two voxels, plus a false-positive enhancing lesion far away."""
    from scipy import ndimage

    p = gt.copy()
    p[~ndimage.binary_erosion(gt > 0, iterations=2)] = 0
    p[10:14, 100:104, 60:64] = 4
    return p


@pytest.mark.real_data
@pytest.mark.slow
def test_matches_the_package_on_a_real_case(real_data, tmp_path):
    pytest.importorskip("brats_evaluation")
    import nibabel as nib
    from brats_evaluation import config_path, evaluate_single_exam
    from panoptica import Panoptica_Evaluator

    from m2cofs.evaluation import evaluate

    folder = real_data / "brats2018" / CASE
    img = nib.load(folder / f"{CASE}_seg.nii.gz")
    gt = np.asarray(img.dataobj).astype(np.int16)
    pred = _prediction_like(gt)
    conv = get_convention("brats2017")
    # the package on files, as BraTS runs it (labels already in its 2023 values)
    nib.save(nib.Nifti1Image(to_brats2023(pred, conv), img.affine), tmp_path / "p.nii.gz")
    nib.save(nib.Nifti1Image(to_brats2023(gt, conv), img.affine), tmp_path / "g.nii.gz")
    ref = evaluate_single_exam(str(tmp_path / "p.nii.gz"), str(tmp_path / "g.nii.gz"), CASE,
                               Panoptica_Evaluator.load_from_config(str(config_path("gli"))))
    # m2cofs evaluate --brats-official on the same prediction, written as predict writes it
    (tmp_path / "pred" / CASE).mkdir(parents=True)
    nib.save(nib.Nifti1Image(pred, img.affine, img.header), tmp_path / "pred" / CASE / f"{CASE}_seg.nii.gz")
    res = evaluate(tmp_path / "pred", real_data / "brats2018", tmp_path / "rep", metrics="seg", report=False,
                   brats_official=True, progress=False, log=lambda m: None)
    row = res.results[0].values
    for region, group in (("ET", "et"), ("TC", "tc"), ("WT", "wt")):
        assert row[f"LesionDice/{region}"] == pytest.approx(ref[group]["sq_dsc"], abs=1e-9)
        assert row[f"LesionHD95/{region}"] == pytest.approx(ref[group]["sq_hd95"], abs=1e-9)
    # the shrunk tumour is one matched lesion, not a perfect one; the false positive is another ET lesion
    assert 0.5 < row["LesionDice/WT"] < 0.99
    assert ref["et"]["fp"] >= 1
    assert "LesionDice/ET" in res.columns and "LesionHD95/WT" in (tmp_path / "rep" / "metrics.csv").read_text()
    assert res.summary["metrics"]["LesionDice/WT"]["higher_is_better"] is True
