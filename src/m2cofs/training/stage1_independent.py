"""Stage I — the two tasks trained independently from one shared initialisation of F.

* fusion path: F and ψ on L_F (Φ frozen) → θF, ψ;
* segmentation path: F and φ on the Dice loss (Φ frozen) → θS, φ.

Both start F from the same seeded weights θ0, so θF and θS are comparable in weight space.
Each path accumulates Synaptic-Intelligence importance Ω for F's parameters along its
trajectory (Ω^F, Ω^S), which Stage II uses to protect the task a weight set came from.
"""

from __future__ import annotations

import torch

from m2cofs.losses import SynapticIntelligence, fusion_loss, make_seg_loss
from m2cofs.models.network import M2CoFSNet
from m2cofs.training.engine import StageTask

FUSION = "stage1_fusion"
SEGMENTATION = "stage1_segmentation"


def masked_seg_loss(loss_fn, logits: torch.Tensor, target: torch.Tensor, has_label: torch.Tensor) -> torch.Tensor:
    """Mean per-sample segmentation loss over the samples that have a label (0 if none)."""
    per = loss_fn(logits, target)
    w = has_label.to(per.dtype)
    return (per * w).sum() / w.sum().clamp_min(1.0) + 0.0 * logits.sum()


class _SITracking(StageTask):
    """Adds Synaptic-Intelligence tracking of F's parameters to a task."""

    si: SynapticIntelligence | None = None

    def _init_si(self, xi: float | None) -> None:
        self.si = SynapticIntelligence(dict(self.fusion.named_parameters()), xi) if xi is not None else None

    def before_optimizer_step(self) -> None:
        if self.si is not None:
            self.si.before_step()

    def after_optimizer_step(self) -> None:
        if self.si is not None:
            self.si.after_step()

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self.si.state_dict() if self.si is not None else {}

    def load_extra_state(self, state) -> None:
        if self.si is not None and state:
            self.si.load_state_dict(state)


class FusionTask(_SITracking):
    """F + ψ on the fusion loss (+ an optional SI penalty, used by Stage II)."""

    def __init__(self, net: M2CoFSNet, alpha: float = 0.1, si_xi: float | None = None,
                 penalty: tuple[dict, dict, float] | None = None, train_head: bool = True):
        super().__init__()
        self.trained = ("fusion", "fusion_head") if train_head else ("fusion",)
        self.encoders = net.encoders
        self.fusion = net.fusion
        self.fusion_head = net.fusion_head
        self.alpha = alpha
        self.penalty = penalty  # (importance, anchor, weight)
        self._init_si(si_xi)

    def forward(self, image, target, has_label):
        from m2cofs.losses import si_penalty

        with torch.no_grad():
            feats = torch.cat([enc(image[:, i: i + 1]) for i, enc in enumerate(self.encoders)], dim=1)
        fused = self.fusion_head(self.fusion(feats))
        loss, parts = fusion_loss(fused, image, self.alpha)
        if self.penalty is not None:
            importance, anchor, weight = self.penalty
            pen = si_penalty(dict(self.fusion.named_parameters()), importance, anchor)
            loss = loss + weight * pen
            parts["si"] = float(pen.detach())
        return loss, parts


class SegmentationTask(_SITracking):
    """F + φ on the segmentation loss (+ an optional SI penalty, used by Stage II)."""

    def __init__(self, net: M2CoFSNet, seg_loss: str = "dice", si_xi: float | None = None,
                 penalty: tuple[dict, dict, float] | None = None, train_head: bool = True):
        super().__init__()
        self.trained = ("fusion", "seg_head") if train_head else ("fusion",)
        self.encoders = net.encoders
        self.fusion = net.fusion
        self.seg_head = net.seg_head
        self.loss_fn = make_seg_loss(seg_loss)
        self.penalty = penalty
        self._init_si(si_xi)

    def forward(self, image, target, has_label):
        from m2cofs.losses import si_penalty

        with torch.no_grad():
            feats = torch.cat([enc(image[:, i: i + 1]) for i, enc in enumerate(self.encoders)], dim=1)
        logits = self.seg_head(self.fusion(feats))
        loss = masked_seg_loss(self.loss_fn, logits, target, has_label)
        parts = {"dice_loss": float(loss.detach())}
        if self.penalty is not None:
            importance, anchor, weight = self.penalty
            pen = si_penalty(dict(self.fusion.named_parameters()), importance, anchor)
            loss = loss + weight * pen
            parts["si"] = float(pen.detach())
        return loss, parts
