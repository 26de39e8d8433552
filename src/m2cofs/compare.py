"""``m2cofs compare``: M²-CoFS against its baselines and ablations, cross-validated over cases.

For each fold the held-out cases are predicted by every method and scored with
:func:`m2cofs.evaluation.evaluate`; then the tables, a paired test per metric against M²-CoFS,
the weight-space plot and an HTML page are written::

    DIR/
      folds.json                       which cases each fold holds out
      fold<k>/m2cofs/                  the M²-CoFS run (stages 0-3), reused by many methods
      fold<k>/methods/<method>/        a method's own training / model file (when it has one)
      fold<k>/pred/<method>/           predictions of the held-out cases (m2cofs predict layout)
      fold<k>/eval/<method>/           metrics.csv, summary.json of those predictions
      table_fusion.md/.csv             methods × the paper's fusion metrics (mean ± std over cases)
      table_segmentation.md/.csv       methods × Dice and HD95 per region
      table_ablation.md                M²-CoFS and its ablations
      table_plugin.md                  segmentation heads with and without M²-CoFS (if run)
      weight_space.png                 2-D embeddings of F's weight sets (PCA and t-SNE)
      index.html                       all of it on one self-contained page
      results.json                     every number above, and the paired tests

Nothing is trained twice: the methods reuse the fold's Stage I/II results, and every step
whose outputs exist is skipped, so an interrupted compare continues where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from m2cofs.compare_methods import GROUPS  # torch-free, so that `m2cofs compare --help` can list them
from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_json, atomic_write_text
from m2cofs.training import seeds
from m2cofs.training.results import prefixed

# ------------------------------------------------------------------------------------ methods
ALL_METHODS = [m for g in GROUPS.values() for m in g]
DEFAULT_METHODS = [m for g, ms in GROUPS.items() if g != "plugin" for m in ms]
ABLATIONS = ["m2cofs", *GROUPS["ablations"]]
LABELS = {
    "m2cofs": "M²-CoFS (θU)", "mean": "mean", "max": "maximum", "pca": "PCA-weighted", "laplacian": "Laplacian pyramid",
    "fusion_specialist": "Stage I fusion (θF)", "seg_specialist": "Stage I segmentation (θS)", "joint": "joint multi-task",
    "average": "average θF, θS", "task_arithmetic": "task arithmetic", "ties": "TIES-merging", "fisher": "Fisher merging",
    "finetune": "fine-tuning F→S", "ewc": "EWC F→S", "si": "SI F→S", "lwf": "LwF F→S",
    "no_stage2": "w/o Stage II", "no_stage3": "w/o Stage III", "no_si": "w/o L_SI", "no_lm": "w/o L_M",
    "euclidean_lm": "Euclidean L_M", "segresnet": "SegResNet (seg only)", "unet": "UNet (seg only)",
}
PLUGIN_HEADS = {"swinunetr": 12, "unetr": 12, "segresnet": 8, "unet": 8}  # lite feature sizes


def parse_methods(text: str | Sequence[str] | None) -> list[str]:
    """``None``/"default", "all", group names and method names, comma-separated."""
    if text is None:
        return list(DEFAULT_METHODS)
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in (i.strip() for i in items if i.strip()):
        if item == "default":
            names = DEFAULT_METHODS
        elif item == "all":
            names = ALL_METHODS
        elif item in GROUPS:
            names = GROUPS[item]
        elif item in ALL_METHODS:
            names = [item]
        else:
            raise M2CofsError(f"--methods: unknown method {item!r}; choose from {', '.join(GROUPS)} or {', '.join(ALL_METHODS)}")
        out += [n for n in names if n not in out]
    if "m2cofs" not in out:
        out.insert(0, "m2cofs")  # the reference of every paired test
    return out


def make_folds(ids: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint held-out sets covering every case (a seeded shuffle, then round-robin)."""
    if k < 2:
        raise M2CofsError("--folds must be at least 2")
    if k > len(ids):
        raise M2CofsError(f"--folds {k} is more than the {len(ids)} case(s)")
    order = list(np.random.default_rng(seed).permutation(sorted(ids)))
    return [sorted(order[i::k]) for i in range(k)]


# ------------------------------------------------------------------------------------ context
@dataclass
class CompareOptions:
    data: str
    out: str
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    preset: str = "lite"
    overrides: list[str] = field(default_factory=list)
    folds: int = 5
    format: str = "auto"
    labels: str = "auto"
    modalities: list[str] | None = None
    mode: str = "volume"
    progress: bool = True
    fisher_batches: int = 8
    run_folds: list[int] | None = None  # train/predict only these folds (None: all); the tables use every finished one


