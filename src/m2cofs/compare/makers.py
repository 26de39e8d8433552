"""The model files of the weight-based methods, made from a fold's M²-CoFS run.

Each maker ``fn(ctx, name) -> Path`` (registered in :mod:`.methods`; ``ctx`` is the fold's
:class:`~m2cofs.compare.folds.FoldContext`) reuses the fold's Stage I/II
results: merging combines their weights, the joint and continual baselines train with the
Stage-I schedule, the ablations and plug-in heads are derived runs of the pipeline. A model
file that exists is not made again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from m2cofs.io import atomic_write_json
from m2cofs.training import seeds
from m2cofs.training.results import prefixed

PLUGIN_HEADS = {"swinunetr": 12, "unetr": 12, "segresnet": 8, "unet": 8}  # lite feature sizes


# ------------------------------------------------------------------------------------ merging
def merged(ctx, name: str) -> Path:
    """F merged from the fold's weight sets, with the heads of the stage they come from."""
    from m2cofs.baselines import merging

    r = ctx.t.results
    pair = [r.theta_f, r.theta_s]
    if name == "average":
        return model_from_weights(ctx, name, merging.average(pair), r.psi_1, r.phi_1, "avg(θF,θS)")
    if name == "task_arithmetic":
        return model_from_weights(ctx, name, merging.task_arithmetic(r.theta0, pair), r.psi_1, r.phi_1,
                                  "task_arithmetic(θF,θS)")
    if name == "ties":
        return model_from_weights(ctx, name, merging.ties_merging(r.theta0, pair), r.psi_1, r.phi_1, "ties(θF,θS)")
    if name == "fisher":
        merged_f = merging.fisher_merging(pair, [fisher(ctx, "fusion"), fisher(ctx, "segmentation")])
        return model_from_weights(ctx, name, merged_f, r.psi_1, r.phi_1, "fisher(θF,θS)")
    if name == "no_stage3":
        return model_from_weights(ctx, name, merging.average([r.theta_sf, r.theta_fs]), r.psi_2, r.phi_2,
                                  "mean(θS→F,θF→S)")
    raise ValueError(f"no merge called {name!r}")


