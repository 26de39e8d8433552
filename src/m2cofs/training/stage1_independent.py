"""Stage I — the two tasks trained independently from one shared initialisation of F.

* fusion path: F and ψ on L_F (Φ frozen) → θF, ψ;
* segmentation path: F and φ on the Dice loss (Φ frozen) → θS, φ.

Both start F from the same seeded weights θ0, so θF and θS are comparable in weight space.
Each path accumulates Synaptic-Intelligence importance Ω for F's parameters along its
trajectory (Ω^F, Ω^S), which Stage II uses to protect the task a weight set came from.
"""

from __future__ import annotations

import torch

from m2cofs.losses import FusionLoss, SynapticIntelligence, make_seg_loss, si_penalty
from m2cofs.models.network import M2CoFSNet
from m2cofs.training.engine import StageTask

FUSION = "stage1_fusion"
SEGMENTATION = "stage1_segmentation"


def masked_seg_loss(loss_fn, logits: torch.Tensor, target: torch.Tensor, has_label: torch.Tensor) -> torch.Tensor:
    """Mean per-sample segmentation loss over the samples that have a label (0 if none)."""
    per = loss_fn(logits, target)
    w = has_label.to(per.dtype)
    return (per * w).sum() / w.sum().clamp_min(1.0) + 0.0 * logits.sum()


class PathTask(StageTask):
    """One task path through the frozen encoders and F (+ its head), with optional SI tracking
    of F's parameters (Stage I) and an optional SI penalty towards an anchor (Stage II)."""

    si: SynapticIntelligence | None = None

    def __init__(self, net: M2CoFSNet, head: str, si_xi: float | None, penalty: tuple[dict, dict, float] | None,
                 train_head: bool):
        super().__init__()
        self.encoders = net.encoders
        self.fusion = net.fusion
        setattr(self, head, getattr(net, head))
        self.trained = ("fusion", head) if train_head else ("fusion",)
        self.penalty = penalty  # (importance, anchor, weight)
        self.si = SynapticIntelligence(dict(self.fusion.named_parameters()), si_xi) if si_xi is not None else None

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """F(Φ(x)) with the encoders frozen."""
        with torch.no_grad():
            feats = torch.cat([enc(image[:, i: i + 1]) for i, enc in enumerate(self.encoders)], dim=1)
        return self.fusion(feats)

    def penalised(self, loss: torch.Tensor, parts: dict[str, float]) -> torch.Tensor:
        """``loss + weight · Σ Ω (θ − θ*)²`` when this task has a penalty."""
        if self.penalty is None:
            return loss
        importance, anchor, weight = self.penalty
        pen = si_penalty(dict(self.fusion.named_parameters()), importance, anchor)
        parts["si"] = float(pen.detach())
        return loss + weight * pen

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


class FusionTask(PathTask):
    """F + ψ on the fusion loss (+ an optional SI penalty, used by Stage II)."""

    def __init__(self, net: M2CoFSNet, loss: FusionLoss | None = None, si_xi: float | None = None,
                 penalty: tuple[dict, dict, float] | None = None, train_head: bool = True):
        super().__init__(net, "fusion_head", si_xi, penalty, train_head)
        self.fusion_loss = loss if loss is not None else FusionLoss()

    def forward(self, image, target, has_label):
        fused = self.fusion_head.fuse(self.features(image), image)
        loss, parts = self.fusion_loss(fused, image, target, has_label)
        return self.penalised(loss, parts), parts


class SegmentationTask(PathTask):
    """F + φ on the segmentation loss (+ an optional SI penalty, used by Stage II)."""

    def __init__(self, net: M2CoFSNet, seg_loss: str = "dice", si_xi: float | None = None,
                 penalty: tuple[dict, dict, float] | None = None, train_head: bool = True):
        super().__init__(net, "seg_head", si_xi, penalty, train_head)
        self.loss_fn = make_seg_loss(seg_loss)

    def forward(self, image, target, has_label):
        logits = self.seg_head(self.features(image))
        loss = masked_seg_loss(self.loss_fn, logits, target, has_label)
        parts = {"dice_loss": float(loss.detach())}
        return self.penalised(loss, parts), parts
