"""Shared fixtures.

Real-data tests read the MRI cases in ``../shared/data`` (override with ``M2COFS_SHARED_DATA``).
They are skipped where that folder is absent, unless ``M2COFS_REQUIRE_REAL_DATA=1`` (set by
``.ci/run``), which turns the skip into a failure so CI can never pass without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# `make test` runs the suite on two pytest-xdist workers (one test file per worker at a time).
# Each worker computes on one thread, so the two share the cores instead of fighting over them;
# the subprocesses that tests start (the CLI, torchrun) inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# Under pytest-xdist (--dist loadfile) a worker takes whole files from the front of this order.
# The longest file (real-data training, ~8 min on one thread) goes first, to one worker; the other
# worker takes the short files; the next longest come last, longest of them first, so that the
# two workers end close together.
FIRST = ("test_real_training.py",)
LAST = ("test_training.py", "test_performance.py", "test_sigkill_resume.py", "test_compare.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return -1 if name in FIRST else LAST.index(name) + 1 if name in LAST else 0

    items.sort(key=rank)  # stable: each file keeps its order


def shared_data_dir() -> Path:
    return Path(os.environ.get("M2COFS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real MRI cases; skip (or fail under CI) when it is missing."""
    d = shared_data_dir()
    if not (d / "brats2013").is_dir() or not (d / "tcga").is_dir():
        msg = f"real MRI data not found at {d}"
        if os.environ.get("M2COFS_REQUIRE_REAL_DATA") == "1":
            pytest.fail(msg + " (M2COFS_REQUIRE_REAL_DATA=1: CI must have ../shared/data)")
        pytest.skip(msg)
    return d


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def make_case(root: Path, cid: str, modalities=("t1ce", "flair"), shape=(20, 22, 18), affine=None,
              seed: int = 0, label_values=(0, 1, 2, 4), sep: str = "_", names: dict | None = None,
              with_label: bool = True) -> Path:
    """Write a small random case in a BraTS-style layout; returns its folder."""
    rng = np.random.default_rng(seed)
    folder = root / cid
    names = names or {}
    for m in modalities:
        vol = np.zeros(shape, np.float32)
        vol[2:-2, 2:-2, 2:-2] = rng.uniform(10, 100, size=tuple(s - 4 for s in shape))
        write_nifti(folder / f"{cid}{sep}{names.get(m, m)}.nii.gz", vol, affine)
    if with_label:
        lab = np.zeros(shape, np.uint8)
        for i, v in enumerate(label_values[1:]):  # one 3x4x4 block per label value, side by side
            lab[2 + 3 * i: 5 + 3 * i, 5:9, 5:9] = v
        write_nifti(folder / f"{cid}{sep}seg.nii.gz", lab, affine)
    return folder


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        make_case(root, f"case{i}", seed=i)
    return root


def tiny_prepared_cases(size: int = 36, clip: bool = False, n: int = 2):
    """``n`` preprocessed two-modality cases (t1ce, flair) of ``size``³ voxels: noise, an oedema
    block (label 2) a little shifted per case, an enhancing core (4) brighter on FLAIR."""
    from m2cofs.data.preprocess import CaseMeta, PreparedCase

    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        img = rng.uniform(0, 1, (2, size, size, size)).astype(np.float32)
        lab = np.zeros((size,) * 3, np.int16)
        lab[10:24, 12:26, 8 + i:22 + i] = 2
        lab[14:20, 15:21, 12:18] = 4
        img[1][lab > 0] = np.clip(img[1][lab > 0] + 0.5, 0, 1) if clip else img[1][lab > 0] + 0.5
        meta = CaseMeta(id=f"c{i}", modalities=["t1ce", "flair"], original_shape=[size] * 3,
                        original_affine=np.eye(4).tolist(), shape=[size] * 3, cropped_shape=[size] * 3)
        cases.append(PreparedCase(f"c{i}", img, np.ones((size,) * 3, bool), lab, meta))
    return cases


# Every test that trains or builds a network starts from the `tiny` preset (lite shrunk until it
# trains in seconds: m2cofs/configs/tiny.yaml) and states only what its own path needs on top.
TINY_PRESET = "tiny"

# The run the reliability and SIGKILL tests interrupt and resume: 22 optimiser steps over the four
# stages, a checkpoint after every step.
TINY_RUN = ["train.lr=0.003", "train.checkpoint_every=1", "train.epochs.stage2=2", "train.epochs.stage3=2"]
TINY_RUN_ARGS = ["--preset", TINY_PRESET, *[x for s in TINY_RUN for x in ("--set", s)]]


def tiny_model_config(**changes):
    """The tiny preset's ``model`` section with ``changes`` (a :class:`ModelConfig`)."""
    import dataclasses

    from m2cofs.config import load_config

    return dataclasses.replace(load_config(TINY_PRESET).model, **changes)


# The tiny preset with lite's grid, two Swin stages, SwinUNETR and the image ψ: the inference
# paths the inference and performance tests were written for (the weights head where a test asks).
TINY_INFERENCE = ["model.depths=[1,1]", "model.num_heads=[2,2]", "model.seg_head=swinunetr", "model.seg_feature_size=12",
                  "model.seg_window_size=2", "model.fusion_head=image", "data.spacing=[2,2,2]", "data.patch_size=[64,32,32]"]


def tiny_inference_model(tasks=("fusion", "segmentation"), extra=(), seed: int = 0):
    """An untrained in-memory model (t1ce, flair → ET, TC, WT): the tiny preset with
    :data:`TINY_INFERENCE` and ``extra`` overrides."""
    import torch

    from m2cofs.config import load_config
    from m2cofs.inference import LoadedModel
    from m2cofs.models import M2CoFSNet

    cfg = load_config(TINY_PRESET, overrides=[*TINY_INFERENCE, *extra])
    torch.manual_seed(seed)
    net = M2CoFSNet(2, 3, cfg.model, tuple(cfg.data.patch_size)).eval()
    meta = {"tasks": list(tasks), "modalities": ["t1ce", "flair"], "regions": ["ET", "TC", "WT"],
            "label_convention": "brats2013"}
    return LoadedModel(net, meta, cfg, None)


@pytest.fixture(scope="session")
def synth32(tmp_path_factory) -> Path:
    """Two 32³ phantoms (t1ce, flair), written once for the session: read them, never change them."""
    from m2cofs.cli import main

    root = tmp_path_factory.mktemp("synth32") / "data"
    assert main(["synth", str(root), "--cases", "2", "--size", "32", "--seed", "1", "--modalities", "t1ce,flair"]) == 0
    return root