@dataclass
class Fold:
    index: int
    test_ids: list[str]
    train_ids: list[str]
    dir: Path


class FoldContext:
    """One fold: its M²-CoFS run (the Trainer, stage results) and helpers for the methods."""

    def __init__(self, opts: CompareOptions, fold: Fold, cache: Path, log: Callable[[str], None]):
        from m2cofs.training.pipeline import Trainer

        self.opts, self.fold, self.log = opts, fold, log
        self.cache = cache
        self.run_dir = fold.dir / "m2cofs"
        t0 = time.time()
        self.trainer = Trainer(self._train_opts(self.run_dir, opts.overrides, resume=True))
        self.trainer.run()
        self.train_seconds = time.time() - t0
        summary = json.loads((self.run_dir / "summary.json").read_text())
        self.m2cofs_seconds = float(sum(summary.get("stage_seconds", {}).values())) or self.train_seconds

    def _train_opts(self, out: Path, overrides: list[str], resume: bool = True, stages=(0, 1, 2, 3)):
        from m2cofs.training.pipeline import TrainOptions

        o = self.opts
        return TrainOptions(data=o.data, out=str(out), preset=o.preset, overrides=list(overrides), stages=list(stages),
                            resume=resume, format=o.format, labels=o.labels, modalities=o.modalities,
                            include=self.fold.train_ids, cache_dir=str(self.cache), progress=o.progress)

    # weights of the fold's run
    @property
    def t(self):
        return self.trainer

    def method_dir(self, name: str) -> Path:
        return self.fold.dir / "methods" / name

    def derived_run(self, name: str, overrides: list[str], copy_stages: Sequence[str], stages: Sequence[int],
                    fake: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
        """A run that starts from this fold's stage results (copied) and trains ``stages``
        with ``overrides``; ``fake`` writes given tensors as stage results (skipping a stage)."""
        from m2cofs.checkpoint import save_tensors
        from m2cofs.training.pipeline import Trainer

        run = self.method_dir(name)
        if not (run / "unified.ckpt").exists():
            (run / "stages").mkdir(parents=True, exist_ok=True)
            for st in copy_stages:
                src = self.run_dir / "stages" / f"{st}.safetensors"
                dst = run / "stages" / f"{st}.safetensors"
                if not dst.exists():
                    shutil.copy2(src, dst)
            for st, tensors in (fake or {}).items():
                dst = run / "stages" / f"{st}.safetensors"
                if not dst.exists():
                    save_tensors(dst, tensors, {"stage": st, "note": f"stands in for {st} ({name})"})
            Trainer(self._train_opts(run, [*self.opts.overrides, *overrides], resume=True, stages=stages)).run()
        return run / "unified.ckpt"


# ------------------------------------------------------------------------------------ predictors
def _predict_model(model_path: Path, ctx: FoldContext, out: Path) -> None:
    """The held-out cases of a fold predicted as ``m2cofs predict`` does, through the Predictor."""
    from m2cofs.inference import Predictor

    Predictor(model_path, progress=ctx.opts.progress).predict_folder(
        ctx.opts.data, out, format=ctx.opts.format, ids=list(ctx.fold.test_ids), overwrite=True, preview=False)


def _predict_classical(name: str, ctx: FoldContext, out: Path) -> None:
    """Learning-free fusion on each held-out case's own grid (sources scaled as evaluate does)."""
    from m2cofs.baselines.classical import CLASSICAL_FUSION
    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
    from m2cofs.io import save_nifti

    ds = MultiModalDataset(ctx.opts.data, ctx.opts.format, modalities=ctx.t.modalities, preprocess=None,
                           ids=ctx.fold.test_ids, load_labels=False)
    fuse = CLASSICAL_FUSION[name]
    for i in range(len(ds)):
        case = ds.load_raw(i)
        fg = foreground_mask(case.images, case.mask)
        srcs = [scale_intensity(ch, fg, PreprocessConfig())[0] for ch in case.images]
        fused = np.asarray(fuse(srcs, fg), dtype=np.float32)
        save_nifti(out / case.id / f"{case.id}_fused.nii.gz", fused, case.affine, case.header, dtype=np.float32)
    atomic_write_json(out / "predict.json", {"method": name, "modalities": ctx.t.modalities})


class _PeerNet(torch.nn.Module):
    """Adapter: a segmentation-only network behind M2CoFSNet's forward signature."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, fusion_params=None, tasks=("segmentation",)):
        return {"seg": self.model(x)}


def _train_and_predict_peer(name: str, ctx: FoldContext, out: Path) -> None:
    from m2cofs.baselines.peers import PeerTask, build_peer
    from m2cofs.checkpoint import load_tensors, save_tensors
    from m2cofs.inference import LoadedModel, predict_case
    from m2cofs.training.engine import run_loop

    t = ctx.t
    d = ctx.method_dir(name)
    weights = d / "peer.safetensors"
    torch.manual_seed(t.cfg.train.seed)
    model = build_peer(name, len(t.modalities), len(t.convention.regions))
    if not weights.exists():
        task = PeerTask(model, t.cfg.train.seg_loss)
        settings = t.loop_settings(1)
        settings.epochs = 10_000  # bounded by the CPU-time budget of the M²-CoFS run
        settings.max_seconds = ctx.m2cofs_seconds
        run_loop(f"peer_{name}", task, t.patch_dataset("stage1_segmentation"), settings, d, t.dist, seeds.PEER_KEY, resume=True)
        save_tensors(weights, model.state_dict())
    model.load_state_dict(load_tensors(weights))
    meta = {"tasks": ["segmentation"], "modalities": t.modalities, "label_convention": t.convention.name,
            "regions": list(t.convention.regions), "kind": f"peer_{name}"}
    loaded = LoadedModel(_PeerNet(model).eval(), meta, t.cfg, weights)
    _predict_prepared(loaded, ctx, out)


def _predict_prepared(model, ctx: FoldContext, out: Path) -> None:
    """Predict the held-out cases with an in-memory model (no model file)."""
    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.inference import fusion_head_kind, predict_case
    from m2cofs.io import save_nifti

    t = ctx.t
    ds = MultiModalDataset(ctx.opts.data, ctx.opts.format, modalities=t.modalities, preprocess=t.preprocess,
                           ids=ctx.fold.test_ids, load_labels=False, cache_dir=ctx.cache)
    on_input_grid = "fusion" in model.tasks and fusion_head_kind(model) == "weights"  # (image heads: model grid)
    for i in range(len(ds)):
        case, source = ds.prepared_with_source(i) if on_input_grid else (ds.prepared(i), None)
        pred = predict_case(model, case, t.convention, source=source)
        aff = np.array(case.meta.original_affine)
        if pred.label is not None:
            save_nifti(out / case.id / f"{case.id}_seg.nii.gz", pred.label, aff, case.meta.nifti_header(), dtype=np.uint8)
        if pred.fused is not None:
            save_nifti(out / case.id / f"{case.id}_fused.nii.gz", pred.fused, aff, case.meta.nifti_header(),
                       dtype=np.float32)
    atomic_write_json(out / "predict.json", {"method": model.meta.get("kind"), "modalities": t.modalities})


# ------------------------------------------------------------------------------------ model makers
def _fisher(ctx: FoldContext, task_name: str) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of F for θF (fusion loss) or θS (segmentation loss), cached per fold."""
    from m2cofs.baselines.merging import diagonal_fisher
    from m2cofs.checkpoint import load_tensors, save_tensors
    from m2cofs.training import stage1_independent as s1
    from torch.utils.data import DataLoader

    path = ctx.fold.dir / "methods" / f"fisher_{task_name}.safetensors"
    if path.exists():
        return load_tensors(path)
    t = ctx.t
    if task_name == "fusion":
        t.net.load_fusion_state(t.results.theta_f)
        t.net.fusion_head.load_state_dict(t.results.psi_1)
        task = s1.FusionTask(t.net, alpha=t.cfg.train.alpha)
    else:
        t.net.load_fusion_state(t.results.theta_s)
        t.net.seg_head.load_state_dict(t.results.phi_1)
        task = s1.SegmentationTask(t.net, seg_loss=t.cfg.train.seg_loss)
    ds = t.patch_dataset(s1.FUSION if task_name == "fusion" else s1.SEGMENTATION)
    ds.set_epoch(seeds.FISHER_EPOCH)  # patches not seen in training order
    loader = DataLoader(ds, batch_size=t.cfg.data.batch_size, shuffle=False)
    fisher = diagonal_fisher(task, loader, ctx.opts.fisher_batches)
    save_tensors(path, fisher)
    return fisher


def _model_from_weights(ctx: FoldContext, name: str, fusion: dict, psi: dict | None, phi: dict | None,
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


def _theta0(ctx: FoldContext) -> dict[str, torch.Tensor]:
    return ctx.t.results.theta0


def _train_method(ctx: FoldContext, name: str, task_factory: Callable[[], object], stage_key: int,
                  theta_name: str, heads: Callable[[], dict]) -> Path:
    """Train a baseline task module with the Stage-I schedule, then write its model file."""
    from m2cofs.training.engine import run_loop

    path = ctx.method_dir(name) / "model.ckpt"
    if path.exists():
        return path
    t = ctx.t
    task = task_factory()
    t0 = time.time()
    run_loop(name, task, t.patch_dataset("stage1_segmentation"), t.loop_settings(1), ctx.method_dir(name), t.dist, stage_key,
             resume=True)
    atomic_write_json(ctx.method_dir(name) / "train.json", {"seconds": round(time.time() - t0, 1)})
    h = heads()
    tasks = [x for x, k in (("fusion", "fusion_head"), ("segmentation", "seg_head")) if k in h]
    path = ctx.t.write_model(path, name, tasks, theta_name, t.net.fusion_state(), **h)
    for part in (t.net.fusion, t.net.fusion_head, t.net.seg_head):  # methods may freeze heads; undo it
        part.requires_grad_(True)
    return path


def _fresh_seg_head(ctx: FoldContext) -> None:
    """φ from the run's seeded initialisation (a new head for the second task)."""
    from m2cofs.models.network import M2CoFSNet

    t = ctx.t
    torch.manual_seed(t.cfg.train.seed)
    fresh = M2CoFSNet(len(t.modalities), len(t.convention.regions), t.cfg.model, tuple(t.cfg.data.patch_size))
    t.net.seg_head.load_state_dict(fresh.seg_head.state_dict())


def model_for(name: str, ctx: FoldContext) -> Path | None:
    """The model file of a weight-based method (``None`` for methods that predict otherwise)."""
    from m2cofs.baselines import merging
    from m2cofs.training import stage1_independent as s1
    from m2cofs.training import stage2_adaptation as s2

    t = ctx.t
    cfg = t.cfg.train
    if name == "m2cofs":
        return ctx.run_dir / "unified.ckpt"
    if name == "fusion_specialist":
        return ctx.run_dir / "fusion_specialist.ckpt"
    if name == "seg_specialist":
        return ctx.run_dir / "seg_specialist.ckpt"
    if name == "average":
        return _model_from_weights(ctx, name, merging.average([t.results.theta_f, t.results.theta_s]), t.results.psi_1, t.results.phi_1, "avg(θF,θS)")
    if name == "task_arithmetic":
        return _model_from_weights(ctx, name, merging.task_arithmetic(_theta0(ctx), [t.results.theta_f, t.results.theta_s]),
                                   t.results.psi_1, t.results.phi_1, "task_arithmetic(θF,θS)")
    if name == "ties":
        return _model_from_weights(ctx, name, merging.ties_merging(_theta0(ctx), [t.results.theta_f, t.results.theta_s]),
                                   t.results.psi_1, t.results.phi_1, "ties(θF,θS)")
    if name == "fisher":
        merged = merging.fisher_merging([t.results.theta_f, t.results.theta_s], [_fisher(ctx, "fusion"), _fisher(ctx, "segmentation")])
        return _model_from_weights(ctx, name, merged, t.results.psi_1, t.results.phi_1, "fisher(θF,θS)")
    if name == "no_stage3":
        return _model_from_weights(ctx, name, merging.average([t.results.theta_sf, t.results.theta_fs]), t.results.psi_2, t.results.phi_2,
                                   "mean(θS→F,θF→S)")
    if name == "joint":
        def factory():
            from m2cofs.baselines.joint import JointTask

            t.net.load_fusion_state(t.results.theta0)
            if t.cfg.model.fusion_channels == t.cfg.model.feature_channels:
                t.net.fusion_head.init_from_decoder(t.net.decoder)
            _fresh_seg_head(ctx)
            return JointTask(t.net, cfg.alpha, cfg.eta, cfg.seg_loss)

        return _train_method(ctx, name, factory, seeds.JOINT_KEY, "joint",
                             lambda: {"fusion_head": t.net.fusion_head.state_dict(), "seg_head": t.net.seg_head.state_dict()})
    if name in GROUPS["continual"]:
        def factory():
            from m2cofs.baselines.continual import make_continual_task

            t.net.load_fusion_state(t.results.theta_f)
            t.net.fusion_head.load_state_dict(t.results.psi_1)
            _fresh_seg_head(ctx)
            fisher = _fisher(ctx, "fusion") if name == "ewc" else None
            return make_continual_task(name, t.net, "fusion", "segmentation", dict(t.results.theta_f), dict(t.results.omega_f), cfg,
                                       fisher=fisher)

        return _train_method(ctx, name, factory, seeds.CONTINUAL_KEY_BASE + GROUPS["continual"].index(name), f"{name}(F→S)",
                             lambda: {"fusion_head": dict(t.results.psi_1), "seg_head": t.net.seg_head.state_dict()})
    if name == "no_stage2":
        pre = {s2.SEG_TO_FUSION: prefixed(fusion=t.results.theta_s, fusion_head=t.results.psi_1),
               s2.FUSION_TO_SEG: prefixed(fusion=t.results.theta_f, seg_head=t.results.phi_1)}
        return ctx.derived_run(name, [], ["stage0_autoencoder", s1.FUSION, s1.SEGMENTATION], [3], fake=pre)
    if name == "no_si":
        return ctx.derived_run(name, ["train.si_lambda=0", "train.si_mu=0", "train.stage3_si=false"],
                               ["stage0_autoencoder", s1.FUSION, s1.SEGMENTATION], [2, 3])
    if name == "no_lm":
        return ctx.derived_run(name, ["train.gamma=0"], ["stage0_autoencoder", s1.FUSION, s1.SEGMENTATION,
                                                          s2.SEG_TO_FUSION, s2.FUSION_TO_SEG], [3])
    if name == "euclidean_lm":
        return ctx.derived_run(name, ["train.manifold=euclidean"], ["stage0_autoencoder", s1.FUSION, s1.SEGMENTATION,
                                                                    s2.SEG_TO_FUSION, s2.FUSION_TO_SEG], [3])
    if name.startswith("plugin_"):
        head = name[len("plugin_"):]
        # Stage 0 and the fusion path of Stage I never see the segmentation head: the fold's own
        # results are reused, and the rest is trained with this head
        return ctx.derived_run(name, [f"model.seg_head={head}", f"model.seg_feature_size={PLUGIN_HEADS[head]}"],
                               ["stage0_autoencoder", s1.FUSION], [0, 1, 2, 3])
    return None


def weight_sets(ctx: FoldContext, methods: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """F's weight sets of this fold for the weight-space plot."""
    from m2cofs.checkpoint import load_model_file

    t = ctx.t
    sets = {"θ0": t.results.theta0, "θF": t.results.theta_f, "θS": t.results.theta_s, "θS→F": t.results.theta_sf, "θF→S": t.results.theta_fs, "θU": t.results.theta_u}
    for m in methods:
        if m in ("m2cofs", "fusion_specialist", "seg_specialist") or m in GROUPS["classical"] or m in GROUPS["peers"]:
            continue
        path = model_for(m, ctx)
        if path is not None and path.exists():
            tensors, _ = load_model_file(path)
            sets[LABELS.get(m, m)] = {k[len("fusion."):]: v for k, v in tensors.items() if k.startswith("fusion.")}
    return sets


# ------------------------------------------------------------------------------------ running
def select_folds(run_folds: Sequence[int] | None, k: int) -> set[int]:
    """The fold indices to run (``--fold``, as in nnU-Net: several machines can each run some
    folds into one shared output folder); all of them when none is given."""
    if run_folds is None:
        return set(range(k))
    bad = [i for i in run_folds if not 0 <= i < k]
    if bad:
        raise M2CofsError(f"--fold {bad[0]} does not exist: folds are numbered 0 to {k - 1}")
    return set(run_folds)


def run_fold(ctx: FoldContext, methods: Sequence[str]) -> dict[str, Path]:
    """Predict and evaluate every method on this fold's held-out cases; returns metrics.csv paths."""
    from m2cofs.evaluation import evaluate

    results = {}
    for name in methods:
        pred = ctx.fold.dir / "pred" / name
        ev = ctx.fold.dir / "eval" / name
        if (ev / "metrics.csv").exists():
            results[name] = ev / "metrics.csv"
            continue
        t0 = time.time()
        ctx.log(f"[fold {ctx.fold.index}] {name}")
        if not (pred / "predict.json").exists():
            if pred.exists():
                shutil.rmtree(pred)  # an interrupted prediction: start it again
            if name in GROUPS["classical"]:
                _predict_classical(name, ctx, pred)
            elif name in GROUPS["peers"]:
                _train_and_predict_peer(name, ctx, pred)
            else:
                _predict_model(model_for(name, ctx), ctx, pred)
        evaluate(pred, ctx.opts.data, ev, format=ctx.opts.format, labels=ctx.t.convention.name,
                 modalities=ctx.t.modalities, mode=ctx.opts.mode, metrics="seg,paper", report=False, overwrite=True,
                 progress=False, log=lambda m: None)
        atomic_write_json(ev / "timing.json", {"seconds": round(time.time() - t0, 1)})
        results[name] = ev / "metrics.csv"
    return results


def read_metrics(path: Path) -> dict[str, dict[str, float]]:
    """metrics.csv → {case id: {column: value}} (numbers only)."""
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            vals = {}
            for k, v in row.items():
                if k in ("id", "case"):
                    continue
                try:
                    vals[k] = float(v)
                except (TypeError, ValueError):
                    pass
            out[row.get("id") or row.get("case")] = vals
    return out


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | None]:
    """Wilcoxon signed-rank (two-sided, exact for small n) and the paired t-test of a − b."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(len(a))
    res: dict[str, float | int | None] = {"n": n, "mean_diff": float(np.mean(a - b)) if n else None,
                                          "wilcoxon_p": None, "t_p": None}
    if n >= 2 and np.any(a != b):
        try:
            res["wilcoxon_p"] = float(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)
        except ValueError:
            pass
        if np.std(a - b) > 0:
            res["t_p"] = float(stats.ttest_rel(a, b).pvalue)
    return res


def _fmt(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None and math.isfinite(std) else f"{mean:.{digits}f}"


def aggregate(per_method: dict[str, dict[str, dict[str, float]]], mode: str) -> dict:
    """Mean ± std over all held-out cases, and the paired tests against M²-CoFS."""
    from m2cofs.metrics.registry import PAPER_METRICS, higher_is_better

    fusion_cols = [f"{mode}/{m}" for m in PAPER_METRICS]
    seg_cols = sorted({c for rows in per_method.values() for r in rows.values() for c in r
                       if c.startswith(("Dice/", "HD95/"))}, key=lambda c: (c.split("/")[0] != "Dice", c))
    stats: dict = {"fusion_columns": fusion_cols, "seg_columns": seg_cols, "methods": {}}
    ref = per_method.get("m2cofs", {})
    for method, rows in per_method.items():
        entry: dict = {}
        for col in fusion_cols + seg_cols:
            vals = [r[col] for r in rows.values() if col in r and math.isfinite(r[col])]
            if not vals:
                continue
            e = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None, "n": len(vals)}
            if method != "m2cofs":
                ids = [i for i in rows if i in ref and col in rows[i] and col in ref[i]]
                e["vs_m2cofs"] = paired_test([ref[i][col] for i in ids], [rows[i][col] for i in ids])
            entry[col] = e
        stats["methods"][method] = entry
    stats["higher_is_better"] = {c: higher_is_better(c) is not False for c in fusion_cols + seg_cols}
    return stats


def _table(stats: dict, methods: Sequence[str], cols: Sequence[str]) -> tuple[str, str]:
    """(markdown, csv) of methods × columns; the best mean per column in bold; † marks a paired
    Wilcoxon p < 0.05 against M²-CoFS."""
    hib = stats["higher_is_better"]
    best = {}
    for c in cols:
        vals = [(stats["methods"][m][c]["mean"], m) for m in methods if c in stats["methods"].get(m, {})]
        if vals:
            best[c] = (max if hib.get(c, True) else min)(vals)[1]
    md = ["| method | n | " + " | ".join(c.replace("volume/", "").replace("slice/", "") for c in cols) + " |",
          "| --- | --- |" + " --- |" * len(cols)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", *[f"{c} mean" for c in cols], *[f"{c} std" for c in cols], *[f"{c} wilcoxon_p" for c in cols]])
    for m in methods:
        e = stats["methods"].get(m)
        if not e or not any(c in e for c in cols):
            continue
        cells = []
        for c in cols:
            if c not in e:
                cells.append("–")
                continue
            txt = _fmt(e[c]["mean"], e[c]["std"], 2 if c.startswith("HD95") else 3)
            p = (e[c].get("vs_m2cofs") or {}).get("wilcoxon_p")
            if p is not None and p < 0.05:
                txt += " †"
            if best.get(c) == m:
                txt = f"**{txt}**"
            cells.append(txt)
        n = max(e[c]["n"] for c in cols if c in e)  # held-out cases behind the means
        md.append(f"| {LABELS.get(m, m)} | {n} | " + " | ".join(cells) + " |")
        w.writerow([m, *[e[c]["mean"] if c in e else "" for c in cols], *[e[c]["std"] if c in e and e[c]["std"] is not None else "" for c in cols],
                    *[(e[c].get("vs_m2cofs") or {}).get("wilcoxon_p") if c in e else "" for c in cols]])
    return "\n".join(md) + "\n", buf.getvalue()


def plot_weight_space(sets_per_fold: list[dict[str, dict[str, torch.Tensor]]], path: Path) -> None:
    """PCA and t-SNE of F's weight sets (one panel pair per fold, up to three folds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    folds = sets_per_fold[:3]
    fig, axes = plt.subplots(len(folds), 2, figsize=(11, 4.6 * len(folds)), dpi=100, squeeze=False)
    colours = {"θ0": "#999999", "θF": "#1f77b4", "θS": "#d62728", "θS→F": "#9467bd", "θF→S": "#ff7f0e", "θU": "#2ca02c"}
    for row, sets in enumerate(folds):
        names = list(sets)
        keys = sorted(next(iter(sets.values())))
        x = np.stack([torch.cat([sets[n][k].float().reshape(-1) for k in keys]).numpy() for n in names])
        emb = {"PCA": PCA(n_components=2).fit_transform(x)}
        if len(names) >= 4:
            emb["t-SNE"] = TSNE(n_components=2, perplexity=min(5.0, len(names) - 1.5), init="pca",
                                random_state=0).fit_transform(x)
        for col, (title, e) in enumerate(emb.items()):
            ax = axes[row][col]
            for i, n in enumerate(names):
                ax.scatter(e[i, 0], e[i, 1], s=90 if n == "θU" else 40, c=colours.get(n, "#8c564b"),
                           marker="*" if n == "θU" else "o", edgecolors="k", linewidths=0.5)
                ax.annotate(n, (e[i, 0], e[i, 1]), fontsize=8, xytext=(4, 3), textcoords="offset points")
            ax.set_title(f"fold {row}: {title} of F's weights")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    from m2cofs.io import atomic_write_with

    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_html(out: Path, tables: dict[str, str], stats: dict, opts: CompareOptions, folds: list[Fold]) -> None:
    import base64
    import html as h

    def md_to_html(md: str) -> str:
        lines = [l for l in md.strip().splitlines() if l.strip()]
        rows = [[c.strip() for c in l.strip("|").split("|")] for l in lines if not set(l) <= set("|- ")]
        out_rows = []
        for i, r in enumerate(rows):
            tag = "th" if i == 0 else "td"
            cells = "".join(f"<{tag}>{h.escape(c).replace('**', '')}</{tag}>" if "**" not in c else
                            f"<{tag}><b>{h.escape(c.replace('**', ''))}</b></{tag}>" for c in r)
            out_rows.append(f"<tr>{cells}</tr>")
        return "<table>" + "".join(out_rows) + "</table>"

    img = ""
    p = out / "weight_space.png"
    if p.exists():
        img = f'<img alt="weight space" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>m2cofs compare</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}td:first-child,th:first-child"
        "{text-align:left}th{background:#eee}img{max-width:100%}</style></head><body>",
        "<h1>M²-CoFS against its baselines</h1>",
        f"<p>Data: {h.escape(opts.data)} — {len(folds)} folds, held-out cases: "
        + "; ".join(f"fold {f.index}: {', '.join(f.test_ids)}" for f in folds)
        + f". Preset {h.escape(opts.preset)}; fusion metrics in <i>{h.escape(opts.mode)}</i> mode. Mean ± std over all held-out "
        "cases; bold: best mean; †: paired Wilcoxon signed-rank p &lt; 0.05 against M²-CoFS.</p>",
    ]
    for title, key in (("Fusion", "fusion"), ("Segmentation", "segmentation"), ("Ablations (Table 2)", "ablation"),
                       ("Segmentation head plug-in (Table 3)", "plugin")):
        if tables.get(key):
            parts.append(f"<h2>{title}</h2>{md_to_html(tables[key])}")
    if img:
        parts.append(f"<h2>Weight space</h2>{img}")
    parts.append("</body></html>")
    atomic_write_text(out / "index.html", "\n".join(parts))


def compare(opts: CompareOptions, log: Callable[[str], None] = print) -> dict:
    """Run ``m2cofs compare`` (see the module docstring)."""
    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.training.pipeline import check_output_folder

    out = Path(opts.out)
    check_output_folder(out, Path(opts.data))
    probe = MultiModalDataset(opts.data, opts.format, opts.labels, opts.modalities, preprocess=None)
    ids = probe.ids
    if not (out / "folds.json").exists():
        # A new comparison: read and check every case before anything is written, so bad input
        # fails at once with its one-line error and leaves no output folder behind.
        from m2cofs.training.pipeline import default_modalities

        probe.modalities = list(opts.modalities or default_modalities(probe.modalities, probe.convention))
        for i in range(len(probe)):
            probe.load_raw(i)
    out.mkdir(parents=True, exist_ok=True)
    seed = 0
    folds_json = out / "folds.json"
    if folds_json.exists():
        saved = json.loads(folds_json.read_text())
        if saved.get("ids") != ids or saved.get("k") != opts.folds:
            raise M2CofsError("holds a comparison of other cases or another --folds; use another folder", out)
        held = saved["folds"]
    else:
        held = make_folds(ids, opts.folds, seed)
        atomic_write_json(folds_json, {"ids": ids, "k": opts.folds, "folds": held, "methods": opts.methods,
                                       "preset": opts.preset, "overrides": opts.overrides})
    folds = [Fold(i, h, [c for c in ids if c not in h], out / f"fold{i}") for i, h in enumerate(held)]
    selected = select_folds(opts.run_folds, len(folds))
    cache = out / "cache"
    per_method: dict[str, dict[str, dict[str, float]]] = {m: {} for m in opts.methods}
    sets_per_fold = []
    plugin_rows: dict[str, dict[str, dict[str, float]]] = {}
    for fold in folds:
        if fold.index not in selected:  # run elsewhere or later: take what it has finished
            done = {m: fold.dir / "eval" / m / "metrics.csv" for m in opts.methods}
            done = {m: p for m, p in done.items() if p.exists()}
            log(f"== fold {fold.index}: not selected (--fold); {len(done)} finished method(s) read")
            for m, p in done.items():
                per_method[m].update(read_metrics(p))
            continue
        log(f"== fold {fold.index}: held out {', '.join(fold.test_ids)}; training on {len(fold.train_ids)} case(s)")
        ctx = FoldContext(opts, fold, cache, log)
        paths = run_fold(ctx, opts.methods)
        for m, p in paths.items():
            per_method[m].update(read_metrics(p))
        plugin_specs = [m for m in opts.methods if m.startswith("plugin_")]
        for m in plugin_specs:  # "without M²-CoFS": the same head's Stage-I segmentation specialist
            spec = f"{m}_specialist"
            pred, ev = fold.dir / "pred" / spec, fold.dir / "eval" / spec
            if not (ev / "metrics.csv").exists():
                _predict_model(ctx.method_dir(m) / "seg_specialist.ckpt", ctx, pred)
                from m2cofs.evaluation import evaluate

                evaluate(pred, opts.data, ev, format=opts.format, labels=ctx.t.convention.name, metrics="seg",
                         report=False, overwrite=True, progress=False, log=lambda msg: None)
            plugin_rows.setdefault(spec, {}).update(read_metrics(ev / "metrics.csv"))
        sets_per_fold.append(weight_sets(ctx, opts.methods))
    for spec, rows in plugin_rows.items():
        per_method[spec] = rows
    stats = aggregate(per_method, opts.mode)
    order = [m for m in opts.methods if m in stats["methods"]]
    tables = {}
    fus_methods = [m for m in order if any(c in stats["methods"][m] for c in stats["fusion_columns"])]
    seg_methods = [m for m in order if any(c in stats["methods"][m] for c in stats["seg_columns"])]
    tables["fusion"], fcsv = _table(stats, fus_methods, stats["fusion_columns"])
    tables["segmentation"], scsv = _table(stats, seg_methods, stats["seg_columns"])
    abl = [m for m in ABLATIONS if m in stats["methods"]]
    tables["ablation"], _ = _table(stats, abl, [c for c in stats["seg_columns"] if c.startswith("Dice")] + stats["fusion_columns"][:4])
    plug = [x for m in opts.methods if m.startswith("plugin_") for x in (m, f"{m}_specialist") if x in stats["methods"]]
    if plug:
        for m in plug:
            LABELS.setdefault(m, m.replace("plugin_", "").replace("_specialist", " alone") +
                              ("" if m.endswith("_specialist") else " + M²-CoFS"))
        tables["plugin"], _ = _table(stats, plug, [c for c in stats["seg_columns"] if c.startswith("Dice")])
    atomic_write_text(out / "table_fusion.md", tables["fusion"])
    atomic_write_text(out / "table_fusion.csv", fcsv)
    atomic_write_text(out / "table_segmentation.md", tables["segmentation"])
    atomic_write_text(out / "table_segmentation.csv", scsv)
    atomic_write_text(out / "table_ablation.md", tables["ablation"])
    if "plugin" in tables:
        atomic_write_text(out / "table_plugin.md", tables["plugin"])
    if sets_per_fold:
        plot_weight_space(sets_per_fold, out / "weight_space.png")
    atomic_write_json(out / "results.json", {"folds": [f.test_ids for f in folds], "stats": stats,
                                             "per_case": per_method})
    write_html(out, tables, stats, opts, folds)
    log(f"wrote {out / 'index.html'}")
    return stats
