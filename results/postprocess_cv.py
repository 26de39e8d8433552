#!/usr/bin/env python
"""How much the segmentation results of a cross-validated compare depend on post-processing.

    python results/postprocess_cv.py --compare CMP --data ../shared/data --out results/cv5

For every fold of a finished ``m2cofs compare`` and every learned segmentation method in it
(peers included; plug-in heads' "alone" rows are not), the fold's own model file predicts the held-out case once without post-processing; three
post-processings of that one prediction are then evaluated with ``m2cofs evaluate``:

* ``default``: what ``predict`` does by default (small components removed, then the largest
  whole-tumour component and every one at least ``wt_keep_fraction`` of its size kept);
* ``small_only``: small components removed, no largest-component rule;
* ``none``: the network's thresholded output as it is.

Nothing is trained; the weights are the compare run's. Writes ``postprocess.md`` and
``postprocess.json`` (mean ± std per method and setting, and the per-case numbers) into OUT.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

SETTINGS = ("default", "small_only", "none")


def model_path(fold_dir: Path, method: str) -> Path | None:
    """The model file compare wrote for ``method`` in one fold (None: not a learned method there)."""
    if method in ("m2cofs", "seg_specialist"):
        candidates = [fold_dir / "m2cofs" / ("unified.ckpt" if method == "m2cofs" else "seg_specialist.ckpt")]
    else:  # a model of its own, or (ablations, plug-ins) a whole derived run
        candidates = [fold_dir / "methods" / method / "model.ckpt", fold_dir / "methods" / method / "unified.ckpt"]
    return next((p for p in candidates if p.exists()), None)


def load(fold_dir: Path, method: str):
    """A :class:`LoadedModel` for ``method`` (peers are wrapped like compare wraps them)."""
    from m2cofs.inference import LoadedModel, load_model

    if method in ("segresnet", "unet"):
        from m2cofs.baselines.peers import build_peer
        from m2cofs.checkpoint import load_tensors
        from m2cofs.compare import PeerNet

        ref = load_model(fold_dir / "m2cofs" / "unified.ckpt")  # same data, config and preprocessing
        peer = build_peer(method, len(ref.modalities), len(ref.meta["regions"]))
        peer.load_state_dict(load_tensors(fold_dir / "methods" / method / "peer.safetensors"))
        meta = {**ref.meta, "tasks": ["segmentation"], "kind": f"peer_{method}"}
        return LoadedModel(PeerNet(peer).eval(), meta, ref.config, ref.path)
    path = model_path(fold_dir, method)
    return load_model(path) if path else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from m2cofs.compare import ALL_METHODS, GROUPS, label, read_metrics
    from m2cofs.data import MultiModalDataset
    from m2cofs.data.preprocess import PreprocessConfig
    from m2cofs.evaluation import evaluate
    from m2cofs.inference import postprocess_regions, predict_array, prob_to_regions
    from m2cofs.data.labels import regions_to_labels
    from m2cofs.io import save_nifti

    cmp_dir, out = Path(args.compare), Path(args.out)
    folds = json.loads((cmp_dir / "folds.json").read_text())
    # every method evaluated in some fold, in compare's order; those without segmentation drop out below
    methods = [m for m in ALL_METHODS if m not in GROUPS["classical"] and m != "fusion_specialist"
               and any((cmp_dir / f"fold{f}" / "eval" / m).is_dir() for f in range(len(folds["folds"])))]
    work = Path(tempfile.mkdtemp(prefix="m2cofs-pp-"))
    try:
        for f, held in enumerate(folds["folds"]):
            fold_dir = cmp_dir / f"fold{f}"
            for method in methods:
                if not (fold_dir / "eval" / method).is_dir():
                    continue
                model = load(fold_dir, method)
                if model is None or "segmentation" not in model.tasks:
                    continue
                pre = PreprocessConfig.from_dict(model.meta["preprocessing"])
                ds = MultiModalDataset(args.data, folds.get("format", "auto"), modalities=model.modalities,
                                       preprocess=pre, ids=held, load_labels=False, cache_dir=str(cmp_dir / "cache"))
                conv, inf = model.convention, model.config.inference
                for i in range(len(ds)):
                    case = ds.prepared(i)
                    # the steps of predict_case, with the post-processing varied
                    regions = prob_to_regions(predict_array(model, case.image, tasks=["segmentation"])["seg_prob"], case.meta)
                    spacing = np.sqrt((np.array(case.meta.original_affine)[:3, :3] ** 2).sum(0))
                    labels = {"none": regions_to_labels(regions, conv),
                              "small_only": regions_to_labels(postprocess_regions(
                                  regions, conv, spacing, inf.min_component_mm3, False), conv),
                              "default": regions_to_labels(postprocess_regions(
                                  regions, conv, spacing, inf.min_component_mm3, inf.keep_largest_wt,
                                  inf.wt_keep_fraction), conv)}
                    for s, lab in labels.items():
                        save_nifti(work / method / s / case.id / f"{case.id}_seg.nii.gz", lab,
                                   np.array(case.meta.original_affine), case.meta.nifti_header(), dtype=np.uint8)
                print(f"fold {f}: {method}", flush=True)
                convention, modalities = conv.name, model.modalities
        per_case: dict = {}
        for method in methods:
            for s in SETTINGS:
                pred = work / method / s
                if not pred.exists():
                    continue
                ev = work / "eval" / method / s
                evaluate(pred, args.data, ev, labels=convention, modalities=modalities, metrics="seg", mode="volume", report=False,
                         overwrite=True, progress=False, log=lambda m: None)
                per_case.setdefault(method, {})[s] = read_metrics(ev / "metrics.csv")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    columns = sorted({c for by in per_case.values() for rows in by.values() for r in rows.values() for c in r
                      if c.startswith(("Dice/", "HD95/"))}, key=lambda c: (c.startswith("HD95"), c))
    stats = {m: {s: {c: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "n": len(v)}
                     for c in columns if (v := [r[c] for r in rows.values() if c in r and np.isfinite(r[c])])}
                 for s, rows in by.items()} for m, by in per_case.items()}

    def cell(e: dict | None, digits: int) -> str:
        if e is None:
            return "–"
        return f"{e['mean']:.{digits}f}" + (f" ± {e['std']:.{digits}f}" if e["std"] is not None else "")

    md = ["| method | post-processing | n | " + " | ".join(columns) + " |", "| --- | --- | --- |" + " --- |" * len(columns)]
    for m, by in stats.items():
        for s in SETTINGS:
            if s in by and by[s]:
                e = by[s]
                cells = [cell(e.get(c), 2 if c.startswith("HD95") else 3) for c in columns]
                md.append(f"| {label(m)} | {s} | {max(x['n'] for x in e.values())} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "postprocess.md").write_text("\n".join(md) + "\n")
    (out / "postprocess.json").write_text(json.dumps({"stats": stats, "per_case": per_case}, indent=1))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
