"""The network's torch-free facts: :class:`ModelConfig` (part sizes) and the segmentation-head names.

The command line and :mod:`m2cofs.config` need these to parse and check a configuration;
importing them must not import torch or MONAI (that takes seconds), so they live here rather
than in :mod:`~m2cofs.models.network` and :mod:`~m2cofs.models.heads`, which re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of every part (a preset's ``model`` section)."""

    feature_channels: int = 16  # each encoder's output width (paper 16)
    embed_dim: int = 48  # Swin embedding width (paper 48)
    depths: tuple[int, ...] = (3, 3)
    num_heads: tuple[int, ...] = (6, 6)
    window_size: int = 7
    patch_embed: int = 2
    fusion_growth: int = 16  # F's dense growth rate (paper 16)
    fusion_channels: int = 16  # F's output width (paper 16)
    fusion_head: str = "image"  # ψ writes the fused intensity (paper) or per-voxel source weights
    fusion_weights: str = "softmax"  # a weights head's normalisation: softmax (convex) or gains (each in [0, 2/N])
    fusion_reads_seg: bool = False  # a weights head also reads φ's region probabilities (a zero-initialised 1×1×1 path)
    seg_head: str = "swinunetr"
    source_skip: bool = False  # F's output also carries the sources themselves (parameter-free): both heads see the image
    seg_feature_size: int = 48
    seg_depths: tuple[int, ...] = (2, 2, 2, 2)
    seg_num_heads: tuple[int, ...] = (3, 6, 12, 24)
    seg_window_size: int = 7


FUSION_HEADS = ("image", "weights")  # see m2cofs.models.heads
FUSION_WEIGHTS = ("softmax", "gains")  # how a weights head turns its logits into source weights

# The built-in heads of m2cofs.models.heads; register_seg_head adds the names of others here too.
_SEG_HEAD_NAMES: set[str] = {"swinunetr", "unetr", "segresnet", "unet"}


def add_seg_head_name(name: str) -> None:
    """Record a segmentation head's name (called by :func:`m2cofs.models.heads.register_seg_head`)."""
    _SEG_HEAD_NAMES.add(name)


def seg_head_names() -> list[str]:
    """The names of the segmentation heads, sorted."""
    return sorted(_SEG_HEAD_NAMES)
