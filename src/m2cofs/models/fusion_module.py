"""F — the feature-fusion module, the only part whose weights M²-CoFS unifies.

A densely connected stack of six 3×3×3 Conv3d + PReLU blocks (authors' code): block ``i``
sees the concatenated encoder features and the outputs of all earlier blocks; the fifth block
maps to ``out_channels`` and a sixth refines them. With two 16-channel encoders (paper size)
it has ≈145k parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from m2cofs.models.blocks import ConvPReLU


class DenseFusion(nn.Module):
    """F: (B, N·c, ...) concatenated encoder features → (B, out_channels, ...)."""

    def __init__(self, in_channels: int = 32, growth: int = 16, out_channels: int = 16, n_dense: int = 4):
        super().__init__()
        self.dense = nn.ModuleList()
        ch = in_channels
        for _ in range(n_dense):
            self.dense.append(ConvPReLU(ch, growth))
            ch += growth
        self.merge = ConvPReLU(ch, out_channels)
        self.refine = ConvPReLU(out_channels, out_channels)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats
        for block in self.dense:
            x = torch.cat((block(x), x), dim=1)
        return self.refine(self.merge(x))
