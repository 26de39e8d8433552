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
continues an interrupted run where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from m2cofs import __version__
from m2cofs.checkpoint import load_tensors, save_model_file, save_tensors
from m2cofs.config import Config, load_config
from m2cofs.data.dataset import MultiModalDataset
from m2cofs.data.labels import LabelConvention
from m2cofs.data.preprocess import PreparedCase, PreprocessConfig
from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_json, clean_stale_temps, is_inside
from m2cofs.models.network import M2CoFSNet
from m2cofs.training import stage0_autoencoder as s0
from m2cofs.training import stage1_independent as s1
from m2cofs.training import stage2_adaptation as s2
from m2cofs.training import stage3_unification as s3
from m2cofs.training.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from m2cofs.training.engine import LoopSettings, run_loop
from m2cofs.training.patches import PatchDataset

STAGE_NAMES = {
    0: [s0.NAME],
    1: [s1.FUSION, s1.SEGMENTATION],
    2: [s2.SEG_TO_FUSION, s2.FUSION_TO_SEG],
    3: [s3.NAME],
}
STAGE_KEYS = {s0.NAME: 0, s1.FUSION: 1, s1.SEGMENTATION: 2, s2.SEG_TO_FUSION: 3, s2.FUSION_TO_SEG: 4, s3.NAME: 5}
RUN_ITEMS = ("run.json", "summary.json", "unified.ckpt", "unified.ckpt.json", "fusion_specialist.ckpt",
             "fusion_specialist.ckpt.json", "seg_specialist.ckpt", "seg_specialist.ckpt.json", "stages",
             "checkpoints", "logs", "cache")


def default_modalities(available: Sequence[str], convention: LabelConvention) -> list[str]:
    """The paper's pairs: T1ce + FLAIR for tumour data, T1 + FLAIR for MRBrainS; else all."""
    avail = list(available)
    if convention.name.startswith(("brats", "msd")) and {"t1ce", "flair"} <= set(avail):
        return ["t1ce", "flair"]
    if convention.name.startswith("mrbrains") and {"t1", "flair"} <= set(avail):
        return ["t1", "flair"]
    return avail


def parse_stages(text: str) -> list[int]:
    """``"all"`` or ``"0,1,2,3"`` (any subset) → sorted stage numbers."""
    if text.strip().lower() == "all":
        return [0, 1, 2, 3]
    try:
        stages = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise M2CofsError(f"--stages {text!r}: expected 'all' or numbers from 0 to 3, e.g. 0,1,2,3") from None
    if not stages or any(s not in STAGE_NAMES for s in stages):
        raise M2CofsError(f"--stages {text!r}: expected 'all' or numbers from 0 to 3")
    return stages


def _training_config(d: dict | None) -> dict | None:
    """What of a run's recorded config shapes its weights: read through today's Config (keys
    added since take their defaults) without the inference section, which only acts at predict
    time — so a run resumes across such changes."""
    if d is None:
        return None
    try:
        out = Config.from_dict(d, source="run.json").to_dict()
    except M2CofsError:
        return d
    out.pop("inference", None)
    return out


@dataclass
class TrainOptions:
    data: str
    out: str
    preset: str = "lite"
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    resume: bool = False
    overwrite: bool = False
    format: str = "auto"
    labels: str = "auto"
    modalities: list[str] | None = None
    resample_to: str | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    cache_dir: str | None = None
    progress: bool = True
    device: str = "auto"
    stop_after_steps: int | None = None  # test hook: simulate an interruption
    time_budget: float | None = None  # minutes in all (overrides train.time_budget_minutes)


LOOPS_PER_STAGE = {0: 1, 1: 2, 2: 2, 3: 1}  # Stage I and II train a fusion and a segmentation loop each
BUDGET_EPOCHS = 1_000_000  # the epoch cap of a loop that a time budget ends


