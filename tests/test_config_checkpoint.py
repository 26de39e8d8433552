"""Presets, overrides, validation; safetensors model files with a checked sidecar."""

from __future__ import annotations

import pickle

import pytest
import torch

from m2cofs.checkpoint import load_model_file, load_tensors, save_model_file, sidecar_path
from m2cofs.config import load_config, parse_set
from m2cofs.errors import M2CofsError


def test_presets_have_the_papers_values():
    paper = load_config("paper")
    assert paper.train.lr == 3e-4 and paper.train.optimizer == "adamw"
    assert (paper.train.epochs["stage1"], paper.train.epochs["stage2"], paper.train.epochs["stage3"]) == (200, 100, 200)
    assert (paper.train.alpha, paper.train.si_lambda, paper.train.si_mu, paper.train.eta, paper.train.gamma) == (0.1, 0.1, 0.1, 2.0, 0.1)
    assert paper.model.embed_dim == 48 and paper.model.depths == (3, 3) and paper.model.num_heads == (6, 6)
    assert paper.model.window_size == 7 and paper.model.seg_feature_size == 48
    assert paper.model.seg_head == "swinunetr" and paper.model.fusion_head == "image"
    assert paper.train.lr_schedule == "constant"
    lite = load_config("lite")  # lite may change its heads where a measured run says so (results/README.md)
    assert lite.model.seg_head == "segresnet" and lite.model.fusion_head == "weights" and lite.train.lr_schedule == "poly"
    assert lite.model.fusion_weights == "gains" and lite.train.fusion_retention > 0 and lite.train.seg_loss == "dicece"
    # the paper keeps the paper's: its L_F alone, Dice, its intensity scaling, no budget shares, no test-time flips
    assert paper.train.fusion_retention == 0 and paper.train.fusion_ssim == 0 and paper.train.seg_loss == "dice"
    assert paper.data.intensity == "percentile" and not any(paper.train.budget_shares.values())
    assert paper.inference.tta_axes == () and paper.inference.wt_select == "largest" and paper.inference.et_min_mm3 == 0
    assert lite.model.embed_dim < paper.model.embed_dim and lite.data.spacing == (2.0, 2.0, 2.0)


def test_tiny_preset_is_lite_with_only_its_own_changes():
    """``tiny`` extends lite: every key it does not name is lite's, and it says it is tiny."""
    import yaml
    from importlib import resources

    lite, tiny = load_config("lite").to_dict(), load_config("tiny").to_dict()
    own = yaml.safe_load(resources.files("m2cofs.configs").joinpath("tiny.yaml").read_text(encoding="utf-8"))
    assert own.pop("extends") == "lite" and own.pop("preset") == "tiny" and tiny["preset"] == "tiny"
    for section in ("model", "data", "train", "inference"):
        for key, value in tiny[section].items():
            expected = own.get(section, {}).get(key, lite[section][key])
            if isinstance(expected, dict):
                expected = {**lite[section][key], **expected}
            assert value == (list(expected) if isinstance(expected, tuple) else expected), f"{section}.{key}"
    assert tiny["model"]["embed_dim"] < lite["model"]["embed_dim"] and tiny["data"]["spacing"] is None


def test_overrides_and_files(tmp_path):
    cfg = load_config("lite", overrides=["train.epochs.stage1=3", "train.manifold=euclidean", "data.spacing=null"])
    assert cfg.train.epochs["stage1"] == 3 and cfg.train.epochs["stage2"] == load_config("lite").train.epochs["stage2"]
    assert cfg.train.manifold == "euclidean" and cfg.data.spacing is None
    # a loop's own epochs: Stage I's fusion loop 2, its segmentation loop keeps the stage's 3
    loop = load_config("lite", overrides=["train.epochs.stage1=3", "train.epochs.stage1_fusion=2"])
    assert loop.train.epochs["stage1_fusion"] == 2 and loop.train.epochs["stage1"] == 3
    with pytest.raises(M2CofsError, match="train.epochs.stage1_fusio: unknown key; did you mean train.epochs.stage1_fusion"):
        load_config("lite", overrides=["train.epochs.stage1_fusio=2"])
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  knn_k: 9\n")
    assert load_config("lite", f).train.knn_k == 9
    assert parse_set(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("text,match", [
    ("train:\n  learning_rate: 0.1\n", "train.learning_rate: unknown key"),
    ("bogus: 1\n", "bogus: unknown key"),
    ("train:\n  lr: 5\n", "train.lr: must be between 0 and 1"),
    ("train:\n  epochs:\n    stage9: 1\n", "train.epochs.stage9: unknown key"),
    ("train:\n  epochs:\n    stage1: -1\n", "train.epochs.stage1: must be >= 0"),
    ("model:\n  seg_head: swinunetr\n  seg_feature_size: 12\ndata:\n  patch_size: [60, 64, 32]\n", "data.patch_size: must be multiples of 32"),
    ("model:\n  seg_head: vnet\n", "model.seg_head: unknown head"),
    ("train:\n  manifold: cosine\n", "train.manifold"),
    ("train:\n  lr: fast\n", "train.lr: expected a number"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("train: [1\n", "is not valid YAML"),
])
def test_bad_config_named(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(M2CofsError, match=match) as exc:
        load_config("lite", f)
    assert "bad.yaml" in str(exc.value) or "YAML mapping" in str(exc.value)


@pytest.mark.parametrize("item,hint", [
    ("train.epoch=3", "train.epoch: unknown key; did you mean train.epochs?"),
    ("train.epochs.stag1=3", "train.epochs.stag1: unknown key; did you mean train.epochs.stage1?"),
    ("trian.lr=0.1", "trian: unknown key; did you mean train?"),
    ("model.seghead=unet", "model.seghead: unknown key; did you mean model.seg_head?"),
    ("train.zzz=1", "train.zzz: unknown key (known: optimizer, lr,"),  # nothing close: no guess
])
def test_unknown_key_suggests_the_close_one(item, hint):
    with pytest.raises(M2CofsError) as exc:
        load_config("lite", overrides=[item])
    assert hint in str(exc.value) and "known: " in str(exc.value)


def test_model_file_round_trip_and_tamper(tmp_path):
    path = tmp_path / "m.ckpt"
    t = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    save_model_file(path, t, {"kind": "unified", "modalities": ["t1ce", "flair"]})
    back, meta = load_model_file(path)
    assert torch.equal(back["a.weight"], t["a.weight"]) and meta["modalities"] == ["t1ce", "flair"]
    assert sidecar_path(path).exists() and len(meta["sha256"]) == 64
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(M2CofsError, match="checksum does not match"):
        load_model_file(path)


def test_crafted_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state": Evil()}))
    with pytest.raises(M2CofsError, match="not a safetensors weight file"):
        load_tensors(path)
    torch.save({"x": Evil()}, tmp_path / "evil2.ckpt")
    with pytest.raises(M2CofsError, match="pickle"):
        load_tensors(tmp_path / "evil2.ckpt")
    assert not marker.exists()
    with pytest.raises(M2CofsError, match="has no sidecar"):
        load_model_file(path)
