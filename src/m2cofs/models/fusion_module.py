"""F — the feature-fusion module, the only part whose weights M²-CoFS unifies.

A densely connected stack of six 3×3×3 Conv3d + PReLU blocks (authors' code): block ``i``
sees the concatenated encoder features and the outputs of all earlier blocks; the fifth block
maps to ``out_channels`` and a sixth refines them. With two 16-channel encoders (paper size)
it has ≈145k parameters.

The forward pass never builds the concatenations. A convolution over concatenated inputs is
the sum of convolutions over the pieces, so as soon as a piece exists (the input, then each
block's output) one convolution computes its share for *every* later block at once, and each
block adds its shares up. The weights, the maths and the FLOPs are those of the concatenating
form (:meth:`DenseFusion.forward_concat`, kept as the reference); the profile showed that the
concatenations cost a quarter of F's time and that one wide convolution runs faster than several
narrow ones, so this form is about twice as fast on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as tf
from torch import nn

from m2cofs.models.blocks import ConvPReLU


class DenseFusion(nn.Module):
    """F: (B, N·c, ...) concatenated encoder features → (B, out_channels, ...)."""

    def __init__(self, in_channels: int = 32, growth: int = 16, out_channels: int = 16, n_dense: int = 4,
                 passthrough: tuple[int, ...] = ()):
        super().__init__()
        self.in_channels = in_channels
        # input channels handed on unchanged after F's own output (the sources, with source_skip)
        self.passthrough = tuple(int(i) for i in passthrough)
        self.growth = growth
        self.dense = nn.ModuleList()
        ch = in_channels
        for _ in range(n_dense):
            self.dense.append(ConvPReLU(ch, growth))
            ch += growth
        self.merge = ConvPReLU(ch, out_channels)
        self.refine = ConvPReLU(out_channels, out_channels)

    def _piece_weight(self, piece: int) -> torch.Tensor:
        """Stacked kernels that take piece ``piece`` (−1: the input, j: dense block j's output)
        to every later block's pre-activation. Block i's input is ``cat(o_{i-1}, …, o_0, x)``."""
        convs = [b[0] for b in self.dense] + [self.merge[0]]
        g = self.growth
        parts = []
        for i in range(piece + 1, len(convs)):
            w = convs[i].weight
            if piece < 0:
                parts.append(w[:, w.shape[1] - self.in_channels:])
            else:
                start = (i - 1 - piece) * g
                parts.append(w[:, start:start + g])
        return torch.cat(parts, 0)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        g = self.growth
        bias = torch.cat([b[0].bias for b in self.dense] + [self.merge[0].bias])
        # pre-activations of blocks 0..n-1 and of the merge, stacked along channels
        acc = tf.conv3d(feats, self._piece_weight(-1), bias, padding=1)
        for j, block in enumerate(self.dense):
            out = block[1](acc[:, :g])
            acc = acc[:, g:] + tf.conv3d(out, self._piece_weight(j), None, padding=1)
        return self._with_passthrough(self.refine(self.merge[1](acc)), feats)

    def _with_passthrough(self, out: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        if not self.passthrough:
            return out
        return torch.cat([out, feats[:, list(self.passthrough)]], dim=1)

    def forward_concat(self, feats: torch.Tensor) -> torch.Tensor:
        """The concatenating form (authors' code); same result as :meth:`forward`."""
        x = feats
        for block in self.dense:
            x = torch.cat((block(x), x), dim=1)
        return self._with_passthrough(self.refine(self.merge(x)), feats)
