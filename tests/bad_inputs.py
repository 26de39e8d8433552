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


# ----------------------------------------------------------------------------- issue #34: silently wrong before
def _patch_nii(src_gz, values: dict[int, tuple[str, float]]):
    """Rewrite ``src_gz`` as an uncompressed ``.nii`` beside it with header fields patched at
    byte offsets (``{offset: (struct format, value)}``); returns the new file."""
    import struct

    img = nib.load(str(src_gz))
    dst = src_gz.with_name(src_gz.name[: -len(".gz")])
    nib.save(img, str(dst))
    blob = bytearray(dst.read_bytes())
    for off, (fmt, v) in values.items():
        struct.pack_into(fmt, blob, off, v)
    dst.write_bytes(bytes(blob))
    src_gz.unlink()
    return dst


def overflow_float64(root):
    """float64 values near 1e300: finite as stored, infinite as float32."""
    folder = make_case(root, "bad")
    v = np.zeros((20, 22, 18), np.float64)
    v[2:-2, 2:-2, 2:-2] = np.linspace(1e299, 1e300, 16 * 18 * 14).reshape(16, 18, 14)
    write_nifti(folder / "bad_flair.nii.gz", v)
    return folder / "bad_flair.nii.gz", "beyond what float32 arithmetic holds"


def overflow_scl_slope(root):
    """int16 voxels with scl_slope 1e36: the scaled values overflow float32."""
    folder = make_case(root, "bad")
    v = np.zeros((20, 22, 18), np.int16)
    v[2:-2, 2:-2, 2:-2] = np.arange(16 * 18 * 14).reshape(16, 18, 14) % 3000
    write_nifti(folder / "bad_flair.nii.gz", v)
    f = _patch_nii(folder / "bad_flair.nii.gz", {112: ("<f", 1e36), 116: ("<f", 0.0)})
    return f, "scl_slope 1e+36"


def nii_and_gz(root):
    """x_flair.nii beside x_flair.nii.gz (different content): which one is meant?"""
    folder = make_case(root, "bad")
    img = nib.load(str(folder / "bad_flair.nii.gz"))
    write_nifti(folder / "bad_flair.nii", np.asarray(img.dataobj)[::-1].copy())
    return folder, "has 2 files for flair"


def pixdim_zero(root):
    """A voxel size of 0 and no sform (nibabel would read 1 mm)."""
    folder = make_case(root, "bad")
    f = _patch_nii(folder / "bad_flair.nii.gz", {80: ("<f", 0.0), 252: ("<h", 0), 254: ("<h", 0)})
    return f, "voxel size (pixdim) (0.0, 1.0, 1.0)"


def qform_sform_disagree(root):
    """Both codes set, the qform 2 mm in z, the sform 1 mm (nibabel would use the sform silently)."""
    folder = make_case(root, "bad")
    img = nib.load(str(folder / "bad_flair.nii.gz"))
    img.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    img.set_sform(np.eye(4), code=1)
    nib.save(img, str(folder / "bad_flair.nii.gz"))
    return folder / "bad_flair.nii.gz", "qform and sform disagree (by up to 1 mm)"


def affine_2e3_apart(root):
    """Two grids 2e-3 mm apart: the message must show the difference, not two identical-looking grids."""
    folder = make_case(root, "bad")
    aff = np.eye(4)
    aff[0, 3] = 2e-3
    img = nib.load(str(folder / "bad_flair.nii.gz"))
    write_nifti(folder / "bad_flair.nii.gz", np.asarray(img.dataobj), aff)
    return folder, "the affines differ by up to 0.002 mm"


SILENT = [overflow_float64, overflow_scl_slope, nii_and_gz, pixdim_zero, qform_sform_disagree, affine_2e3_apart]
ALL += SILENT
