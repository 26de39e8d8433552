"""Small convolutional building blocks shared by the M²-CoFS parts (3-D conv + PReLU)."""

from __future__ import annotations

import torch
from torch import nn


class ConvPReLU(nn.Sequential):
    """3×3×3 convolution followed by a channel-wise PReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv3d(in_channels, out_channels, 3, padding=1), nn.PReLU(out_channels))


class DoubleConv(nn.Sequential):
    """Two :class:`ConvPReLU` blocks: ``in → mid → out`` channels."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid = mid_channels or out_channels
        super().__init__(ConvPReLU(in_channels, mid), ConvPReLU(mid, out_channels))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal init for convolutions (fan-in, PReLU slope 0.25), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``channels_last_3d`` memory format for 5-D tensors (faster 3-D convs on CPU)."""
    return x.contiguous(memory_format=torch.channels_last_3d) if x.dim() == 5 else x
