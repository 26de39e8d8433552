"""Training patches: MRI intensity augmentation (bias field, gamma) drawn reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_prepared_cases
from m2cofs.config import load_config
from m2cofs.data.labels import CONVENTIONS
from m2cofs.errors import M2CofsError
from m2cofs.training.patches import PatchDataset, mri_intensity_augment


def _brain_patch(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((2, 32, 32, 16), np.float32)
    img[:, 4:28, 4:28, 2:14] = rng.uniform(0.2, 0.8, (2, 24, 24, 12))
    return img


def test_bias_field_is_smooth_multiplicative_and_keeps_background():
    img = _brain_patch()
    out = mri_intensity_augment(img, np.random.default_rng(1), bias_field_prob=1.0)
    inside = img > 0
    assert (out[~inside] == 0).all() and out.max() <= 1.0
    ratio = np.where(inside, out / np.where(inside, img, 1), np.nan)
    # a real field: intensities change somewhere by more than 2%, ...
    assert np.nanmax(np.abs(ratio - 1)) > 0.02
    # ... smoothly: neighbouring voxels' factors differ far less than the factor varies overall
    unclipped = inside & (out < 1.0)
    r = np.where(unclipped, ratio, np.nan)
    step = np.nanmax(np.abs(np.diff(r[:, 4:28, 4:28, 2:14], axis=1)))
    assert step < 0.2 * (np.nanmax(r) - np.nanmin(r))
    # the two modalities get fields of their own
    assert not np.allclose(r[0], r[1], equal_nan=True)


def test_gamma_is_monotone_per_modality_and_keeps_the_range():
    img = _brain_patch()
    out = mri_intensity_augment(img, np.random.default_rng(2), gamma_prob=1.0)
    inside = img > 0
    assert (out[~inside] == 0).all() and 0.0 <= out.min() and out.max() <= 1.0
    for c in range(2):
        order = np.argsort(img[c][inside[c]])
        assert (np.diff(out[c][inside[c]][order]) >= -1e-6).all()  # a gamma keeps the intensity order
        assert np.abs(out[c] - img[c]).max() > 0.01


def test_augmentation_is_a_function_of_the_rng_and_off_by_default():
    img = _brain_patch()
    a = mri_intensity_augment(img, np.random.default_rng(7), 0.5, 0.5)
    b = mri_intensity_augment(img, np.random.default_rng(7), 0.5, 0.5)
    np.testing.assert_array_equal(a, b)
    assert mri_intensity_augment(img, np.random.default_rng(7)) is img


def test_patch_dataset_with_intensity_augmentation_is_reproducible_and_differs():
    cases = tiny_prepared_cases(36, clip=True)
    conv = CONVENTIONS["brats2017"]
    plain = PatchDataset(cases, conv, (32, 32, 32), samples_per_case=2, seed=3, stage_key=1)
    aug1 = PatchDataset(cases, conv, (32, 32, 32), samples_per_case=2, seed=3, stage_key=1,
                        bias_field_prob=1.0, gamma_prob=1.0)
    aug2 = PatchDataset(cases, conv, (32, 32, 32), samples_per_case=2, seed=3, stage_key=1,
                        bias_field_prob=1.0, gamma_prob=1.0)
    for i in range(len(plain)):
        p, a, b = plain[i], aug1[i], aug2[i]
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
        # same patch (centre, flips), so the same labels; other intensities
        np.testing.assert_array_equal(a["target"].numpy(), p["target"].numpy())
        assert not np.allclose(a["image"].numpy(), p["image"].numpy())


def test_config_rejects_a_probability_outside_zero_one():
    with pytest.raises(M2CofsError, match="data.gamma_prob"):
        load_config("lite", overrides=["data.gamma_prob=1.5"])
    cfg = load_config("lite", overrides=["data.bias_field_prob=0.3", "data.gamma_prob=0.3"])
    assert cfg.data.bias_field_prob == 0.3 and cfg.data.gamma_prob == 0.3
