"""Segmentation peers outside the method: MONAI networks trained for segmentation alone on the
raw input modalities (the same cases, channels, patches and Dice loss as M²-CoFS).

* ``segresnet`` — SegResNet (Myronenko, "3D MRI brain tumor segmentation using autoencoder
  regularization", BrainLes 2018) as in MONAI's BraTS tutorial: init_filters 16, blocks_down
  (1, 2, 2, 4), blocks_up (1, 1, 1), dropout 0.2.
* ``unet`` — MONAI's residual UNet (Kerfoot et al., STACOM 2018): channels (16, 32, 64, 128,
  256), strides (2, 2, 2, 2), two residual units per level, instance normalisation (MONAI's
  default).

Patch sides must be multiples of 8 (SegResNet) or 16 (UNet).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from m2cofs.losses import make_seg_loss
from m2cofs.training.engine import StageTask
from m2cofs.training.stage1_independent import masked_seg_loss

PEERS = ("segresnet", "unet")


def build_peer(name: str, in_channels: int, out_channels: int, **overrides) -> nn.Module:
    """The peer network ``name`` (``segresnet`` or ``unet``) for ``in_channels`` modalities and
    ``out_channels`` sigmoid regions; ``overrides`` replace MONAI constructor arguments."""
    if name == "segresnet":
        from monai.networks.nets import SegResNet

        kw = dict(spatial_dims=3, init_filters=16, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), dropout_prob=0.2)
        kw.update(overrides)
        return SegResNet(in_channels=in_channels, out_channels=out_channels, **kw)
    if name == "unet":
        from monai.networks.nets import UNet

        kw = dict(spatial_dims=3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
        kw.update(overrides)
        return UNet(in_channels=in_channels, out_channels=out_channels, **kw)
    raise ValueError(f"unknown segmentation peer {name!r}; choose one of {', '.join(PEERS)}")


class PeerTask(StageTask):
    """A peer network on the segmentation loss (a :class:`~m2cofs.training.engine.StageTask`):
    ``forward(image, target, has_label)`` feeds all modalities to the network."""

    trained = ("model",)

    def __init__(self, model: nn.Module, seg_loss: str | Callable = "dice"):
        super().__init__()
        self.model = model
        self.loss_fn = make_seg_loss(seg_loss) if isinstance(seg_loss, str) else seg_loss

    def forward(self, image: torch.Tensor, target: torch.Tensor, has_label: torch.Tensor):
        logits = self.model(image)
        loss = masked_seg_loss(self.loss_fn, logits, target, has_label)
        return loss, {"dice_loss": float(loss.detach())}
