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
