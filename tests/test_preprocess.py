"""Preprocessing and its exact inverse."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case

from m2cofs.data import MultiModalDataset, PreprocessConfig, discover, load_case, preprocess_case, restore
from m2cofs.data.preprocess import scale_intensity


def _oblique_case(tmp_path, perm_affine):
    make_case(tmp_path, "c", shape=(24, 20, 16), affine=perm_affine, label_values=(0, 1, 2, 4))
    return load_case(discover(tmp_path).cases[0])


@pytest.mark.parametrize("affine", [
    np.diag([1.0, 1.0, 1.0, 1.0]),
    np.array([[-1.0, 0, 0, 120], [0, -1.2, 0, 90], [0, 0, 2.5, -60], [0, 0, 0, 1]]),  # LPS, anisotropic
    np.array([[0, 0, 1.5, 10], [-0.9, 0, 0, 5], [0, 1.1, 0, -3], [0, 0, 0, 1]]),       # permuted axes
])
def test_round_trip_exact_without_resampling(tmp_path, affine):
    case = _oblique_case(tmp_path, affine)
    prep = preprocess_case(case, PreprocessConfig())
    assert nib.aff2axcodes(np.array(prep.meta.affine)) == ("R", "A", "S")
    back = restore(prep.label, prep.meta, "label")
    assert back.shape == case.label.shape
    np.testing.assert_array_equal(back, case.label)
    np.testing.assert_allclose(np.array(prep.meta.original_affine), case.affine)
    # a voxel keeps its world position: the preprocessed affine maps the cropped grid correctly
    idx = np.argwhere(prep.label == 4)[0]
    world = np.array(prep.meta.affine) @ np.r_[idx, 1]
    orig_idx = np.rint(np.linalg.inv(case.affine) @ world)[:3].astype(int)
    assert case.label[tuple(orig_idx)] == 4


def test_resampling_changes_spacing_and_restores_grid(tmp_path):
    case = _oblique_case(tmp_path, np.diag([1.0, 1.0, 1.0, 1.0]))
    prep = preprocess_case(case, PreprocessConfig(spacing=(2.0, 2.0, 2.0), margin=0))
    assert np.allclose(prep.meta.spacing, 2.0, atol=0.15)
    assert all(a < b for a, b in zip(prep.meta.shape, prep.meta.cropped_shape))
    back = restore(prep.label, prep.meta, "label")
    assert back.shape == case.label.shape
    probs = restore(np.stack([prep.image[0]]), prep.meta, "prob")
    assert probs.shape == (1, *case.label.shape)


def test_intensity_scaling_positive_and_zscored():
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 1000, (10, 10, 10)).astype(np.float32)
    fg = np.ones_like(vol, bool)
    out, (lo, hi) = scale_intensity(vol, fg, PreprocessConfig())
    assert lo == 0.0 and 985 < hi < 1000 and out.min() < 0.01 and out.max() == 1.0
    z = rng.normal(0, 1, (10, 10, 10)).astype(np.float32)  # half the brain below zero
    out, (lo, hi) = scale_intensity(z, fg, PreprocessConfig())
    assert lo < -2 and np.mean(out > 0) > 0.99  # negatives kept, not wiped out
    out, _ = scale_intensity(z, fg, PreprocessConfig(intensity="minmax"))  # the authors' code
    assert np.mean(out == 0) > 0.45


@pytest.mark.real_data
def test_real_case_round_trip(real_data):
    ds = MultiModalDataset(real_data / "brats2013", modalities=["t1ce", "flair"], preprocess=None)
    case = ds.load_raw(0)
    prep = preprocess_case(case)
    assert prep.image.shape[1:] == prep.label.shape
    assert all(p < o for p, o in zip(prep.meta.shape, case.shape))  # cropped to the brain
    back = restore(prep.label, prep.meta, "label")
    np.testing.assert_array_equal(back, case.label)
    assert back.shape == case.shape
    img = restore(prep.image, prep.meta, "image")
    assert img.shape == (2, *case.shape)
    # inside the brain the restored image is the scaled original (monotone: same ordering)
    m = case.mask
    a, b = img[1][m], case.images[1][m]
    assert np.corrcoef(a, b)[0, 1] > 0.99