def stage_budgets(epochs: dict[str, int], stages: list[int], minutes: float) -> dict[int, float]:
    """Seconds per stage for a budget of ``minutes`` over ``stages``: in the preset's proportions,
    each stage's share its epochs times its loops (a stage with no epochs gets no time)."""
    weight = {st: epochs[f"stage{st}"] * LOOPS_PER_STAGE[st] for st in stages}
    total = sum(weight.values())
    if total <= 0:
        raise M2CofsError("--time-budget: the stages to run have no epochs to share the budget by")
    return {st: 60.0 * minutes * w / total for st, w in weight.items()}


def _data_root(data: Path) -> Path:
    return data if data.is_dir() else data.parent


def check_output_folder(out: Path, data: Path) -> None:
    """Refuse an output folder that is, or is inside, the input data."""
    data_root = _data_root(data)
    if is_inside(out, data_root):
        raise M2CofsError(f"the output folder must not be the input folder or inside it ({data_root})", out)


class Trainer:
    """Runs the stages of one training run (see the module docstring)."""

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.dist: DistInfo = init_distributed(opts.device)
        self.out = Path(opts.out)
        self.cfg: Config = load_config(opts.preset, opts.config_file, opts.overrides)
        check_output_folder(self.out, Path(opts.data))
        if opts.cache_dir is not None and is_inside(Path(opts.cache_dir), _data_root(Path(opts.data))):
            raise M2CofsError("--cache-dir must not be the input folder or inside it", opts.cache_dir)
        created = self.dist.is_main and not self.out.exists()
        had_cache = (self.out / "cache").exists()
        try:
            self._check_run_folder()
            self._load_data()  # every case is read and checked before anything of an old run is touched
            self._prepare_run_folder()
            self._write_run_json()
        except M2CofsError:
            # Bad input: leave no partial output (the folder this call made, or the cache it started).
            if created:
                shutil.rmtree(self.out, ignore_errors=True)
            elif self.dist.is_main and not had_cache and opts.cache_dir is None:
                shutil.rmtree(self.out / "cache", ignore_errors=True)
            raise
        torch.manual_seed(self.cfg.train.seed)
        self.net = M2CoFSNet(len(self.modalities), len(self.convention.regions), self.cfg.model,
                             tuple(self.cfg.data.patch_size))
        self.theta0 = self.net.fusion_state()
        minutes = opts.time_budget if opts.time_budget is not None else self.cfg.train.time_budget_minutes
        self.budgets = stage_budgets(self.cfg.train.epochs, opts.stages, minutes) if minutes else {}
        if self.budgets and self.dist.is_main:
            split = ", ".join(f"stage {st} {sec / 60:.1f} min" for st, sec in self.budgets.items())
            self._say(f"time budget {minutes:g} min (wall clock), in the preset's proportions: {split}")
        self.timings: dict[str, float] = {}
        self.losses: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up
    def _existing_run(self) -> bool:
        return any((self.out / p).exists() for p in ("run.json", "stages", "checkpoints"))

    def _check_run_folder(self) -> None:
        """Refusals that need no writing (before the data are read)."""
        if self.dist.is_main:
            if self.out.exists() and not self.out.is_dir():
                raise M2CofsError("exists and is not a folder", self.out)
            if self._existing_run() and not (self.opts.overwrite or self.opts.resume) and self.opts.stages == [0, 1, 2, 3]:
                raise M2CofsError("already holds a training run; pass --resume to continue it or --overwrite to start over",
                                  self.out)
            if self.opts.overwrite:
                data_root = _data_root(Path(self.opts.data))
                for item in RUN_ITEMS:
                    if item != "cache" and (self.out / item).exists() and is_inside(data_root, self.out / item):
                        raise M2CofsError(f"--overwrite would delete {self.out / item}, which holds the input data",
                                          self.out)

    def _prepare_run_folder(self) -> None:
        if self.dist.is_main:
            if self._existing_run() and self.opts.overwrite:
                for item in RUN_ITEMS:
                    p = self.out / item
                    if item == "cache":
                        continue  # preprocessing does not depend on the run; keep it
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.exists():
                        p.unlink()
            self.out.mkdir(parents=True, exist_ok=True)
            self._clean_interrupted_state()
        barrier(self.dist)

    def _clean_interrupted_state(self) -> None:
        """What a kill can leave behind: temporary files of interrupted atomic writes, and the
        in-stage checkpoint of a stage whose results were written just before the kill (the stage
        is complete: its results file exists)."""
        clean_stale_temps(self.out)
        for ckpt in sorted((self.out / "checkpoints").glob("*.pt")):
            if self.stage_file(ckpt.stem).exists():
                ckpt.unlink(missing_ok=True)

    def _load_data(self) -> None:
        o, cfg = self.opts, self.cfg
        pre = PreprocessConfig(spacing=cfg.data.spacing, intensity=cfg.data.intensity)
        probe = MultiModalDataset(o.data, o.format, o.labels, o.modalities, o.resample_to, pre)
        if probe.convention.name == "none":
            raise M2CofsError("has no label files: M²-CoFS trains segmentation too (pass --labels if the labels were not recognised)",
                              o.data)
        modalities = o.modalities or default_modalities(probe.modalities, probe.convention)
        if len(modalities) < 2:
            raise M2CofsError(f"fusion needs two or more modalities; the data has {', '.join(modalities)}", o.data)
        ids = list(probe.ids)
        if o.include:
            unknown = [i for i in o.include if i not in ids]
            if unknown:
                raise M2CofsError(f"--include: no case with id {', '.join(unknown)}", o.data)
            ids = [i for i in ids if i in o.include]
        if o.exclude:
            unknown = [i for i in o.exclude if i not in ids]
            if unknown:
                raise M2CofsError(f"--exclude: no case with id {', '.join(unknown)}", o.data)
            ids = [i for i in ids if i not in o.exclude]
        if not ids:
            raise M2CofsError("no training cases left after --include/--exclude", o.data)
        cache = Path(o.cache_dir) if o.cache_dir else self.out / "cache"
        self.dataset = MultiModalDataset(o.data, o.format, probe.convention.name, modalities, o.resample_to, pre,
                                         cache_dir=cache, ids=ids)
        found = {c.id: c for c in probe.cases}
        for c in self.dataset.cases:  # each case keeps its own dataset folder's label convention
            c.convention, c.convention_reason = found[c.id].convention, found[c.id].convention_reason
        self.convention = self.dataset.convention
        self.modalities = modalities
        self.preprocess = pre
        if self.dist.is_main:
            self._say(f"data: {len(ids)} case(s) from {o.data} ({self.dataset.format}), modalities {', '.join(modalities)}, "
                      f"labels {self.convention.name} ({probe.convention_reason})")
            # One process under torchrun: the other ranks wait in a gloo barrier meanwhile, and a
            # process pool beside that barrier has been seen to abort a rank on a loaded machine.
            workers = 1 if self.dist.enabled else min(len(ids), max(1, (os.cpu_count() or 1)))
            self.cases: list[PreparedCase] = self.dataset.prepare_all(workers=workers, progress=o.progress)
        barrier(self.dist)
        if not self.dist.is_main:
            self.cases = self.dataset.prepare_all(workers=1)
        missing = [c.id for c in self.cases if c.label is None]
        if missing:
            raise M2CofsError(f"case(s) without a label file: {', '.join(missing)} (exclude them with --exclude)", o.data)

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
        if path.exists() and self.dist.is_main:
            old = json.loads(path.read_text())
            keys = ("modalities", "label_convention", "cases", "preprocessing", "config")
            diff = [k for k in keys if k != "config" and old.get(k) != info.get(k)]
            if _training_config(old.get("config")) != _training_config(info["config"]):
                diff.append("config")
            if diff:
                raise M2CofsError(f"holds a run with different {', '.join(diff)}; use another --out or pass --overwrite", self.out)
        if self.dist.is_main:
            atomic_write_json(path, info)
        self.run_info = info

    def _say(self, text: str) -> None:
        if self.dist.is_main:
            print(text, flush=True)

    # ------------------------------------------------------------------ stage plumbing
    def stage_file(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.safetensors"

    def done(self, name: str) -> bool:
        return self.stage_file(name).exists()

    def _save_stage(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.dist.is_main:
            save_tensors(self.stage_file(name), tensors, {"stage": name, "m2cofs": __version__})
            (self.out / "checkpoints" / f"{name}.pt").unlink(missing_ok=True)
        barrier(self.dist)

    def _load_stage(self, name: str) -> dict[str, torch.Tensor]:
        path = self.stage_file(name)
        if not path.exists():
            raise M2CofsError(f"has no results of {name}; run that stage first (e.g. --stages all)", self.out)
        return load_tensors(path)

    @staticmethod
    def _prefixed(**parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``_prefixed(fusion=θ, seg_head=φ)`` → one flat mapping ``{"fusion.…": …, "seg_head.…": …}``."""
        return {f"{prefix}.{k}": v for prefix, state in parts.items() for k, v in state.items()}

    @staticmethod
    def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        p = prefix + "."
        return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}

    def _settings(self, stage: int) -> LoopSettings:
        c = self.cfg
        lr = c.train.stage2_lr if stage == 2 and c.train.stage2_lr is not None else c.train.lr
        epochs, seconds = c.train.epochs[f"stage{stage}"], None
        if self.budgets:  # the budget decides; the epochs are only a cap
            epochs, seconds = BUDGET_EPOCHS, self.budgets[stage] / LOOPS_PER_STAGE[stage]
        return LoopSettings(epochs=epochs, batch_size=c.data.batch_size, lr=lr,
                            weight_decay=c.train.weight_decay, optimizer=c.train.optimizer,
                            checkpoint_every=c.train.checkpoint_every, seed=c.train.seed, workers=c.data.workers,
                            progress=self.opts.progress, amp=self.dist.device.type == "cuda",
                            stop_after_steps=self.opts.stop_after_steps, max_seconds=seconds,
                            lr_schedule=c.train.lr_schedule)

    def _patches(self, name: str, foreground_ratio: float | None = None) -> PatchDataset:
        d = self.cfg.data
        return PatchDataset(self.cases, self.convention, d.patch_size, d.samples_per_case,
                            d.foreground_ratio if foreground_ratio is None else foreground_ratio, d.augment,
                            self.cfg.train.seed, STAGE_KEYS[name], bias_field_prob=d.bias_field_prob,
                            gamma_prob=d.gamma_prob)

    def _run(self, name: str, task, stage: int, fg: float | None = None):
        t = time.time()
        self._say(f"--- {name}")
        result = run_loop(name, task, self._patches(name, fg), self._settings(stage), self.out, self.dist,
                          STAGE_KEYS[name], self.opts.resume)
        self.timings[name] = time.time() - t
        self.losses[name] = result.last_loss
        return result

    def _freeze_encoders(self) -> None:
        for p in self.net.encoders.parameters():
            p.requires_grad_(False)
        self.net.encoders.eval()

    def _dev(self, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.dist.device) for k, v in d.items()}

    # ------------------------------------------------------------------ the stages
    def stage0(self, run: bool) -> None:
        name = s0.NAME
        if run and not self.done(name):
            task = s0.AutoencoderTask(self.net)
            self._run(name, task, 0, fg=0.0)
            self._save_stage(name, self._prefixed(encoders=self.net.encoders.state_dict(),
                                                  decoder=self.net.decoder.state_dict()))
        res = self._load_stage(name)
        self.net.encoders.load_state_dict(self._part(res, "encoders"))
        self.net.decoder.load_state_dict(self._part(res, "decoder"))
        self._freeze_encoders()

    def stage1(self, run: bool) -> None:
        t = self.cfg.train
        if run and not self.done(s1.FUSION):
            self.net.load_fusion_state(self.theta0)
            if self.cfg.model.fusion_channels == self.cfg.model.feature_channels:
                self.net.fusion_head.init_from_decoder(self.net.decoder)  # ψ starts from D
            task = s1.FusionTask(self.net, alpha=t.alpha, si_xi=t.si_xi)
            self._run(s1.FUSION, task, 1)
            self._save_stage(s1.FUSION, self._prefixed(fusion=self.net.fusion_state(), omega=task.si.importance(),
                                                        fusion_head=self.net.fusion_head.state_dict()))
        if run and not self.done(s1.SEGMENTATION):
            self.net.load_fusion_state(self.theta0)
            task = s1.SegmentationTask(self.net, seg_loss=t.seg_loss, si_xi=t.si_xi)
            self._run(s1.SEGMENTATION, task, 1)
            self._save_stage(s1.SEGMENTATION, self._prefixed(fusion=self.net.fusion_state(), omega=task.si.importance(),
                                                              seg_head=self.net.seg_head.state_dict()))
        f, s = self._load_stage(s1.FUSION), self._load_stage(s1.SEGMENTATION)
        self.theta_f, self.omega_f = self._part(f, "fusion"), self._part(f, "omega")
        self.theta_s, self.omega_s = self._part(s, "fusion"), self._part(s, "omega")
        self.psi_1, self.phi_1 = self._part(f, "fusion_head"), self._part(s, "seg_head")

    def stage2(self, run: bool) -> None:
        t = self.cfg.train
        if run and not self.done(s2.SEG_TO_FUSION):
            self.net.fusion_head.load_state_dict(self.psi_1)
            task = s2.seg_to_fusion_task(self.net, self._dev(self.theta_s), self._dev(self.omega_s), t.alpha, t.si_lambda,
                                         t.stage2_train_heads)
            self._run(s2.SEG_TO_FUSION, task, 2)
            self._save_stage(s2.SEG_TO_FUSION, self._prefixed(fusion=self.net.fusion_state(),
                                                               fusion_head=self.net.fusion_head.state_dict()))
        if run and not self.done(s2.FUSION_TO_SEG):
            self.net.seg_head.load_state_dict(self.phi_1)
            task = s2.fusion_to_seg_task(self.net, self._dev(self.theta_f), self._dev(self.omega_f), t.seg_loss, t.si_mu,
                                         t.stage2_train_heads)
            self._run(s2.FUSION_TO_SEG, task, 2)
            self._save_stage(s2.FUSION_TO_SEG, self._prefixed(fusion=self.net.fusion_state(),
                                                               seg_head=self.net.seg_head.state_dict()))
        self.net.fusion_head.requires_grad_(True)
        self.net.seg_head.requires_grad_(True)
        a, b = self._load_stage(s2.SEG_TO_FUSION), self._load_stage(s2.FUSION_TO_SEG)
        self.theta_sf, self.psi_2 = self._part(a, "fusion"), self._part(a, "fusion_head")
        self.theta_fs, self.phi_2 = self._part(b, "fusion"), self._part(b, "seg_head")

    def stage3(self, run: bool) -> None:
        from m2cofs.models.weight_generator import WeightGenerator

        t = self.cfg.train
        if run and not self.done(s3.NAME):
            self.net.fusion_head.load_state_dict(self.psi_2)
            self.net.seg_head.load_state_dict(self.phi_2)
            torch.manual_seed(t.seed + 3)
            gen = WeightGenerator(self.theta_sf, self.theta_fs, t.g_hidden, t.g_init, self.theta_f)
            si = None
            if t.stage3_si:
                si = (self._dev(self.omega_s), self._dev(self.theta_s), self._dev(self.omega_f), self._dev(self.theta_f),
                      t.si_lambda, t.si_mu)
            task = s3.UnificationTask(self.net, gen, self._dev(self.theta_sf), self._dev(self.theta_fs), alpha=t.alpha,
                                      eta=t.eta, gamma=t.gamma, seg_loss=t.seg_loss, manifold=t.manifold, knn_k=t.knn_k, si=si)
            self._run(s3.NAME, task, 3)
            theta_u = task.unified_weights()
            self._save_stage(s3.NAME, self._prefixed(fusion=theta_u, fusion_head=self.net.fusion_head.state_dict(),
                                                      seg_head=self.net.seg_head.state_dict(), generator=gen.state_dict()))
        res = self._load_stage(s3.NAME)
        self.theta_u = self._part(res, "fusion")
        self.net.load_fusion_state(self.theta_u)
        self.net.fusion_head.load_state_dict(self._part(res, "fusion_head"))
        self.net.seg_head.load_state_dict(self._part(res, "seg_head"))

    # ------------------------------------------------------------------ outputs
    def _model_meta(self, kind: str, tasks: list[str], theta: str) -> dict:
        return {"kind": kind, "tasks": tasks, "fusion_weights": theta, "preset": self.cfg.preset,
                "config": self.cfg.to_dict(), "modalities": self.modalities,
                "label_convention": self.convention.name, "regions": list(self.convention.regions),
                "preprocessing": self.preprocess.to_dict(), "trained_on": [c.id for c in self.cases]}

    def write_model(self, path: str | Path, kind: str, tasks: list[str], theta: str, fusion: dict, **heads: dict) -> Path:
        """A model file (this run's encoders, the given F weights and heads) with its sidecar;
        a relative ``path`` is inside RUN."""
        tensors = self._prefixed(encoders=self.net.encoders.state_dict(), fusion=fusion, **heads)
        return save_model_file(self.out / path, tensors, self._model_meta(kind, tasks, theta))

    def write_models(self) -> None:
        if not self.dist.is_main:
            return
        if self.done(s1.FUSION) and self.done(s1.SEGMENTATION):
            self.write_model("fusion_specialist.ckpt", "fusion_specialist", ["fusion"], "theta_F", self.theta_f,
                              fusion_head=self.psi_1)
            self.write_model("seg_specialist.ckpt", "seg_specialist", ["segmentation"], "theta_S", self.theta_s,
                              seg_head=self.phi_1)
        if self.done(s3.NAME):
            self.write_model("unified.ckpt", "unified", ["fusion", "segmentation"], "theta_U", self.theta_u,
                              fusion_head=self.net.fusion_head.state_dict(), seg_head=self.net.seg_head.state_dict())

    def run(self) -> dict:
        stages = self.opts.stages
        start = time.time()
        self.stage0(0 in stages)
        if max(stages) >= 1:
            self.stage1(1 in stages)
        if max(stages) >= 2:
            self.stage2(2 in stages)
        if max(stages) >= 3:
            self.stage3(3 in stages)
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
               "time_budget_seconds": {f"stage{k}": round(v, 1) for k, v in self.budgets.items()} or None,
               "device": str(self.dist.device), "world_size": self.dist.world_size}
        if hasattr(self, "theta_sf"):
            out["weight_distances"] = {
                "stage1_theta_s_vs_theta_f": s2.weight_distance(self.theta_s, self.theta_f),
                "stage2_theta_sf_vs_theta_fs": s2.weight_distance(self.theta_sf, self.theta_fs),
            }
            if hasattr(self, "theta_u"):
                out["weight_distances"]["theta_u_vs_theta_sf"] = s2.weight_distance(self.theta_u, self.theta_sf)
                out["weight_distances"]["theta_u_vs_theta_fs"] = s2.weight_distance(self.theta_u, self.theta_fs)
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
