"""The M²-CoFS network: encoders Φ → feature-fusion module F → fusion head ψ and segmentation
head φ. One forward pass gives both outputs.

Only F is unified across tasks. The training stages swap F's weights (θF, θS, θS→F, θF→S, θU)
without rebuilding the network: :meth:`M2CoFSNet.forward` accepts ``fusion_params``, a mapping
of F's parameter names to tensors, applied with :func:`torch.func.functional_call` — that is
how Stage III runs F with the weights that the weight-generation network G writes.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call

from m2cofs.models.blocks import init_weights
from m2cofs.models.encoder import ReconstructionDecoder, SwinEncoder
from m2cofs.models.fusion_module import DenseFusion
from m2cofs.models.heads import build_fusion_head, build_seg_head, compose
from m2cofs.models.spec import ModelConfig  # re-exported: it lives in the torch-free spec module


class M2CoFSNet(nn.Module):
    """Φ (one encoder per modality) → F → (ψ, φ).

    Args:
        n_modalities: number of input sequences (≥ 2).
        n_classes: segmentation outputs (one sigmoid channel per region).
        cfg: part sizes.
        patch_size: training patch (UNETR needs it; others ignore it).
    """

    def __init__(self, n_modalities: int, n_classes: int, cfg: ModelConfig = ModelConfig(),
                 patch_size: tuple[int, int, int] = (64, 64, 64)):
        super().__init__()
        if n_modalities < 2:
            raise ValueError("M²-CoFS fuses two or more modalities")
        self.cfg = cfg
        self.n_modalities = n_modalities
        self.n_classes = n_classes
        c = cfg.feature_channels
        skip = cfg.source_skip
        self.encoders = nn.ModuleList(
            SwinEncoder(out_channels=c, embed_dim=cfg.embed_dim, depths=cfg.depths, num_heads=cfg.num_heads,
                        window_size=cfg.window_size, patch_size=cfg.patch_embed, append_input=skip)
            for _ in range(n_modalities)
        )
        self.decoder = ReconstructionDecoder(c)  # Stage 0 autoencoder decoder (shared by modalities)
        per = c + int(skip)  # each encoder's output width (its features, and with source_skip the modality itself)
        self.fusion = DenseFusion(n_modalities * per, cfg.fusion_growth, cfg.fusion_channels,
                                  passthrough=tuple(i * per + c for i in range(n_modalities)) if skip else ())
        self.trunk_channels = cfg.fusion_channels + (n_modalities if skip else 0)  # what the heads read
        self.fusion_head = build_fusion_head(cfg.fusion_head, self.trunk_channels, n_modalities, cfg.fusion_weights,
                                             n_classes if cfg.fusion_reads_seg else 0)
        self.seg_head = build_seg_head(cfg.seg_head, self.trunk_channels, n_classes, cfg.seg_feature_size,
                                       patch_size, depths=cfg.seg_depths, num_heads=cfg.seg_num_heads,
                                       window_size=cfg.seg_window_size)
        for part in (self.encoders, self.decoder, self.fusion, self.fusion_head):
            init_weights(part)
        if self.fusion_head.kind == "weights":
            self.fusion_head.zero_output()

    # --- pieces ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Φ: (B, N, ...) → concatenated features (B, N·c, ...)."""
        if x.shape[1] != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} input channels, got {x.shape[1]}")
        return torch.cat([enc(x[:, i: i + 1]) for i, enc in enumerate(self.encoders)], dim=1)

    def fuse_features(self, feats: torch.Tensor, fusion_params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """F, with its own weights or with ``fusion_params`` (names as in ``self.fusion``)."""
        if fusion_params is None:
            return self.fusion(feats)
        return functional_call(self.fusion, dict(fusion_params), (feats,))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Φ then F: the part both heads share, (B, N, ...) → (B, fusion_channels, ...)."""
        return self.fuse_features(self.encode(x))

    def trunk_geometry(self) -> tuple[int, int]:
        """``(alignment, halo)`` in voxels for running Φ → F → ψ tile by tile over a volume.

        Tiles that start at multiples of ``alignment`` (patch embedding × Swin window) put
        every attention window on the same grid as a pass over the whole volume does, and a
        margin of ``halo`` voxels on each side covers what a core voxel depends on: one window
        for the unshifted Swin blocks, one more per shifted block (every second block), the
        patch embedding, and one voxel per 3×3×3 convolution on the way (Φ's double convolutions,
        all of F's, which it applies one after another, and ψ's). The tile's core then equals the
        whole-volume result.
        """
        cfg = self.cfg
        align = cfg.patch_embed * cfg.window_size
        shifted = sum(d // 2 for d in cfg.depths)
        enc = self.encoders[0]
        convs = sum(m.kernel_size == (3, 3, 3) for part in (enc.conv_first, enc.conv_last, self.fusion, self.fusion_head)
                    for m in part.modules() if isinstance(m, nn.Conv3d))
        reach = align * (1 + shifted) + cfg.patch_embed + convs
        return align, -(-reach // align) * align

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 0: each modality through its encoder and the shared decoder → (B, N, ...) (the
        encoder's features only: with source_skip its copy of the input is left out)."""
        c = self.cfg.feature_channels
        return torch.cat([self.decoder(enc(x[:, i: i + 1])[:, :c]) for i, enc in enumerate(self.encoders)], dim=1)

    def forward(self, x: torch.Tensor, fusion_params: Mapping[str, torch.Tensor] | None = None,
                tasks: tuple[str, ...] = ("fusion", "segmentation")) -> dict[str, torch.Tensor]:
        """One pass: ``{"fused": (B,1,...), "seg": (B,R,...) logits}`` (the tasks asked for);
        with a ``weights`` fusion head also ``"fusion_weights"`` (B,N,...). A fusion head that
        reads φ's probabilities (:attr:`WeightFusionHead.reads_seg`) gets them from this pass's φ,
        which then runs for a fusion-only call too."""
        z = self.fuse_features(self.encode(x), fusion_params)
        out: dict[str, torch.Tensor] = {}
        reads_seg = "fusion" in tasks and self.fusion_head.reads_seg
        seg = self.seg_head(z) if "segmentation" in tasks or reads_seg else None
        if "fusion" in tasks:
            if self.fusion_head.kind == "weights":
                out["fusion_weights"] = self.fusion_head.weights(z, torch.sigmoid(seg) if reads_seg else None)
                out["fused"] = compose(out["fusion_weights"], x)
            else:
                out["fused"] = self.fusion_head(z)
        if "segmentation" in tasks:
            out["seg"] = seg
        return out

    def fusion_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of F's weights (θ)."""
        return {k: v.detach().clone() for k, v in self.fusion.state_dict().items()}

    def load_fusion_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.fusion.load_state_dict(dict(state))