def fisher(ctx, task_name: str) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of F for θF (fusion loss) or θS (segmentation loss), cached per fold."""
    from m2cofs.baselines.merging import diagonal_fisher
    from m2cofs.checkpoint import load_tensors, save_tensors
    from m2cofs.losses import FusionLoss
    from m2cofs.training import stage1_independent as s1
    from torch.utils.data import DataLoader

    path = ctx.fold.dir / "methods" / f"fisher_{task_name}.safetensors"
    if path.exists():
        return load_tensors(path)
    t = ctx.t
    if task_name == "fusion":
        t.net.load_fusion_state(t.results.theta_f)
        t.net.fusion_head.load_state_dict(t.results.psi_1)
        task = s1.FusionTask(t.net, loss=FusionLoss.from_train(t.cfg.train))
    else:
        t.net.load_fusion_state(t.results.theta_s)
        t.net.seg_head.load_state_dict(t.results.phi_1)
        task = s1.SegmentationTask(t.net, seg_loss=t.cfg.train.seg_loss)
    ds = t.patch_dataset(s1.FUSION if task_name == "fusion" else s1.SEGMENTATION)
    ds.set_epoch(seeds.FISHER_EPOCH)  # patches not seen in training order
    loader = DataLoader(ds, batch_size=t.cfg.data.batch_size, shuffle=False)
    result = diagonal_fisher(task, loader, ctx.opts.fisher_batches)
    save_tensors(path, result)
    return result


def model_from_weights(ctx, name: str, fusion: dict, psi: dict | None, phi: dict | None,
                       theta_name: str) -> Path:
    path = ctx.method_dir(name) / "model.ckpt"
    if not path.exists():
        heads = {}
        tasks = []
        if psi is not None:
            heads["fusion_head"] = psi
            tasks.append("fusion")
        if phi is not None:
            heads["seg_head"] = phi
            tasks.append("segmentation")
        ctx.t.write_model(path, name, tasks, theta_name, fusion, **heads)
    return path


# ------------------------------------------------------------------------------------ trained
def joint(ctx, name: str) -> Path:
    """Both tasks at once from θ0 (ψ from the Stage-0 decoder where it fits, a fresh φ)."""
    t = ctx.t
    cfg = t.cfg.train

    def factory():
        from m2cofs.baselines.joint import JointTask
        from m2cofs.losses import FusionLoss

        t.net.load_fusion_state(t.results.theta0)
        if t.net.trunk_channels == t.cfg.model.feature_channels:
            t.net.fusion_head.init_from_decoder(t.net.decoder)
        fresh_seg_head(ctx)
        return JointTask(t.net, FusionLoss.from_train(cfg), cfg.eta, cfg.seg_loss)

    return train_method(ctx, name, factory, seeds.JOINT_KEY, "joint",
                        lambda: {"fusion_head": t.net.fusion_head.state_dict(), "seg_head": t.net.seg_head.state_dict()})


def continual(ctx, name: str, index: int) -> Path:
    """Segmentation learnt after fusion (θF → S) with a continual-learning method (the ``index``-th of its group)."""
    t = ctx.t
    cfg = t.cfg.train

    def factory():
        from m2cofs.baselines.continual import make_continual_task

        t.net.load_fusion_state(t.results.theta_f)
        t.net.fusion_head.load_state_dict(t.results.psi_1)
        fresh_seg_head(ctx)
        fisher_f = fisher(ctx, "fusion") if name == "ewc" else None
        return make_continual_task(name, t.net, "fusion", "segmentation", dict(t.results.theta_f), dict(t.results.omega_f), cfg,
                                   fisher=fisher_f)

    return train_method(ctx, name, factory, seeds.CONTINUAL_KEY_BASE + index, f"{name}(F→S)",
                        lambda: {"fusion_head": dict(t.results.psi_1), "seg_head": t.net.seg_head.state_dict()})


def train_method(ctx, name: str, task_factory: Callable[[], object], stage_key: int,
                 theta_name: str, heads: Callable[[], dict]) -> Path:
    """Train a baseline task module with the Stage-I schedule, then write its model file."""
    from m2cofs.training.engine import run_loop

    path = ctx.method_dir(name) / "model.ckpt"
    if path.exists():
        return path
    t = ctx.t
    task = task_factory()
    t0 = time.time()
    run_loop(name, task, t.patch_dataset("stage1_segmentation"), t.loop_settings(1, "stage1_segmentation"), ctx.method_dir(name), t.dist, stage_key,
             resume=True)
    atomic_write_json(ctx.method_dir(name) / "train.json", {"seconds": round(time.time() - t0, 1)})
    h = heads()
    tasks = [x for x, k in (("fusion", "fusion_head"), ("segmentation", "seg_head")) if k in h]
    path = ctx.t.write_model(path, name, tasks, theta_name, t.net.fusion_state(), **h)
    for part in (t.net.fusion, t.net.fusion_head, t.net.seg_head):  # methods may freeze heads; undo it
        part.requires_grad_(True)
    return path


def fresh_seg_head(ctx) -> None:
    """φ from the run's seeded initialisation (a new head for the second task)."""
    from m2cofs.models.network import M2CoFSNet

    t = ctx.t
    torch.manual_seed(t.cfg.train.seed)
    fresh = M2CoFSNet(len(t.modalities), len(t.convention.regions), t.cfg.model, tuple(t.cfg.data.patch_size))
    t.net.seg_head.load_state_dict(fresh.seg_head.state_dict())


# ------------------------------------------------------------------------------------ derived runs
def no_stage2(ctx, name: str) -> Path:
    """Stage III straight from the Stage-I results (they stand in for Stage II's)."""
    from m2cofs.training import stage1_independent as s1
    from m2cofs.training import stage2_adaptation as s2

    r = ctx.t.results
    pre = {s2.SEG_TO_FUSION: prefixed(fusion=r.theta_s, fusion_head=r.psi_1),
           s2.FUSION_TO_SEG: prefixed(fusion=r.theta_f, seg_head=r.phi_1)}
    return ctx.derived_run(name, [], ["stage0_autoencoder", s1.FUSION, s1.SEGMENTATION], [3], fake=pre)


def retrained(ctx, name: str) -> Path:
    """An ablation of a loss term: the stages that use it trained again without it."""
    from m2cofs.training import stage1_independent as s1
    from m2cofs.training import stage2_adaptation as s2

    stage1 = ["stage0_autoencoder", s1.FUSION, s1.SEGMENTATION]
    stage2 = [*stage1, s2.SEG_TO_FUSION, s2.FUSION_TO_SEG]
    overrides, copied, stages = {
        "no_si": (["train.si_lambda=0", "train.si_mu=0", "train.stage3_si=false"], stage1, [2, 3]),
        "no_lm": (["train.gamma=0"], stage2, [3]),
        "euclidean_lm": (["train.manifold=euclidean"], stage2, [3]),
    }[name]
    return ctx.derived_run(name, overrides, copied, stages)


def plugin(ctx, name: str) -> Path:
    """M²-CoFS with another segmentation head."""
    from m2cofs.training import stage1_independent as s1

    head = name[len("plugin_"):]
    # Stage 0 and the fusion path of Stage I never see the segmentation head: the fold's own
    # results are reused, and the rest is trained with this head
    return ctx.derived_run(name, [f"model.seg_head={head}", f"model.seg_feature_size={PLUGIN_HEADS[head]}"],
                           ["stage0_autoencoder", s1.FUSION], [0, 1, 2, 3])
