"""The M²-CoFS network and its parts.

* :mod:`~m2cofs.models.spec` — :class:`ModelConfig` and the segmentation-head names (no torch).
* :mod:`~m2cofs.models.encoder` — Φ, the per-modality Swin encoder, and the decoder D / ψ.
* :mod:`~m2cofs.models.fusion_module` — F, the dense feature-fusion module (the unified part).
* :mod:`~m2cofs.models.heads` — ψ and the registry of segmentation heads φ (MONAI networks).
* :mod:`~m2cofs.models.network` — :class:`M2CoFSNet`, the whole network.

The torch-backed names are imported on first use, so ``import m2cofs.models.spec`` (the command
line, :mod:`m2cofs.config`) does not import torch.
"""

from m2cofs.models.spec import ModelConfig, seg_head_names

_LAZY = {"M2CoFSNet": "m2cofs.models.network", "build_seg_head": "m2cofs.models.heads",
         "register_seg_head": "m2cofs.models.heads"}

__all__ = ["M2CoFSNet", "ModelConfig", "build_seg_head", "register_seg_head", "seg_head_names"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
