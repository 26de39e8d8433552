"""Continual learning with one F: learn the second task after the first, then use the one
weight set for both.

F starts from the first task's weights (θF after the fusion path, θS after the segmentation
path) and is trained, with the second task's head, on the second task's loss plus a
regulariser that protects the first task. The first task's head stays fixed, so after training
one F feeds both heads:

* ``finetune`` — no regulariser (the Stage-I objective of the second task, started from the
  first task's weights);
* ``ewc`` — Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017):
  λ/2 Σ_i F_i (θ_i − θ*_i)², F the diagonal Fisher of the first task at θ*
  (:func:`first_task_fisher`, or :func:`m2cofs.baselines.merging.diagonal_fisher`);
* ``si`` — Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017): c Σ_i Ω_i (θ_i − θ*_i)²
  with Ω of the first task (Stage I records Ω^F and Ω^S);
* ``lwf`` — Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2018): the first task's
  head output on the current F is kept close to what the frozen first-task F gave on the same
  patch (fusion: L1 between the fused volumes; segmentation: the Bernoulli KL divergence
  between the old and the new per-region sigmoid outputs at temperature T).

Each task module is a :class:`~m2cofs.training.engine.StageTask` for
:func:`~m2cofs.training.engine.run_loop`; :func:`make_continual_task` builds it. Default
weights (:data:`DEFAULT_LAMBDA`) and their sources are in docs/baselines.md.
"""

from __future__ import annotations

import copy
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from m2cofs.config import TrainConfig
from m2cofs.losses import FusionLoss, make_seg_loss, si_penalty
from m2cofs.models.network import M2CoFSNet
from m2cofs.training.stage1_independent import FusionTask, PathTask, SegmentationTask, masked_seg_loss

TASKS = ("fusion", "segmentation")
HEADS = {"fusion": "fusion_head", "segmentation": "seg_head"}
KINDS = ("finetune", "ewc", "si", "lwf")

# Regulariser weights when ``lam`` is not given (docs/baselines.md):
# * EWC: 200 in the λ/2 form, i.e. the 100·Σ F Δθ² (no ½) that Hsu et al. (2018, "Re-evaluating
#   continual learning scenarios", reference scripts) use for EWC with Adam on split MNIST and
#   split CIFAR-100; Kirkpatrick et al. leave λ to a search.
# * SI: ``None`` → the M²-CoFS Stage-II weight of the same penalty (train.si_mu when the second
#   task is segmentation, train.si_lambda when it is fusion; 0.1 in both presets).
# * LwF: λ_o = 1 (Li & Hoiem's loss balance), with temperature T = 2 for the sigmoid outputs.
DEFAULT_LAMBDA: dict[str, float | None] = {"finetune": 0.0, "ewc": 200.0, "si": None, "lwf": 1.0}
DEFAULT_TEMPERATURE = 2.0


class TensorStore(nn.Module):
    """Named tensors held as (non-persistent) buffers, so ``.to(device)`` moves them with the
    task module (anchors, importances)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        super().__init__()
        self._names = list(tensors)
        for k, v in tensors.items():
            self.register_buffer(self._key(k), v.detach().clone().float(), persistent=False)

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, self._key(k)) for k in self._names}


def bernoulli_kl_with_logits(logits: torch.Tensor, old_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean KL(p_old ‖ p_new) between per-voxel Bernoulli distributions p = σ(z / T):
    BCE(z/T, p_old) − BCE(z_old/T, p_old) (the cross-entropy minus the old entropy, so it is 0
    when the outputs agree)."""
    p_old = torch.sigmoid(old_logits / temperature)
    ce = F.binary_cross_entropy_with_logits(logits / temperature, p_old)
    ent = F.binary_cross_entropy_with_logits(old_logits / temperature, p_old)
    return ce - ent


