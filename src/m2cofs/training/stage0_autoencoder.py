"""Stage 0 — each modality's encoder Φ_i is pretrained as an autoencoder: Φ_i followed by the
shared decoder D reconstructs its own modality (L1). Φ is frozen afterwards; D's weights start
the fusion head ψ (as the authors load ψ into their autoencoder's decoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from m2cofs.models.network import M2CoFSNet
from m2cofs.training.engine import StageTask

NAME = "stage0_autoencoder"


class AutoencoderTask(StageTask):
    trained = ("encoders", "decoder")

    def __init__(self, net: M2CoFSNet):
        super().__init__()
        self.encoders = net.encoders
        self.decoder = net.decoder
        self.net = [net]  # not a sub-module: only encoders and decoder are this task's

    def forward(self, image: torch.Tensor, target: torch.Tensor, has_label: torch.Tensor):
        recon = self.net[0].reconstruct(image)
        loss = F.l1_loss(recon, image)
        return loss, {"l1": float(loss.detach())}
