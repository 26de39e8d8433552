"""The M²-CoFS network and its parts.

* :mod:`~m2cofs.models.encoder` — Φ, the per-modality Swin encoder, and the decoder D / ψ.
* :mod:`~m2cofs.models.fusion_module` — F, the dense feature-fusion module (the unified part).
* :mod:`~m2cofs.models.heads` — ψ and the registry of segmentation heads φ (MONAI networks).
* :mod:`~m2cofs.models.network` — :class:`M2CoFSNet`, the whole network.
"""

from m2cofs.models.heads import build_seg_head, register_seg_head, seg_head_names
from m2cofs.models.network import M2CoFSNet, ModelConfig

__all__ = ["M2CoFSNet", "ModelConfig", "build_seg_head", "register_seg_head", "seg_head_names"]