class ContinualTask(PathTask):
    """F (from the first task's weights) + the second task's head, on the second task's loss
    plus :meth:`regulariser`. The first task's head is frozen and not trained."""

    kind = "finetune"

    def __init__(self, net: M2CoFSNet, first_task: str, second_task: str, first_weights: Mapping[str, torch.Tensor],
                 cfg: TrainConfig, lam: float = 0.0):
        _check_tasks(first_task, second_task)
        net.load_fusion_state(first_weights)
        second_head = HEADS[second_task]
        getattr(net, second_head).requires_grad_(True)
        super().__init__(net, second_head, None, None, True)
        self.first_task, self.second_task = first_task, second_task
        self.first_head_name = HEADS[first_task]
        first_head = getattr(net, self.first_head_name)
        first_head.requires_grad_(False)  # fixed: one F must keep serving it
        self.lam = float(lam)
        self.fusion_loss = FusionLoss.from_train(cfg)
        self.loss_fn = make_seg_loss(cfg.seg_loss)
        self.anchor = TensorStore({k: v for k, v in first_weights.items()})

    # --- pieces
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([enc(image[:, i: i + 1]) for i, enc in enumerate(self.encoders)], dim=1)

    def task_loss(self, z: torch.Tensor, image, target, has_label) -> tuple[torch.Tensor, dict[str, float]]:
        if self.second_task == "fusion":
            loss, parts = self.fusion_loss(self.fusion_head.fuse(z, image), image)
            parts = {"fusion": float(loss.detach()), **parts}
        else:
            loss = masked_seg_loss(self.loss_fn, self.seg_head(z), target, has_label)
            parts = {"dice_loss": float(loss.detach())}
        return loss, parts

    def regulariser(self, feats: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        """The weighted penalty protecting the first task (None: plain fine-tuning)."""
        return None

    def forward(self, image, target, has_label):
        feats = self.encode(image)
        z = self.fusion(feats)
        loss, parts = self.task_loss(z, image, target, has_label)
        reg = self.regulariser(feats, z)
        if reg is not None:
            parts[self.kind] = float(reg.detach())
            loss = loss + reg
        return loss, parts


class EWCTask(ContinualTask):
    """+ λ/2 Σ_i F_i (θ_i − θ*_i)² (Kirkpatrick et al. 2017), θ* the first task's weights."""

    kind = "ewc"

    def __init__(self, net, first_task, second_task, first_weights, cfg, fisher: Mapping[str, torch.Tensor],
                 lam: float = DEFAULT_LAMBDA["ewc"]):
        super().__init__(net, first_task, second_task, first_weights, cfg, lam)
        _check_keys(fisher, self.fusion, "fisher")
        self.importance = TensorStore(fisher)

    def regulariser(self, feats, z):
        pen = si_penalty(dict(self.fusion.named_parameters()), self.importance.as_dict(), self.anchor.as_dict())
        return 0.5 * self.lam * pen


class SITask(ContinualTask):
    """+ c Σ_i Ω_i (θ_i − θ*_i)² (Zenke et al. 2017), Ω the first task's path-integral importance."""

    kind = "si"

    def __init__(self, net, first_task, second_task, first_weights, cfg, omega: Mapping[str, torch.Tensor],
                 lam: float | None = None):
        if lam is None:
            lam = cfg.si_mu if second_task == "segmentation" else cfg.si_lambda
        super().__init__(net, first_task, second_task, first_weights, cfg, lam)
        _check_keys(omega, self.fusion, "first_importance")
        self.importance = TensorStore(omega)

    def regulariser(self, feats, z):
        return self.lam * si_penalty(dict(self.fusion.named_parameters()), self.importance.as_dict(), self.anchor.as_dict())


class LwFTask(ContinualTask):
    """+ λ_o · D(first head(F(x)), first head(F_old(x))) (Li & Hoiem 2016), F_old a frozen copy
    of F at the first task's weights. D: L1 for the fused volume; the Bernoulli KL at
    temperature T for the per-region sigmoid outputs."""

    kind = "lwf"

    def __init__(self, net, first_task, second_task, first_weights, cfg, lam: float = DEFAULT_LAMBDA["lwf"],
                 temperature: float = DEFAULT_TEMPERATURE):
        super().__init__(net, first_task, second_task, first_weights, cfg, lam)
        self.old_fusion = copy.deepcopy(net.fusion)
        self.old_fusion.load_state_dict(dict(first_weights))
        self.old_fusion.requires_grad_(False)
        setattr(self, self.first_head_name, getattr(net, self.first_head_name))  # frozen, moves with the task
        self.temperature = float(temperature)

    def distillation(self, feats: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        head = getattr(self, self.first_head_name)
        with torch.no_grad():
            old = head(self.old_fusion(feats))
        new = head(z)
        if self.first_task == "fusion":
            return F.l1_loss(new, old)
        return bernoulli_kl_with_logits(new, old, self.temperature)

    def regulariser(self, feats, z):
        return self.lam * self.distillation(feats, z)


def _check_tasks(first: str, second: str) -> None:
    for t in (first, second):
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; choose {' or '.join(TASKS)}")
    if first == second:
        raise ValueError(f"the second task must differ from the first ({first})")


def _check_keys(tensors: Mapping[str, torch.Tensor], fusion: nn.Module, what: str) -> None:
    missing = [k for k, _ in fusion.named_parameters() if k not in tensors]
    if missing:
        raise ValueError(f"{what} lacks F's parameter(s) {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")


def make_continual_task(kind: str, net: M2CoFSNet, first_task: str, second_task: str,
                        first_weights: Mapping[str, torch.Tensor], first_importance: Mapping[str, torch.Tensor] | None,
                        cfg: TrainConfig, fisher: Mapping[str, torch.Tensor] | None = None, *,
                        lam: float | None = None, temperature: float = DEFAULT_TEMPERATURE) -> ContinualTask:
    """The task module that learns ``second_task`` after ``first_task`` with one F.

    Args:
        kind: ``finetune``, ``ewc``, ``si`` or ``lwf``.
        net: the network; its first-task head must hold the first task's trained head (ψ or φ
            from Stage I) and its second-task head the head to train (its state is the caller's
            choice; see docs/baselines.md). F is loaded with ``first_weights``; the first head
            is frozen (``requires_grad_(False)``; undo with ``net.<head>.requires_grad_(True)``).
        first_task, second_task: ``fusion`` / ``segmentation``, different.
        first_weights: F's weights after the first task (θF or θS) — the start and the anchor.
        first_importance: Ω of the first task (SI; Stage I's ``omega``); ignored otherwise.
        cfg: the run's training configuration (α, segmentation loss, SI weights).
        fisher: the first task's diagonal Fisher at ``first_weights`` (EWC).
        lam: regulariser weight (default :data:`DEFAULT_LAMBDA`).
        temperature: LwF's temperature for the segmentation outputs.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown continual-learning method {kind!r}; choose one of {', '.join(KINDS)}")
    _check_tasks(first_task, second_task)
    if kind == "finetune":
        return ContinualTask(net, first_task, second_task, first_weights, cfg, 0.0 if lam is None else lam)
    if kind == "ewc":
        if fisher is None:
            raise ValueError("EWC needs the first task's Fisher (fisher=...)")
        return EWCTask(net, first_task, second_task, first_weights, cfg, fisher,
                       DEFAULT_LAMBDA["ewc"] if lam is None else lam)
    if kind == "si":
        if first_importance is None:
            raise ValueError("SI needs the first task's importance Ω (first_importance=...)")
        return SITask(net, first_task, second_task, first_weights, cfg, first_importance, lam)
    return LwFTask(net, first_task, second_task, first_weights, cfg, DEFAULT_LAMBDA["lwf"] if lam is None else lam,
                   temperature)


def first_task_module(net: M2CoFSNet, first_task: str, first_weights: Mapping[str, torch.Tensor],
                      cfg: TrainConfig) -> PathTask:
    """The plain Stage-I task module of ``first_task`` with F at ``first_weights`` (for the
    Fisher). Trains nothing here; it only evaluates the first task's loss."""
    net.load_fusion_state(first_weights)
    if first_task == "fusion":
        return FusionTask(net, loss=FusionLoss.from_train(cfg))
    if first_task == "segmentation":
        return SegmentationTask(net, seg_loss=cfg.seg_loss)
    raise ValueError(f"unknown task {first_task!r}; choose {' or '.join(TASKS)}")


def first_task_fisher(net: M2CoFSNet, first_task: str, first_weights: Mapping[str, torch.Tensor], cfg: TrainConfig,
                      batches: Iterable[Mapping[str, torch.Tensor]], n_batches: int,
                      per_sample: bool = True) -> dict[str, torch.Tensor]:
    """EWC's Fisher: :func:`~m2cofs.baselines.merging.diagonal_fisher` of the first task's loss
    at ``first_weights`` (with the first task's head as it is in ``net``)."""
    from m2cofs.baselines.merging import diagonal_fisher

    task = first_task_module(net, first_task, first_weights, cfg)
    return diagonal_fisher(task, batches, n_batches, per_sample=per_sample)
