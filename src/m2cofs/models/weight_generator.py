"""G — the weight-generation network of Stage III.

A per-parameter MLP (2 → 64 → 64 → 1, ReLU; ≈4.4k parameters) reads each scalar pair
(θS→F[i], θF→S[i]) and writes θU[i]. Its last layer starts at zero, so θU starts at a sensible
interpolation — the mean of the two Stage II weights (``init="mean"``), or θF as in the authors'
code (``init="theta_f"``) — and G learns a correction. Each parameter tensor's pairs are divided
by that tensor's scale (the RMS of both weight sets) before the MLP and the correction is
multiplied back, so one small MLP serves layers whose weights differ by orders of magnitude.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class WeightGenerator(nn.Module):
    """θU = base + s · MLP(θS→F / s, θF→S / s), element-wise, one scale ``s`` per tensor."""

    def __init__(self, theta_sf: Mapping[str, torch.Tensor], theta_fs: Mapping[str, torch.Tensor],
                 hidden: int = 64, init: str = "mean", theta_f: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        if set(theta_sf) != set(theta_fs):
            raise ValueError("θS→F and θF→S must have the same parameter names")
        if init not in ("mean", "theta_f"):
            raise ValueError(f"init must be mean or theta_f, got {init!r}")
        if init == "theta_f" and theta_f is None:
            raise ValueError("init='theta_f' needs theta_f")
        self.names = list(theta_sf)
        for i, k in enumerate(self.names):
            a, b = theta_sf[k].detach().float(), theta_fs[k].detach().float()
            base = (a + b) / 2 if init == "mean" else theta_f[k].detach().float()
            scale = torch.sqrt(((a**2).mean() + (b**2).mean()) / 2).clamp_min(1e-6)
            self.register_buffer(f"a{i}", a.clone())
            self.register_buffer(f"b{i}", b.clone())
            self.register_buffer(f"base{i}", base.clone())
            self.register_buffer(f"scale{i}", scale.reshape(()))
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, k in enumerate(self.names):
            a, b, base, s = (getattr(self, f"{p}{i}") for p in ("a", "b", "base", "scale"))
            pairs = torch.stack((a.reshape(-1), b.reshape(-1)), dim=1) / s
            out[k] = base + self.mlp(pairs).reshape(a.shape) * s
        return out
