"""ψ and φ — the task heads on F's output.

The segmentation head φ is chosen from a registry of MONAI networks (the paper's plug-in
experiment swaps it): ``swinunetr`` (the paper's), ``unetr``, ``segresnet`` and ``unet``.
Register another with :func:`register_seg_head`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from m2cofs.models.encoder import ReconstructionDecoder
from m2cofs.models.spec import add_seg_head_name, seg_head_names

FusionHead = ReconstructionDecoder

_SEG_HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_seg_head(name: str):
    """Decorator: register ``fn(in_channels, out_channels, feature_size, patch_size, **kw) -> nn.Module``."""

    def deco(fn):
        _SEG_HEADS[name] = fn
        add_seg_head_name(name)
        return fn

    return deco


def build_seg_head(name: str, in_channels: int, out_channels: int, feature_size: int,
                   patch_size: tuple[int, int, int], **kwargs) -> nn.Module:
    """Build the segmentation head called ``name`` (see :func:`seg_head_names`)."""
    try:
        fn = _SEG_HEADS[name]
    except KeyError:
        raise ValueError(f"unknown segmentation head {name!r}; choose one of {', '.join(seg_head_names())}") from None
    return fn(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
              patch_size=tuple(patch_size), **kwargs)


@register_seg_head("swinunetr")
def _swinunetr(in_channels, out_channels, feature_size, patch_size, depths=(2, 2, 2, 2),
               num_heads=(3, 6, 12, 24), window_size=7, **_):
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                     depths=tuple(depths), num_heads=tuple(num_heads), window_size=window_size,
                     use_checkpoint=False, use_flash_attention=True)


@register_seg_head("unetr")
def _unetr(in_channels, out_channels, feature_size, patch_size, **_):
    """UNETR sized by ``feature_size``: ViT width 16·f (768 at f = 48, MONAI's default), 12 heads."""
    from monai.networks.nets import UNETR

    hidden = 16 * feature_size
    return UNETR(in_channels=in_channels, out_channels=out_channels, img_size=patch_size, feature_size=feature_size,
                 hidden_size=hidden, mlp_dim=4 * hidden, num_heads=12, proj_type="conv", norm_name="instance")


@register_seg_head("segresnet")
def _segresnet(in_channels, out_channels, feature_size, patch_size, **_):
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, init_filters=feature_size,
                     blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))


@register_seg_head("unet")
def _unet(in_channels, out_channels, feature_size, patch_size, **_):
    from monai.networks.nets import UNet

    f = feature_size
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                channels=(f, 2 * f, 4 * f, 8 * f, 16 * f), strides=(2, 2, 2, 2), num_res_units=2, norm="instance")
