"""ψ and φ — the task heads on F's output.

The fusion head ψ is one of :data:`FUSION_HEADS`:

- ``image`` (the paper's): a small decoder that writes the fused intensity itself.
- ``weights``: the same decoder with one output per source, turned into per-voxel source
  weights; the fused volume is the weighted sum of the (scaled) sources (:func:`compose`). The
  weights are a softmax (``fusion_weights: softmax``: a convex blend, never brighter than the
  brightest source) or gains (``gains``: each weight (2/N)·sigmoid, in [0, 2/N], so a voxel can
  add the sources up, e.g. T1ce's enhancing rim on top of FLAIR's oedema; still a per-voxel
  combination of the sources' intensities, never an intensity of its own). The weights are smooth, so they can be computed on the model's coarse grid
  and applied to the sources on the input's own grid: the fused volume keeps the scan's
  resolution (``results/`` measures what the coarse grid costs an intensity head).
  With ``seg_channels`` (``model.fusion_reads_seg``) the weights head also reads φ's region
  probabilities through a 1×1×1 path into its logits, zero at the start (nothing changes until
  Stage III trains it) and fed detached (the fusion loss never moves φ or F through it): where
  the network sees a tumour region, ψ can weight the sources differently — still only the
  sources' intensities, so a wrong segmentation changes a weight, never paints what no source
  shows (``results/fusion_screen`` found the path; ``results/`` measures it).

The segmentation head φ is chosen from a registry of MONAI networks (the paper's plug-in
experiment swaps it): ``swinunetr`` (the paper's), ``unetr``, ``segresnet`` and ``unet``.
Register another with :func:`register_seg_head`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from m2cofs.models.encoder import ReconstructionDecoder
from m2cofs.models.spec import FUSION_HEADS, add_seg_head_name, seg_head_names



class ImageFusionHead(ReconstructionDecoder):
    """ψ as in the paper: F's features → the fused intensity (one channel)."""

    kind = "image"
    reads_seg = False

    def init_from_decoder(self, decoder: ReconstructionDecoder) -> None:
        """Start from the Stage-0 decoder D (the paper's initialisation of ψ)."""
        self.load_state_dict(decoder.state_dict())

    def fuse(self, z: torch.Tensor, sources: torch.Tensor | None = None, seg_prob: torch.Tensor | None = None) -> torch.Tensor:
        return self(z)


class WeightFusionHead(ReconstructionDecoder):
    """ψ that writes per-voxel source weights: F's features (and, with ``seg_channels``, φ's
    region probabilities) → N logits → softmax weights or gains."""

    kind = "weights"

    def __init__(self, in_channels: int, n_sources: int, normalise: str = "softmax", seg_channels: int = 0):
        super().__init__(in_channels)
        if normalise not in ("softmax", "gains"):
            raise ValueError(f"unknown source-weight normalisation {normalise!r}; choose softmax or gains")
        self.normalise = normalise
        self.out = nn.Conv3d(self.out.in_channels, n_sources, kernel_size=1)
        # No bias: without probabilities (or with none anywhere) the path adds exactly nothing.
        self.seg_path = nn.Conv3d(seg_channels, n_sources, kernel_size=1, bias=False) if seg_channels else None
        if self.seg_path is not None:
            self.register_load_state_dict_pre_hook(_zero_path_if_absent)

    def init_from_decoder(self, decoder: ReconstructionDecoder) -> None:
        """D's layers, and a zero last layer: equal weights (mean fusion) at the start."""
        state = {k: v for k, v in decoder.state_dict().items() if not k.startswith("out.")}
        self.load_state_dict(state, strict=False)
        self.zero_output()

    def zero_output(self) -> None:
        """Equal source weights everywhere (mean fusion) until training moves them; φ's path zero."""
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if self.seg_path is not None:
            nn.init.zeros_(self.seg_path.weight)

    @property
    def reads_seg(self) -> bool:
        """Whether the weights depend on φ's probabilities: a path that is still zero (every
        model before Stage III trains it, e.g. the fusion specialist) adds nothing, so callers
        need not run φ for it."""
        return self.seg_path is not None and bool(self.seg_path.weight.detach().any())

    def logits(self, z: torch.Tensor, seg_prob: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, ...) logits: ψ's on F's features, plus the path from ``seg_prob`` (B, R, ...)
        (region probabilities in [0, 1], detached here) when the head has one."""
        logits = self(z)
        if self.seg_path is None:
            return logits
        if seg_prob is None:
            if self.reads_seg:
                raise ValueError("this fusion head reads the segmentation head's probabilities: pass seg_prob")
            # Keeps the zero path in the graph with a zero gradient, so that DDP sees every trained
            # parameter used and Adam leaves it at zero (stages before φ exists).
            return logits + 0.0 * self.seg_path.weight.sum()
        return logits + self.seg_path(seg_prob.detach().to(logits.dtype))

    def weights_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) source weights: summing to one over the sources (softmax), or each in
        [0, 2/N] (gains; 1/N each, mean fusion, at zero logits)."""
        if self.normalise == "gains":
            return torch.sigmoid(logits) * (2.0 / logits.shape[1])
        return torch.softmax(logits, dim=1)

    def weights(self, z: torch.Tensor, seg_prob: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, ...) source weights from F's features (and φ's probabilities, see :meth:`logits`)."""
        return self.weights_from_logits(self.logits(z, seg_prob))

    def fuse(self, z: torch.Tensor, sources: torch.Tensor | None = None, seg_prob: torch.Tensor | None = None) -> torch.Tensor:
        if sources is None:
            raise ValueError("a 'weights' fusion head needs the sources to fuse")
        return compose(self.weights(z, seg_prob), sources)


def _zero_path_if_absent(head: WeightFusionHead, state_dict: dict, prefix: str, *_) -> None:
    """A ψ saved without φ's path (trained with ``model.fusion_reads_seg`` off, or before Stage III
    of a run with it on: the path is zero until then either way) loads as a zero path, so Stage
    III with the option can start from Stage I/II results trained without it."""
    key = prefix + "seg_path.weight"
    if key not in state_dict:
        state_dict[key] = torch.zeros_like(head.seg_path.weight)


def compose(weights, sources):
    """Σ_i w_i · x_i over the source axis (1 for tensors (B, N, ...), 0 for arrays (N, ...)),
    keeping that axis with size one for tensors."""
    if isinstance(weights, torch.Tensor):
        return (weights * sources).sum(dim=1, keepdim=True)
    return (weights * sources).sum(axis=0)


def build_fusion_head(kind: str, in_channels: int, n_sources: int, normalise: str = "softmax",
                      seg_channels: int = 0) -> nn.Module:
    """ψ of ``kind``; ``seg_channels`` > 0: a weights head that also reads that many region
    probabilities of φ (an image head cannot: it would write intensities of its own)."""
    if kind == "image":
        if seg_channels:
            raise ValueError("only a 'weights' fusion head can read the segmentation head's probabilities")
        return ImageFusionHead(in_channels)
    if kind == "weights":
        return WeightFusionHead(in_channels, n_sources, normalise, seg_channels)
    raise ValueError(f"unknown fusion head {kind!r}; choose one of {', '.join(FUSION_HEADS)}")


FusionHead = ImageFusionHead

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
