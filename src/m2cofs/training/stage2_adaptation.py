"""Stage II — cross-task weight adaptation.

Each task's F restarts from the *other* task's Stage-I weights and learns its own task while a
Synaptic-Intelligence penalty protects what the starting weights knew:

* θS→F: F ← θS, trained on L′F = L_F + λ Σ Ω^S (θ − θS)² (with ψ from Stage I);
* θF→S: F ← θF, trained on L′S = L_S + μ Σ Ω^F (θ − θF)² (with φ from Stage I).

By default the heads stay fixed (``train.stage2_train_heads: false``; the paper does not say):
F must then learn to feed the *other* task's Stage-I head, which pulls θS→F towards θF's
features and θF→S towards θS's — the two results end closer in weight space than θS and θF
(:func:`weight_distance` records it), and both heads stay compatible with both weight sets for
Stage III.
"""

from __future__ import annotations

from typing import Mapping

import torch

from m2cofs.losses import FusionLoss
from m2cofs.models.network import M2CoFSNet
from m2cofs.training.stage1_independent import FusionTask, SegmentationTask

SEG_TO_FUSION = "stage2_seg_to_fusion"
FUSION_TO_SEG = "stage2_fusion_to_seg"


def seg_to_fusion_task(net: M2CoFSNet, theta_s, omega_s, loss: FusionLoss, weight: float,
                       train_head: bool = False) -> FusionTask:
    """θS → F: F starts at θS; the penalty keeps segmentation-important weights near θS."""
    net.load_fusion_state(theta_s)
    net.fusion_head.requires_grad_(train_head)
    return FusionTask(net, loss=loss, penalty=(omega_s, {k: v.clone() for k, v in theta_s.items()}, weight),
                      train_head=train_head)


def fusion_to_seg_task(net: M2CoFSNet, theta_f, omega_f, seg_loss: str, weight: float,
                       train_head: bool = False) -> SegmentationTask:
    """θF → S: F starts at θF; the penalty keeps fusion-important weights near θF."""
    net.load_fusion_state(theta_f)
    net.seg_head.requires_grad_(train_head)
    return SegmentationTask(net, seg_loss=seg_loss, penalty=(omega_f, {k: v.clone() for k, v in theta_f.items()}, weight),
                            train_head=train_head)


def weight_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """‖a − b‖₂ over all parameters (buffers excluded)."""
    return float(torch.sqrt(sum(((a[k].float() - b[k].float()) ** 2).sum() for k in a)))
