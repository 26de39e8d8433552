"""Bad inputs, each as a builder shared by the data-check and reliability tests: it writes a
dataset under ``root`` with one fault and returns (the file or folder the error must name,
text the error must contain)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
from conftest import make_case, write_nifti

def missing_modality(root):
    make_case(root, "good", modalities=("t1ce", "flair"))
    make_case(root, "bad", modalities=("t1ce",))
    return root / "bad", "no flair image"


def truncated(root):
    folder = make_case(root, "bad")
    f = folder / "bad_flair.nii.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return f, "truncated or corrupt"


def not_gzip(root):
    folder = make_case(root, "bad")
    f = folder / "bad_flair.nii.gz"
    f.write_bytes(b"this is not gzip at all" * 20)
    return f, "not"


def not_nifti(root):
    folder = make_case(root, "bad")
    f = folder / "bad_flair.nii.gz"
    with gzip.open(f, "wb") as fh:
        fh.write(b"\x00" * 400)
    return f, "not a NIfTI file"


def nan(root):
    folder = make_case(root, "bad")
    v = np.ones((20, 22, 18), np.float32)
    v[3, 3, 3] = np.nan
    v[4, 4, 4] = np.inf
    write_nifti(folder / "bad_flair.nii.gz", v)
    return folder / "bad_flair.nii.gz", "2 NaN/Inf voxel(s)"


def all_zero(root):
    folder = make_case(root, "bad")
    write_nifti(folder / "bad_t1ce.nii.gz", np.zeros((20, 22, 18), np.float32))
    return folder / "bad_t1ce.nii.gz", "all-zero volume"


def four_d(root):
    folder = make_case(root, "bad")
    write_nifti(folder / "bad_t1ce.nii.gz", np.ones((20, 22, 18, 3), np.float32))
    return folder / "bad_t1ce.nii.gz", "4-D with shape (20, 22, 18, 3), expected a 3-D volume"


def shape_mismatch(root):
    folder = make_case(root, "bad")
    write_nifti(folder / "bad_t1ce.nii.gz", np.ones((20, 22, 17), np.float32) + np.arange(17))
    return folder, "bad_flair.nii.gz is on grid (20, 22, 18)"


def affine_mismatch(root):
    folder = make_case(root, "bad")
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    img = nib.load(str(folder / "bad_flair.nii.gz"))
    write_nifti(folder / "bad_flair.nii.gz", np.asarray(img.dataobj), aff)
    return folder, "--resample-to"


def bad_labels(root):
    make_case(root, "bad", label_values=(0, 7, 2, 4))
    return root / "bad" / "bad_seg.nii.gz", "label values [7] are not in the brats2017 convention"


def empty(root):
    root.mkdir(parents=True)
    return root, "empty"


ALL = [missing_modality, truncated, not_gzip, not_nifti, nan, all_zero, four_d, shape_mismatch, affine_mismatch, bad_labels, empty]
