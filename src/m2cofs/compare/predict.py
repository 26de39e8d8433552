"""How each kind of method predicts a fold's held-out cases (see :mod:`.methods`): a model file
through the inference :class:`~m2cofs.inference.Predictor`, a classical fusion rule on each
case's own grid, or a segmentation-only peer network trained here and predicted in memory.
Every prediction folder has the ``m2cofs predict`` layout, with a ``predict.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from m2cofs.compare.folds import FoldContext
from m2cofs.compare.methods import CLASSICAL, PEER, method
from m2cofs.io import atomic_write_json
from m2cofs.training import seeds


def predict_model(model_path: Path, ctx: FoldContext, out: Path) -> None:
    """The held-out cases of a fold predicted as ``m2cofs predict`` does, through the Predictor."""
    from m2cofs.inference import Predictor

    Predictor(model_path, progress=ctx.opts.progress).predict_folder(
        ctx.opts.data, out, format=ctx.opts.format, ids=list(ctx.fold.test_ids), overwrite=True, preview=False)


def predict_classical(name: str, ctx: FoldContext, out: Path) -> None:
    """Learning-free fusion, or one source copied, on each held-out case's own grid (sources
    scaled as evaluate does)."""
    from m2cofs.baselines.classical import CLASSICAL_FUSION, COPY_SOURCE
    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
    from m2cofs.io import save_nifti

    ds = MultiModalDataset(ctx.opts.data, ctx.opts.format, modalities=ctx.t.modalities, preprocess=None,
                           ids=ctx.fold.test_ids, load_labels=False)
    fuse = {**CLASSICAL_FUSION, **COPY_SOURCE}[name]
    for i in range(len(ds)):
        case = ds.load_raw(i)
        fg = foreground_mask(case.images, case.mask)
        srcs = [scale_intensity(ch, fg, PreprocessConfig())[0] for ch in case.images]
        fused = np.asarray(fuse(srcs, fg), dtype=np.float32)
        save_nifti(out / case.id / f"{case.id}_fused.nii.gz", fused, case.affine, case.header, dtype=np.float32)
    atomic_write_json(out / "predict.json", {"method": name, "modalities": ctx.t.modalities})


class PeerNet(torch.nn.Module):
    """Adapter: a segmentation-only network behind M2CoFSNet's forward signature."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, fusion_params=None, tasks=("segmentation",)):
        return {"seg": self.model(x)}


def train_and_predict_peer(name: str, ctx: FoldContext, out: Path) -> None:
    """Train the peer on the fold's training cases (within the CPU time of the fold's M²-CoFS
    run, or ``--peer-seconds``; on ``--peer-loss`` or the run's loss; kept in ``peer.safetensors``,
    its settings in ``peer.json``), then predict the held-out cases."""
    from m2cofs.baselines.peers import PeerTask, build_peer
    from m2cofs.checkpoint import load_tensors, save_tensors
    from m2cofs.inference import LoadedModel
    from m2cofs.training.engine import run_loop

    t = ctx.t
    d = ctx.method_dir(name)
    weights = d / "peer.safetensors"
    loss = peer_loss(ctx.opts)
    torch.manual_seed(t.cfg.train.seed)
    model = build_peer(name, len(t.modalities), len(t.convention.regions))
    if not weights.exists():
        atomic_write_json(d / "peer.json", {"network": name, "seg_loss": loss, "max_seconds": ctx.peer_seconds})
        task = PeerTask(model, loss)
        settings = t.loop_settings(1, "stage1_segmentation")
        settings.epochs = 10_000  # bounded by the CPU-time budget of the M²-CoFS run
        settings.max_seconds = ctx.peer_seconds
        run_loop(f"peer_{name}", task, t.patch_dataset("stage1_segmentation"), settings, d, t.dist, seeds.PEER_KEY, resume=True)
        save_tensors(weights, model.state_dict())
    model.load_state_dict(load_tensors(weights))
    meta = {"tasks": ["segmentation"], "modalities": t.modalities, "label_convention": t.convention.name,
            "regions": list(t.convention.regions), "kind": f"peer_{name}"}
    loaded = LoadedModel(PeerNet(model).eval(), meta, t.cfg, weights)
    predict_prepared(loaded, ctx, out)


def peer_loss(opts) -> str:
    """The peers' segmentation loss: ``--peer-loss``, else the run's ``train.seg_loss``."""
    from m2cofs.config import load_config

    return opts.peer_loss or load_config(opts.preset, overrides=opts.overrides).train.seg_loss


def check_peers(opts, folds) -> None:
    """Before anything runs: a peer trained (or started) in ``folds`` on another loss than this
    comparison asks for is refused, not reused under its name (its ``peer.json``)."""
    import json

    from m2cofs.errors import M2CofsError

    peers = [m for m in opts.methods if method(m).kind == PEER]
    if not peers:
        return
    loss = peer_loss(opts)
    for fold in folds:
        for name in peers:
            path = fold.dir / "methods" / name / "peer.json"
            was = json.loads(path.read_text(encoding="utf-8")).get("seg_loss") if path.exists() else loss
            if was != loss:
                raise M2CofsError(f"this peer was trained on the {was} loss, not {loss}: compare into a new --out "
                                  "folder (or give the same --peer-loss)", path)


def predict_prepared(model, ctx: FoldContext, out: Path) -> None:
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


def predict(name: str, ctx: FoldContext, out: Path) -> None:
    """Method ``name``'s predictions of the fold's held-out cases, the way its kind predicts."""
    spec = method(name)
    if spec.kind == CLASSICAL:
        predict_classical(name, ctx, out)
    elif spec.kind == PEER:
        train_and_predict_peer(name, ctx, out)
    else:
        predict_model(spec.make(ctx), ctx, out)
