"""``m2cofs train``: preprocess the data, run the stages in order, write the unified model.

``RUN/`` after a complete run::

    run.json                      what was trained on what (configuration, data, modalities, labels)
    unified.ckpt (+ .json)        the product: Φ, F with θU, ψ and φ — one pass, both outputs
    fusion_specialist.ckpt        Stage I fusion path (θF, ψ) — a baseline
    seg_specialist.ckpt           Stage I segmentation path (θS, φ) — a baseline
    stages/<stage>.safetensors    every stage's results (weights, SI importance)
    logs/<stage>.csv, .png        per-step losses and curves
    summary.json                  wall time per stage, final losses, weight-space distances
    cache/                        preprocessed cases (reused by later runs)

Stages: 0 autoencoders · 1 fusion and segmentation, independently · 2 cross-task adaptation ·
3 unification. ``--stages`` runs a subset (earlier results must be in RUN); ``--resume``
continues an interrupted run where it stopped. Each stage method takes the run's
:class:`~m2cofs.training.results.StageResults` so far and returns them with its own added;
:attr:`Trainer.results` holds the latest.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from m2cofs import __version__
from m2cofs.checkpoint import load_tensors, save_model_file, save_tensors
from m2cofs.config import Config, load_config
from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_json
from m2cofs.losses import FusionLoss
from m2cofs.models.network import M2CoFSNet
from m2cofs.training import run_folder as rf
from m2cofs.training import stage0_autoencoder as s0
from m2cofs.training import stage1_independent as s1
from m2cofs.training import stage2_adaptation as s2
from m2cofs.training import stage3_unification as s3
from m2cofs.training.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from m2cofs.training.engine import LoopSettings, run_loop
from m2cofs.training.inputs import load_training_data
# STAGE_NAMES, default_modalities, parse_stages, RUN_ITEMS, check_output_folder: re-exported (the CLI and compare
# import them from here)
from m2cofs.training.options import (BUDGET_EPOCHS, LOOPS_PER_STAGE, SEGMENTATION_LOOPS, STAGE_NAMES,  # noqa: F401
                                     TrainOptions, default_modalities, loop_budgets, parse_stages, stage_budgets)
from m2cofs.training.patches import PatchDataset
from m2cofs.training.results import StageResults, Weights, part, prefixed
from m2cofs.training.run_folder import RUN_ITEMS, check_output_folder  # noqa: F401
from m2cofs.training.seeds import STAGE_KEYS, UNIFICATION_SEED_OFFSET


class Trainer:
    """Runs the stages of one training run (see the module docstring)."""

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.dist: DistInfo = init_distributed(opts.device)
        self.out = Path(opts.out)
        self.cfg: Config = load_config(opts.preset, opts.config_file, opts.overrides)
        check_output_folder(self.out, Path(opts.data))
        rf.check_cache_folder(opts.cache_dir, Path(opts.data))
        created = self.dist.is_main and not self.out.exists()
        had_cache = (self.out / "cache").exists()
        try:
            if self.dist.is_main:
                rf.check_run_folder(self.out, opts)  # refusals that need no writing
            self._load_data()  # every case is read and checked before anything of an old run is touched
            if self.dist.is_main:
                rf.prepare_run_folder(self.out, opts.overwrite)
            barrier(self.dist)
            self._write_run_json()
        except M2CofsError:
            # Bad input: leave no partial output (the folder this call made, or the cache it started).
            rf.discard_partial_output(self.out, created, had_cache, self.dist.is_main and opts.cache_dir is None)
            raise
        torch.manual_seed(self.cfg.train.seed)
        self.net = M2CoFSNet(len(self.modalities), len(self.convention.regions), self.cfg.model,
                             tuple(self.cfg.data.patch_size))
        self.results = StageResults(theta0=self.net.fusion_state())
        minutes = opts.time_budget if opts.time_budget is not None else self.cfg.train.time_budget_minutes
        t = self.cfg.train
        self.budgets = loop_budgets(t.budget_shares, t.epochs, opts.stages, minutes) if minutes and opts.stages else {}
        if self.budgets and self.dist.is_main:
            split = ", ".join(f"{name} {sec / 60:.1f}" for name, sec in self.budgets.items() if sec > 0)
            seg = sum(sec for name, sec in self.budgets.items() if name in SEGMENTATION_LOOPS)
            self._say(f"time budget {minutes:g} min (wall clock), minutes per loop: {split} "
                      f"(segmentation path {100 * seg / max(sum(self.budgets.values()), 1e-9):.0f}%)")
        self.timings: dict[str, float] = {}
        self.losses: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up
    def _load_data(self) -> None:
        d = load_training_data(self.opts, self.cfg, self.out, self.dist, self._say)
        self.dataset, self.convention, self.modalities = d.dataset, d.convention, d.modalities
        self.preprocess, self.cases = d.preprocess, d.cases

    def _write_run_json(self) -> None:
        info = {
            "m2cofs_version": __version__,
            "data": str(Path(self.opts.data).resolve()),
            "format": self.dataset.format,
            "modalities": self.modalities,
            "label_convention": self.convention.name,
            "regions": list(self.convention.regions),
            "cases": [c.id for c in self.cases],
            "preprocessing": self.preprocess.to_dict(),
            "config": self.cfg.to_dict(),
            "world_size": self.dist.world_size,
        }
        path = self.out / "run.json"
        if self.dist.is_main:
            rf.check_run_json(path, info, self.out)
            atomic_write_json(path, info)
        self.run_info = info

    def _say(self, text: str) -> None:
        if self.dist.is_main:
            print(text, flush=True)

    # ------------------------------------------------------------------ public helpers (also for compare)
    def loop_settings(self, stage: int, name: str | None = None) -> LoopSettings:
        """The training-loop settings of ``stage`` (0–3) in this run (learning rate, epochs or budget, …);
        ``name``: the loop (its share of a time budget; default the stage's first loop)."""
        c = self.cfg
        lr = c.train.stage2_lr if stage == 2 and c.train.stage2_lr is not None else c.train.lr
        loop = name or STAGE_NAMES[stage][0]
        epochs, seconds = c.train.epochs.get(loop, c.train.epochs[f"stage{stage}"]), None
        if self.budgets:  # the budget decides; the epochs are only a cap
            epochs, seconds = BUDGET_EPOCHS, self.budgets.get(loop, 0.0)
        return LoopSettings(epochs=epochs, batch_size=c.data.batch_size, lr=lr,
                            weight_decay=c.train.weight_decay, optimizer=c.train.optimizer,
                            checkpoint_every=c.train.checkpoint_every, seed=c.train.seed, workers=c.data.workers,
                            progress=self.opts.progress, amp=self.dist.device.type == "cuda",
                            stop_after_steps=self.opts.stop_after_steps, max_seconds=seconds,
                            lr_schedule=c.train.lr_schedule)

    def patch_dataset(self, name: str, foreground_ratio: float | None = None) -> PatchDataset:
        """The training patches of stage loop ``name`` (its stream key: :data:`~m2cofs.training.seeds.STAGE_KEYS`)."""
        d = self.cfg.data
        return PatchDataset(self.cases, self.convention, d.patch_size, d.samples_per_case,
                            d.foreground_ratio if foreground_ratio is None else foreground_ratio, d.augment,
                            self.cfg.train.seed, STAGE_KEYS[name], bias_field_prob=d.bias_field_prob,
                            gamma_prob=d.gamma_prob)

    # ------------------------------------------------------------------ stage plumbing
    def stage_file(self, name: str) -> Path:
        return rf.stage_file(self.out, name)

    def done(self, name: str) -> bool:
        return self.stage_file(name).exists()

    def _save_stage(self, name: str, tensors: Weights) -> None:
        if self.dist.is_main:
            save_tensors(self.stage_file(name), tensors, {"stage": name, "m2cofs": __version__})
            (self.out / "checkpoints" / f"{name}.pt").unlink(missing_ok=True)
        barrier(self.dist)

    def _load_stage(self, name: str) -> Weights:
        path = self.stage_file(name)
        if not path.exists():
            raise M2CofsError(f"has no results of {name}; run that stage first (e.g. --stages all)", self.out)
        return load_tensors(path)

    def _run(self, name: str, task, stage: int, fg: float | None = None):
        t = time.time()
        self._say(f"--- {name}")
        result = run_loop(name, task, self.patch_dataset(name, fg), self.loop_settings(stage, name), self.out, self.dist,
                          STAGE_KEYS[name], self.opts.resume)
        self.timings[name] = time.time() - t
        self.losses[name] = result.last_loss
        return result

    def fusion_loss(self) -> FusionLoss:
        """The fusion loss of this run's configuration, modalities and label regions. The retention
        term needs a ``weights`` head: a fused volume that combines the sources can only keep
        their contrasts, while an image head rewarded for lesion contrast could paint it."""
        weights_head = self.cfg.model.fusion_head == "weights"
        return FusionLoss.from_train(self.cfg.train, self.modalities, self.convention.region_names if weights_head else None)

    def _dev(self, d: Weights) -> Weights:
        return {k: v.to(self.dist.device) for k, v in d.items()}

    # ------------------------------------------------------------------ the stages
    def stage0(self, run: bool, r: StageResults) -> StageResults:
        """Φ and D (loaded into the network, Φ frozen); the results are unchanged."""
        name = s0.NAME
        if run and not self.done(name):
            task = s0.AutoencoderTask(self.net)
            self._run(name, task, 0, fg=0.0)
            self._save_stage(name, prefixed(encoders=self.net.encoders.state_dict(),
                                            decoder=self.net.decoder.state_dict()))
        res = self._load_stage(name)
        self.net.encoders.load_state_dict(part(res, "encoders"))
        self.net.decoder.load_state_dict(part(res, "decoder"))
        for p in self.net.encoders.parameters():
            p.requires_grad_(False)
        self.net.encoders.eval()
        return r

    def stage1(self, run: bool, r: StageResults) -> StageResults:
        """θF, ωF, ψ1 and θS, ωS, φ1, both paths from ``r.theta0``."""
        t = self.cfg.train
        if run and not self.done(s1.FUSION):
            self.net.load_fusion_state(r.theta0)
            if self.net.trunk_channels == self.cfg.model.feature_channels:
                self.net.fusion_head.init_from_decoder(self.net.decoder)  # ψ starts from D
            task = s1.FusionTask(self.net, loss=self.fusion_loss(), si_xi=t.si_xi)
            self._run(s1.FUSION, task, 1)
            self._save_stage(s1.FUSION, prefixed(fusion=self.net.fusion_state(), omega=task.si.importance(),
                                                 fusion_head=self.net.fusion_head.state_dict()))
        if run and not self.done(s1.SEGMENTATION):
            self.net.load_fusion_state(r.theta0)
            task = s1.SegmentationTask(self.net, seg_loss=t.seg_loss, si_xi=t.si_xi)
            self._run(s1.SEGMENTATION, task, 1)
            self._save_stage(s1.SEGMENTATION, prefixed(fusion=self.net.fusion_state(), omega=task.si.importance(),
                                                       seg_head=self.net.seg_head.state_dict()))
        f, s = self._load_stage(s1.FUSION), self._load_stage(s1.SEGMENTATION)
        return replace(r, theta_f=part(f, "fusion"), omega_f=part(f, "omega"), psi_1=part(f, "fusion_head"),
                       theta_s=part(s, "fusion"), omega_s=part(s, "omega"), phi_1=part(s, "seg_head"))

    def stage2(self, run: bool, r: StageResults) -> StageResults:
        """θS→F, ψ2 and θF→S, φ2 from Stage I's results."""
        t = self.cfg.train
        if run and not self.done(s2.SEG_TO_FUSION):
            self.net.fusion_head.load_state_dict(r.psi_1)
            task = s2.seg_to_fusion_task(self.net, self._dev(r.theta_s), self._dev(r.omega_s), self.fusion_loss(), t.si_lambda,
                                         t.stage2_train_heads)
            self._run(s2.SEG_TO_FUSION, task, 2)
            self._save_stage(s2.SEG_TO_FUSION, prefixed(fusion=self.net.fusion_state(),
                                                        fusion_head=self.net.fusion_head.state_dict()))
        if run and not self.done(s2.FUSION_TO_SEG):
            self.net.seg_head.load_state_dict(r.phi_1)
            task = s2.fusion_to_seg_task(self.net, self._dev(r.theta_f), self._dev(r.omega_f), t.seg_loss, t.si_mu,
                                         t.stage2_train_heads)
            self._run(s2.FUSION_TO_SEG, task, 2)
            self._save_stage(s2.FUSION_TO_SEG, prefixed(fusion=self.net.fusion_state(),
                                                        seg_head=self.net.seg_head.state_dict()))
        self.net.fusion_head.requires_grad_(True)
        self.net.seg_head.requires_grad_(True)
        a, b = self._load_stage(s2.SEG_TO_FUSION), self._load_stage(s2.FUSION_TO_SEG)
        return replace(r, theta_sf=part(a, "fusion"), psi_2=part(a, "fusion_head"),
                       theta_fs=part(b, "fusion"), phi_2=part(b, "seg_head"))

    def stage3(self, run: bool, r: StageResults) -> StageResults:
        """θU (and the heads, loaded into the network) from Stage I and II's results."""
        from m2cofs.models.weight_generator import WeightGenerator

        t = self.cfg.train
        if run and not self.done(s3.NAME):
            self.net.fusion_head.load_state_dict(r.psi_2)
            self.net.seg_head.load_state_dict(r.phi_2)
            torch.manual_seed(t.seed + UNIFICATION_SEED_OFFSET)
            gen = WeightGenerator(r.theta_sf, r.theta_fs, t.g_hidden, t.g_init, r.theta_f)
            si = None
            if t.stage3_si:
                si = (self._dev(r.omega_s), self._dev(r.theta_s), self._dev(r.omega_f), self._dev(r.theta_f),
                      t.si_lambda, t.si_mu)
            task = s3.UnificationTask(self.net, gen, self._dev(r.theta_sf), self._dev(r.theta_fs), fusion_loss=self.fusion_loss(),
                                      eta=t.eta, gamma=t.gamma, seg_loss=t.seg_loss, manifold=t.manifold, knn_k=t.knn_k, si=si,
                                      seg_path_lr_scale=t.seg_path_lr_scale)
            self._run(s3.NAME, task, 3)
            self._save_stage(s3.NAME, prefixed(fusion=task.unified_weights(), fusion_head=self.net.fusion_head.state_dict(),
                                               seg_head=self.net.seg_head.state_dict(), generator=gen.state_dict()))
        res = self._load_stage(s3.NAME)
        r = replace(r, theta_u=part(res, "fusion"))
        self.net.load_fusion_state(r.theta_u)
        self.net.fusion_head.load_state_dict(part(res, "fusion_head"))
        self.net.seg_head.load_state_dict(part(res, "seg_head"))
        return r

    # ------------------------------------------------------------------ outputs
    def _model_meta(self, kind: str, tasks: list[str], theta: str) -> dict:
        return {"kind": kind, "tasks": tasks, "fusion_weights": theta, "preset": self.cfg.preset,
                "config": self.cfg.to_dict(), "modalities": self.modalities,
                "label_convention": self.convention.name, "regions": list(self.convention.regions),
                "preprocessing": self.preprocess.to_dict(), "trained_on": [c.id for c in self.cases]}

    def write_model(self, path: str | Path, kind: str, tasks: list[str], theta: str, fusion: dict, **heads: dict) -> Path:
        """A model file (this run's encoders, the given F weights and heads) with its sidecar;
        a relative ``path`` is inside RUN."""
        tensors = prefixed(encoders=self.net.encoders.state_dict(), fusion=fusion, **heads)
        return save_model_file(self.out / path, tensors, self._model_meta(kind, tasks, theta))

    def write_models(self) -> None:
        if not self.dist.is_main:
            return
        r = self.results
        if self.done(s1.FUSION) and self.done(s1.SEGMENTATION):
            self.write_model("fusion_specialist.ckpt", "fusion_specialist", ["fusion"], "theta_F", r.theta_f,
                             fusion_head=r.psi_1)
            self.write_model("seg_specialist.ckpt", "seg_specialist", ["segmentation"], "theta_S", r.theta_s,
                             seg_head=r.phi_1)
        if self.done(s3.NAME):
            self.write_model("unified.ckpt", "unified", ["fusion", "segmentation"], "theta_U", r.theta_u,
                             fusion_head=self.net.fusion_head.state_dict(), seg_head=self.net.seg_head.state_dict())

    def run(self) -> dict:
        stages = self.opts.stages
        start = time.time()
        for st, stage in enumerate((self.stage0, self.stage1, self.stage2, self.stage3)):
            if st == 0 or max(stages) >= st:
                self.results = stage(st in stages, self.results)
        self.write_models()
        summary = self._summary(time.time() - start)
        if self.dist.is_main:
            atomic_write_json(self.out / "summary.json", summary)
            if "weight_distances" in summary:
                d = summary["weight_distances"]
                self._say(f"weight distance ‖θS − θF‖ = {d['stage1_theta_s_vs_theta_f']:.4f}, "
                          f"‖θS→F − θF→S‖ = {d['stage2_theta_sf_vs_theta_fs']:.4f}")
            if (self.out / "unified.ckpt").exists():
                self._say(f"unified model: {self.out / 'unified.ckpt'}")
        return broadcast_object(summary, self.dist)

    def _summary(self, seconds: float) -> dict:
        old = {}
        path = self.out / "summary.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
        timings = {**old.get("stage_seconds", {}), **{k: round(v, 2) for k, v in self.timings.items()}}
        losses = {**old.get("final_loss", {}), **self.losses}
        out = {"stage_seconds": timings, "final_loss": losses, "last_call_seconds": round(seconds, 2),
               "time_budget_seconds": {k: round(v, 1) for k, v in self.budgets.items()} or None,
               "device": str(self.dist.device), "world_size": self.dist.world_size}
        r = self.results
        if r.theta_sf is not None:
            out["weight_distances"] = {
                "stage1_theta_s_vs_theta_f": s2.weight_distance(r.theta_s, r.theta_f),
                "stage2_theta_sf_vs_theta_fs": s2.weight_distance(r.theta_sf, r.theta_fs),
            }
            if r.theta_u is not None:
                out["weight_distances"]["theta_u_vs_theta_sf"] = s2.weight_distance(r.theta_u, r.theta_sf)
                out["weight_distances"]["theta_u_vs_theta_fs"] = s2.weight_distance(r.theta_u, r.theta_fs)
        return out


def train(opts: TrainOptions) -> dict:
    """Run ``m2cofs train`` with these options; returns the summary."""
    trainer = Trainer(opts)
    summary = trainer.run()
    # All ranks leave together: a rank that exits while another still talks to it makes gloo
    # abort the other one ("connection closed by peer").
    barrier(trainer.dist)
    cleanup(trainer.dist)
    return summary
