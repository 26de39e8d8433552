"""Hostile inputs that used to get through silently or with a traceback (issue #34): model files
whose metadata cannot be proven, numeric edge cases in predictions, label conventions that
disagree, output folders that cannot be written, and the work an untrusted header may ask for.

Each test here failed before its fix. The data-level hostile files (float overflow, ``x.nii``
beside ``x.nii.gz``, zero pixdim, disagreeing qform/sform, affines 2e-3 mm apart) are builders in
``bad_inputs.py`` and run through ``data check`` (test_data_loading.py) and the four commands
(test_reliability.py's matrix)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_case, write_nifti
from test_reliability import _predict, make_model, one_error_line, snapshot

from m2cofs.checkpoint import load_model_file, save_model_file, save_tensors, sha256_file, sidecar_path
from m2cofs.cli import main
from m2cofs.config import load_config


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "unified.ckpt")


def _copy_model(model, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, dst)
    shutil.copy(sidecar_path(model), sidecar_path(dst))
    return dst


# ----------------------------------------------------------------------------- model metadata
def test_weights_without_embedded_metadata_beside_a_lying_sidecar_are_refused(tmp_path, capsys, model):
    """Weights re-saved without their metadata, a sidecar that swaps the modalities and carries
    the right checksum: nothing proves the sidecar, so the model is refused."""
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    tensors, meta = load_model_file(m)
    save_tensors(m, tensors)  # no metadata
    meta["modalities"] = ["flair", "t1ce"]
    meta["sha256"] = sha256_file(m)
    sidecar_path(m).write_text(json.dumps(meta))
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "carries no embedded metadata" in line and "unified.ckpt" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field,value", [("label_convention", "msd"), ("preprocessing", {"spacing": [3.0, 3.0, 3.0]})])
def test_sidecar_that_lies_about_convention_or_spacing_is_refused(tmp_path, capsys, model, field, value):
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    meta = json.loads(sidecar_path(m).read_text())
    meta[field] = value if field != "preprocessing" else {**meta["preprocessing"], **value}
    sidecar_path(m).write_text(json.dumps(meta))  # checksum still right: the weights did not change
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "does not match" in line and field in line


def test_a_sidecar_asking_for_a_huge_network_does_not_get_it_built(tmp_path, capsys, model, monkeypatch):
    """A sidecar (with its embedded copy) asking for 512 channels: refused once the parameters
    registered pass twice the weights' size, before they are initialised (not 2.65 GB later)."""
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    tensors, meta = load_model_file(m)
    meta["config"]["model"].update(feature_channels=512, embed_dim=384, num_heads=[8])
    save_model_file(m, tensors, {k: v for k, v in meta.items() if k not in ("sha256", "format", "version")})
    registered = []
    real = torch.nn.Module.register_parameter

    def recording(self, name, param):
        registered.append(0 if param is None else param.numel() * param.element_size())
        return real(self, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", recording)
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "far larger than its weights" in line and "unified.ckpt" in line
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    assert sum(registered) <= 2 * weights + (64 << 20) + max(registered), sum(registered)


def test_unknown_label_convention_in_a_sidecar_is_one_line(tmp_path, capsys, model):
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    tensors, meta = load_model_file(m)
    meta["label_convention"] = "brats2099"
    save_model_file(m, tensors, {k: v for k, v in meta.items() if k not in ("sha256", "format", "version")})
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    assert "unknown label_convention 'brats2099'" in one_error_line(capsys.readouterr().err)


def test_bundled_model_still_loads_with_its_embedded_metadata():
    from m2cofs.bundled import resolve_model

    path, _ = resolve_model(None)
    tensors, meta = load_model_file(path)  # embedded copy present and equal to the sidecar
    assert meta["modalities"] and len(tensors) > 10
