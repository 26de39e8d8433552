"""Φ — the per-modality encoder: double conv → Swin Transformer stages → up-sampling with a
residual → double conv to the feature width (the authors' "SwinAE" encoder).

The Swin part is MONAI's: :class:`monai.networks.blocks.PatchEmbed` (patch 2, halving the
resolution) and :class:`monai.networks.nets.swin_unetr.BasicLayer` stages without down-sampling;
:class:`monai.networks.blocks.UnetrPrUpBlock` brings the tokens back to full resolution, where
they are added to the double-conv features.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import PatchEmbed, UnetrPrUpBlock
from monai.networks.nets.swin_unetr import BasicLayer
from torch import nn

from m2cofs.models.blocks import DoubleConv


class SwinEncoder(nn.Module):
    """One modality's encoder Φ: (B, 1, X, Y, Z) → (B, out_channels, X, Y, Z).

    Args:
        out_channels: feature width handed to the fusion module (paper: 16).
        embed_dim: Swin embedding width (paper: 48; must be divisible by every head count).
        depths: Swin blocks per stage (paper: (3, 3)).
        num_heads: attention heads per stage (paper: (6, 6)).
        window_size: attention window edge (paper: 7).
        patch_size: patch-embedding stride (paper: 2). Inputs must be divisible by it.
    """

    def __init__(
        self,
        out_channels: int = 16,
        embed_dim: int = 48,
        depths: Sequence[int] = (3, 3),
        num_heads: Sequence[int] = (6, 6),
        window_size: int = 7,
        patch_size: int = 2,
        in_channels: int = 1,
        append_input: bool = False,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.append_input = append_input  # the modality itself as one more output channel (the skip of source_skip)
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        for h in num_heads:
            if embed_dim % h:
                raise ValueError(f"embed_dim {embed_dim} is not divisible by {h} heads")
        self.patch_size = patch_size
        self.conv_first = DoubleConv(in_channels, embed_dim, embed_dim // 2)
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=embed_dim, embed_dim=embed_dim,
                                      norm_layer=nn.LayerNorm, spatial_dims=3)
        self.stages = nn.ModuleList(
            BasicLayer(dim=embed_dim, depth=d, num_heads=h, window_size=(window_size,) * 3,
                       drop_path=[0.0] * d, mlp_ratio=4.0, qkv_bias=True, downsample=None,
                       use_flash_attention=True)  # fused SDPA when autograd is off (inference); same maths
            for d, h in zip(depths, num_heads)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.up = UnetrPrUpBlock(spatial_dims=3, in_channels=embed_dim, out_channels=embed_dim, num_layer=0,
                                 kernel_size=patch_size, stride=patch_size, upsample_kernel_size=patch_size,
                                 norm_name="instance")
        self.conv_last = DoubleConv(embed_dim, out_channels, embed_dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv_first(x)
        tokens = self.patch_embed(first)  # (B, C, X/2, Y/2, Z/2)
        for stage in self.stages:
            tokens = stage(tokens.contiguous())
        tokens = self.norm(tokens.movedim(1, -1)).movedim(-1, 1)
        out = self.conv_last(self.up(tokens) + first)
        return torch.cat([out, x], dim=1) if self.append_input else out


class ReconstructionDecoder(nn.Module):
    """Decoder D of the Stage-0 autoencoders, and the fusion head ψ (which starts from D's
    weights): DoubleConv(c → c/2), DoubleConv(c/2 → c/2), then a 1×1×1 convolution to one
    channel, as in the authors' code (16 → 8 → 8 → 1 at paper size)."""

    def __init__(self, in_channels: int = 16, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(in_channels // 2, 2)
        self.layer1 = DoubleConv(in_channels, hidden)
        self.layer2 = DoubleConv(hidden, hidden)
        self.out = nn.Conv3d(hidden, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.layer2(self.layer1(x)))
