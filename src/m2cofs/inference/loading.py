"""A model file, loaded for inference: :class:`LoadedModel` (the network and its sidecar) and
:func:`load_model`; :func:`prepare_for_inference` puts a network in inference shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from m2cofs.checkpoint import load_model_file, resolve_model_file
from m2cofs.config import Config
from m2cofs.data.labels import LabelConvention, get_convention
from m2cofs.data.preprocess import PreprocessConfig
from m2cofs.errors import M2CofsError
from m2cofs.models.network import M2CoFSNet


@dataclass
class LoadedModel:
    net: M2CoFSNet
    meta: dict[str, Any]
    config: Config
    path: Path

    @property
    def tasks(self) -> list[str]:
        return list(self.meta.get("tasks", ["fusion", "segmentation"]))

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def convention(self) -> LabelConvention:
        return get_convention(self.meta["label_convention"])

    @property
    def preprocessing(self) -> PreprocessConfig:
        """The preprocessing the model was trained with (its sidecar's; else its config's)."""
        if "preprocessing" in self.meta:
            return PreprocessConfig.from_dict(self.meta["preprocessing"])
        return PreprocessConfig(spacing=self.config.data.spacing, intensity=self.config.data.intensity)

    def dataset(self, path: str | Path, **kwargs):
        """The :class:`~m2cofs.data.dataset.MultiModalDataset` of ``path`` that this model can
        predict: its modalities, in its order, and its preprocessing. Other arguments (``format``,
        ``ids``, ``resample_to``, ``cache_dir``, ``labels``, ``load_labels`` — default ``False``)
        go to the dataset."""
        from m2cofs.data.dataset import MultiModalDataset

        fixed = [k for k in ("modalities", "preprocess") if k in kwargs]
        if fixed:
            raise M2CofsError(f"{' and '.join(fixed)} come(s) from the model ({', '.join(self.modalities)}; "
                              f"{self.preprocessing.to_dict()}): do not pass {', '.join(fixed)} to dataset()",
                              self.path)
        kwargs.setdefault("load_labels", False)
        return MultiModalDataset(path, modalities=self.modalities, preprocess=self.preprocessing, **kwargs)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network described by a model file's sidecar and load its weights.

    ``path`` may be a training run's folder: its ``unified.ckpt`` is loaded (``.path`` says so),
    or a bundled model's name (``"brats-t1ce-flair"``), as ``m2cofs predict --model`` takes it."""
    from m2cofs.bundled import resolve_model

    if not isinstance(path, Path):
        path = resolve_model(str(path))[0]  # a file wins over a bundled model of the same name
    path = resolve_model_file(path)
    tensors, meta = load_model_file(path)
    try:
        cfg = Config.from_dict(meta["config"], source=f"{path.name} sidecar")
        n_mod = len(meta["modalities"])
        n_cls = len(meta["regions"])
    except KeyError as exc:
        raise M2CofsError(f"sidecar lacks {exc}", path) from None
    try:
        get_convention(str(meta.get("label_convention")))
    except (KeyError, ValueError):
        raise M2CofsError(f"sidecar names an unknown label_convention {meta.get('label_convention')!r}", path) from None
    # the shapes first, on the meta device (no memory): a sidecar asking for a huge network must
    # not get it built before its weights are found not to fit
    # a sidecar asking for a huge network must not get it built before its weights are found not
    # to fit: building stops once the parameters pass twice the weights' size (the decoder, used
    # only in training, is not saved) plus 64 MB
    budget = 2 * sum(t.numel() * t.element_size() for t in tensors.values()) + (64 << 20)
    net = _build_within(n_mod, n_cls, cfg, budget, path)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    unknown = [k for k in tensors if k not in shapes]
    wrong = [k for k in tensors if k in shapes and shapes[k] != tuple(tensors[k].shape)]
    if unknown or wrong:
        bad = (unknown or wrong)[0]
        raise M2CofsError(f"weights do not fit the network its sidecar describes (e.g. {bad}): "
                          "the checkpoint belongs to another preset or modality count", path)
    net.load_state_dict(tensors, strict=False)
    tasks = meta.get("tasks", [])
    reads_seg = "fusion" in tasks and net.fusion_head.reads_seg  # ψ's weights need φ's probabilities
    needed = ["encoders.", "fusion."] + (["fusion_head."] if "fusion" in tasks else []) + \
             (["seg_head."] if "segmentation" in tasks or reads_seg else [])
    for prefix in needed:
        if not any(k.startswith(prefix) for k in tensors):
            raise M2CofsError(f"has no {prefix.rstrip('.')} weights", path)
    prepare_for_inference(net, device)
    return LoadedModel(net, meta, cfg, path)


class _TooLarge(Exception):
    pass


def _build_within(n_mod: int, n_cls: int, cfg: Config, budget: int, path: Path) -> M2CoFSNet:
    """The network a sidecar describes, refused as soon as its parameters pass ``budget`` bytes
    (checked as each is registered, before it is initialised: the memory past it is never used)."""
    register = torch.nn.Module.register_parameter
    used = [0]

    def counting(self, name, param):
        if param is not None:
            used[0] += param.numel() * param.element_size()
            if used[0] > budget:
                raise _TooLarge
        register(self, name, param)

    torch.nn.Module.register_parameter = counting
    try:
        return M2CoFSNet(n_mod, n_cls, cfg.model, tuple(cfg.data.patch_size))
    except _TooLarge:
        raise M2CofsError(f"its sidecar describes a network of more than {budget / 2**20:.0f} MB of parameters, far "
                          "larger than its weights: the checkpoint belongs to another preset or modality count",
                          path) from None
    finally:
        torch.nn.Module.register_parameter = register


def prepare_for_inference(net: torch.nn.Module, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Eval mode on ``device`` with ``channels_last_3d`` weights; on CUDA also cuDNN autotuning
    (every window has the same shape)."""
    device = torch.device(device)
    net.eval().to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    net.to(memory_format=torch.channels_last_3d)
    return net

def fusion_head_kind(model: LoadedModel) -> str:
    """``"image"`` or ``"weights"`` (networks without ψ count as ``"image"``)."""
    return getattr(getattr(model.net, "fusion_head", None), "kind", "image")


