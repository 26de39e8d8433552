"""Stage III — one unified weight θU for both tasks.

The weight-generation network G (:class:`~m2cofs.models.weight_generator.WeightGenerator`)
maps (θS→F, θF→S) to θU; F runs with θU (through ``torch.func.functional_call``), and G is
trained jointly with both heads on

    L = L′F + η L′S + γ L_M,

with L′F = L_F + λ Σ Ω^S (θU − θS)², L′S = L_S + μ Σ Ω^F (θU − θF)² (the Stage II objectives
evaluated at θU; ``train.stage3_si: false`` drops the SI terms) and L_M the manifold distance
from θU to θS→F and θF→S (geodesic on a k-NN graph, or Euclidean). Afterwards θU = G(...) is
materialised: the unified network needs no G.

With ``model.fusion_reads_seg`` ψ also reads φ's region probabilities of the same pass
(detached), through a path that starts at zero and trains at ``train.seg_path_lr_scale`` times
the loop's rate: the fused volume can weight the sources by where the network sees the tumour.
"""

from __future__ import annotations

import torch

from m2cofs.losses import FusionLoss, make_seg_loss, manifold_distance, si_penalty
from m2cofs.models.network import M2CoFSNet
from m2cofs.models.weight_generator import WeightGenerator
from m2cofs.training.engine import StageTask
from m2cofs.training.stage1_independent import masked_seg_loss

NAME = "stage3_unification"


class UnificationTask(StageTask):
    trained = ("generator", "fusion_head", "seg_head")

    def __init__(self, net: M2CoFSNet, generator: WeightGenerator, theta_sf, theta_fs, *, fusion_loss: FusionLoss, eta: float,
                 gamma: float, seg_loss: str, manifold: str, knn_k: int,
                 si: tuple[dict, dict, dict, dict, float, float] | None = None, seg_path_lr_scale: float = 1.0):
        super().__init__()
        self.encoders = net.encoders
        self.fusion_module = [net.fusion]  # F's structure only; its weights come from G
        self.generator = generator
        self.fusion_head = net.fusion_head
        self.seg_head = net.seg_head
        self.theta_sf = {k: v.detach().clone() for k, v in theta_sf.items()}
        self.theta_fs = {k: v.detach().clone() for k, v in theta_fs.items()}
        self.fusion_loss, self.eta, self.gamma = fusion_loss, eta, gamma
        self.loss_fn = make_seg_loss(seg_loss)
        self.manifold, self.knn_k = manifold, knn_k
        self.si = si  # (Ω^S, θS, Ω^F, θF, λ, μ)
        self.seg_path_lr_scale = float(seg_path_lr_scale)
        self.feeds_seg = getattr(net.fusion_head, "seg_path", None) is not None  # ψ reads φ's probabilities

    def param_groups(self) -> list[dict]:
        """ψ's path from φ (when it has one) in a group of its own, at ``seg_path_lr_scale`` × the rate."""
        if not self.feeds_seg:
            return super().param_groups()
        path = self.fusion_head.seg_path
        own = {id(p) for p in path.parameters()}
        rest = [p for p in self.trained_parameters() if id(p) not in own]
        return [{"params": rest}, {"params": [p for p in path.parameters() if p.requires_grad],
                                   "lr_scale": self.seg_path_lr_scale}]

    def forward(self, image, target, has_label):
        from torch.func import functional_call

        theta_u = self.generator()
        with torch.no_grad():
            feats = torch.cat([enc(image[:, i: i + 1]) for i, enc in enumerate(self.encoders)], dim=1)
        z = functional_call(self.fusion_module[0], theta_u, (feats,))
        logits = self.seg_head(z)
        fused = self.fusion_head.fuse(z, image, torch.sigmoid(logits.detach()) if self.feeds_seg else None)
        lf, fparts = self.fusion_loss(fused, image, target, has_label)
        ls = masked_seg_loss(self.loss_fn, logits, target, has_label)
        parts = {"fusion": float(lf.detach()), "seg": float(ls.detach())}
        if self.si is not None:
            omega_s, theta_s, omega_f, theta_f, lam, mu = self.si
            pf = si_penalty(theta_u, omega_s, theta_s)
            ps = si_penalty(theta_u, omega_f, theta_f)
            lf = lf + lam * pf
            ls = ls + mu * ps
            parts["si"] = float((lam * pf + mu * ps).detach())
        lm, _ = manifold_distance(theta_u, self.theta_sf, self.theta_fs, self.manifold, self.knn_k)
        parts["manifold"] = float(lm.detach())
        loss = lf + self.eta * ls + self.gamma * lm
        return loss, parts

    @torch.no_grad()
    def unified_weights(self) -> dict[str, torch.Tensor]:
        """θU = G(θS→F, θF→S), detached."""
        return {k: v.detach().clone() for k, v in self.generator().items()}
