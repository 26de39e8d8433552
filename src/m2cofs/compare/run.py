"""Running ``m2cofs compare``: plan the folds, run the selected ones (train the fold's M²-CoFS,
then predict and evaluate every method on its held-out cases), aggregate every finished fold,
and write the tables, the weight-space plot, ``results.json`` and the page."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from m2cofs.compare.folds import Fold, FoldContext, make_folds, select_folds
from m2cofs.compare.options import CompareOptions
from m2cofs.compare.page import write_page
from m2cofs.compare.predict import check_peers, predict, predict_model
from m2cofs.compare.stats import aggregate, read_metrics
from m2cofs.compare.tables import Table, method_tables
from m2cofs.compare.weight_space import plot_weight_space, weight_sets
from m2cofs.config import SEG_LOSSES
from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_json, atomic_write_text

PerCase = dict[str, dict[str, float]]  # case id → column → value


def compare(opts: CompareOptions, log: Callable[[str], None] = print) -> dict:
    """Run ``m2cofs compare`` (see :mod:`m2cofs.compare`); returns the statistics of ``results.json``."""
    out = Path(opts.out)
    check_options(opts)
    folds = plan_folds(opts, out)
    check_peers(opts, folds)
    per_method, sets_per_fold = run_folds(opts, folds, out, log)
    stats = aggregate(per_method, opts.mode)
    tables = method_tables(stats, opts.methods)
    write_tables(out, tables)
    if sets_per_fold:
        plot_weight_space(sets_per_fold, out / "weight_space.png")
    atomic_write_json(out / "results.json", {"folds": [f.test_ids for f in folds], "stats": stats,
                                             "per_case": per_method})
    write_page(out, tables, opts, folds)
    log(f"wrote {out / 'index.html'}")
    return stats


def check_options(opts: CompareOptions) -> None:
    """``--peer-seconds`` is a time and ``--peer-loss`` a segmentation loss; ``--model`` stands in
    for the fold's M²-CoFS run, so the methods made from that run cannot come with it, and the
    peers need their time given."""
    from m2cofs.compare.methods import MODEL, PEER, method

    if opts.peer_seconds is not None and not opts.peer_seconds > 0:
        raise M2CofsError(f"--peer-seconds must be a positive number of seconds, not {opts.peer_seconds:g}")
    if opts.peer_loss is not None and opts.peer_loss not in SEG_LOSSES:
        raise M2CofsError(f"--peer-loss must be {' or '.join(SEG_LOSSES)}, not {opts.peer_loss!r}")
    if opts.model is None:
        return
    if opts.peer_seconds is None and any(method(m).kind == PEER for m in opts.methods):
        raise M2CofsError("--model: the peers train for the model's training time; give it with --peer-seconds")
    needs_run = [m for m in opts.methods if m != "m2cofs" and method(m).kind == MODEL]
    if needs_run:
        raise M2CofsError(f"--model replaces the M²-CoFS run of each fold, which {', '.join(needs_run)} "
                          "need: with --model choose only classic rules, copy-one-source and peers")


def check_never_seen(model: str, held_out: Sequence[str]) -> None:
    """``--model``'s scores count only on cases it was not trained on (its ``trained_on`` list)."""
    from m2cofs.bundled import resolve_model
    from m2cofs.checkpoint import read_sidecar, resolve_model_file

    path = resolve_model_file(resolve_model(model)[0])
    seen = sorted(set(read_sidecar(path).get("trained_on") or []) & set(held_out))
    if seen:
        raise M2CofsError(f"--model was trained on {len(seen)} of the cases to hold out ({', '.join(seen[:3])}"
                          f"{'...' if len(seen) > 3 else ''}): its scores there would not be held out; hold out "
                          "cases it never saw with --test-ids", path)


def plan_folds(opts: CompareOptions, out: Path) -> list[Fold]:
    """The folds of ``out``: those of its ``folds.json``, or new ones (written there) after every
    case is read and checked."""
    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.training.pipeline import check_output_folder

    check_output_folder(out, Path(opts.data))
    probe = MultiModalDataset(opts.data, opts.format, opts.labels, opts.modalities, preprocess=None)
    ids = probe.ids
    if opts.test_ids:
        unknown = sorted(set(opts.test_ids) - set(ids))
        if unknown:
            raise M2CofsError(f"--test-ids: no case {unknown[0]!r} in the data ({len(unknown)} unknown)", opts.data)
        if set(opts.test_ids) >= set(ids):
            raise M2CofsError("--test-ids holds out every case: nothing is left to train on", opts.data)
    if opts.model is not None:
        check_never_seen(opts.model, opts.test_ids or ids)
    folds_json = out / "folds.json"
    if not folds_json.exists():
        # A new comparison: read and check every case before anything is written, so bad input
        # fails at once with its one-line error and leaves no output folder behind.
        from m2cofs.training.pipeline import default_modalities

        probe.modalities = list(opts.modalities or default_modalities(probe.modalities, probe.convention))
        for i in range(len(probe)):
            probe.load_raw(i)
    out.mkdir(parents=True, exist_ok=True)
    k = "split" if opts.test_ids else opts.folds
    if folds_json.exists():
        saved = json.loads(folds_json.read_text())
        if saved.get("ids") != ids or saved.get("k") != k or (opts.test_ids and saved["folds"] != [sorted(opts.test_ids)]):
            raise M2CofsError("holds a comparison of other cases or other folds; use another folder", out)
        held = saved["folds"]
    else:
        held = make_folds(ids, opts.folds, seed=0) if not opts.test_ids else [sorted(opts.test_ids)]
        atomic_write_json(folds_json, {"ids": ids, "k": k, "folds": held, "methods": opts.methods,
                                       "preset": opts.preset, "overrides": opts.overrides})
    return [Fold(i, h, [c for c in ids if c not in h], out / f"fold{i}") for i, h in enumerate(held)]


def run_folds(opts: CompareOptions, folds: Sequence[Fold], out: Path, log: Callable[[str], None]):
    """Run the selected folds, and read what the others have finished: (method → per-case
    metrics, the weight sets of each fold run here)."""
    selected = select_folds(opts.run_folds, len(folds))
    per_method: dict[str, PerCase] = {m: {} for m in opts.methods}
    plugin_rows: dict[str, PerCase] = {}
    sets_per_fold = []
    for fold in folds:
        if fold.index not in selected:  # run elsewhere or later: take what it has finished
            done = {m: fold.dir / "eval" / m / "metrics.csv" for m in opts.methods}
            done = {m: p for m, p in done.items() if p.exists()}
            log(f"== fold {fold.index}: not selected (--fold); {len(done)} finished method(s) read")
            for m, p in done.items():
                per_method[m].update(read_metrics(p))
            continue
        log(f"== fold {fold.index}: held out {', '.join(fold.test_ids)}; training on {len(fold.train_ids)} case(s)")
        ctx = FoldContext.trained(opts, fold, out / "cache", log)
        for m, p in run_fold(ctx, opts.methods).items():
            per_method[m].update(read_metrics(p))
        for m in (m for m in opts.methods if m.startswith("plugin_")):
            plugin_rows.setdefault(f"{m}_specialist", {}).update(read_metrics(plugin_alone(ctx, m)))
        if opts.model is None:  # F's weight sets exist only where the fold's M²-CoFS run was trained
            sets_per_fold.append(weight_sets(ctx, opts.methods))
    per_method.update(plugin_rows)
    return per_method, sets_per_fold


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
            predict(name, ctx, pred)
        evaluate(pred, ctx.opts.data, ev, format=ctx.opts.format, labels=ctx.t.convention.name,
                 modalities=ctx.t.modalities, mode=ctx.opts.mode, metrics="seg,paper", report=False, overwrite=True,
                 progress=False, log=lambda m: None)
        atomic_write_json(ev / "timing.json", {"seconds": round(time.time() - t0, 1)})
        results[name] = ev / "metrics.csv"
    return results


def plugin_alone(ctx: FoldContext, name: str) -> Path:
    """A plug-in head "without M²-CoFS": its run's Stage-I segmentation specialist, predicted
    and evaluated (segmentation only); returns its metrics.csv."""
    spec = f"{name}_specialist"
    pred, ev = ctx.fold.dir / "pred" / spec, ctx.fold.dir / "eval" / spec
    if not (ev / "metrics.csv").exists():
        from m2cofs.evaluation import evaluate

        predict_model(ctx.method_dir(name) / "seg_specialist.ckpt", ctx, pred)
        evaluate(pred, ctx.opts.data, ev, format=ctx.opts.format, labels=ctx.t.convention.name, metrics="seg",
                 report=False, overwrite=True, progress=False, log=lambda msg: None)
    return ev / "metrics.csv"


def write_tables(out: Path, tables: dict[str, Table]) -> None:
    """table_<name>.md for every table; the fusion, segmentation and retention tables also as CSV."""
    for name, t in tables.items():
        atomic_write_text(out / f"table_{name}.md", t.markdown())
        if name in ("fusion", "segmentation", "retention"):
            atomic_write_text(out / f"table_{name}.csv", t.csv)
