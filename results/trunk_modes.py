#!/usr/bin/env python
"""What ``--trunk volume`` costs and gives, on the held-out cases of finished compare runs.

    python results/trunk_modes.py --compare CMP [CMP ...] --data ../shared/data --out results/trunk_modes

For every fold of each ``m2cofs compare`` folder and every unified model in it (θU, and the
plug-in heads' θU where the run has them), the fold's model predicts its held-out case twice
with ``m2cofs predict``, once with ``--trunk window`` (the default: the whole network in every
sliding window) and once with ``--trunk volume`` (Φ, F and ψ once per voxel, φ alone in the
windows), and ``m2cofs evaluate`` scores both on the original grid (post-processing as by
default). Nothing is trained; the times are ``benchmarks/run.py``'s to measure. Writes ``trunk_modes.md`` and ``trunk_modes.json`` into OUT: the
per-case numbers, the mean change, and on how many cases each metric went up.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

MODES = ("window", "volume")
COLUMNS = ("Dice/ET", "Dice/TC", "Dice/WT", "HD95/WT", "volume/Q_MI", "volume/Q_G")  # times: benchmarks/run.py


def unified_models(fold_dir: Path) -> dict[str, Path]:
    """θU of the run and of every plug-in head the fold has (name → model file)."""
    found = {"m2cofs": fold_dir / "m2cofs" / "unified.ckpt"}
    for d in sorted((fold_dir / "methods").glob("plugin_*")):
        if d.name != "plugin_swinunetr":  # the default head: the same model as m2cofs
            found[d.name] = d / "unified.ckpt"
    return {k: v for k, v in found.items() if v.exists()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", required=True, nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from m2cofs.evaluation import evaluate
    from m2cofs.inference import Predictor
    from m2cofs.io import atomic_write_json, atomic_write_text

    rows = []
    work = Path(tempfile.mkdtemp(prefix="m2cofs-trunk-"))
    try:
        for cmp_dir in map(Path, args.compare):
            folds = json.loads((cmp_dir / "folds.json").read_text())["folds"]
            for f, held in enumerate(folds):
                for name, model in unified_models(cmp_dir / f"fold{f}").items():
                    row = {"compare": cmp_dir.name, "fold": f, "model": name, "case": ",".join(held)}
                    for mode in MODES:
                        pred, ev = work / f"{cmp_dir.name}-{f}-{name}-{mode}", work / f"eval-{cmp_dir.name}-{f}-{name}-{mode}"
                        Predictor(model, trunk=mode, progress=False, log=None).predict_folder(
                            args.data, pred, ids=list(held), overwrite=True, preview=False)
                        evaluate(pred, args.data, ev, mode="volume", report=False, overwrite=True, progress=False,
                                 log=lambda m: None)
                        with open(ev / "metrics.csv") as fh:
                            metrics = next(csv.DictReader(fh))
                        row[mode] = {c: float(metrics[c]) for c in COLUMNS if c in metrics and metrics[c] != ""}
                    rows.append(row)
                    print(f"{cmp_dir.name} fold {f} {name}: " + "; ".join(
                        f"{c} {row['window'][c]:.3f} → {row['volume'][c]:.3f}" for c in COLUMNS if c in row["window"]),
                        flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    md = ["| run | fold | model | case | " + " | ".join(f"{c} window → volume" for c in COLUMNS) + " |",
          "| --- | --- | --- | --- |" + " --- |" * len(COLUMNS)]
    for r in rows:
        md.append(f"| {r['compare']} | {r['fold']} | {r['model']} | {r['case']} | " + " | ".join(
            f"{r['window'][c]:.3f} → {r['volume'][c]:.3f}" if c in r["window"] else "–" for c in COLUMNS) + " |")
    summary = {}
    md += ["", "| metric | mean window | mean volume | mean change | cases up / all |", "| --- | --- | --- | --- | --- |"]
    for c in COLUMNS:
        pairs = [(r["window"][c], r["volume"][c]) for r in rows if c in r["window"] and c in r["volume"]
                 and np.isfinite(r["window"][c]) and np.isfinite(r["volume"][c])]
        if not pairs:
            continue
        w, v = np.array(pairs).T
        summary[c] = {"window": float(w.mean()), "volume": float(v.mean()), "change": float((v - w).mean()),
                      "up": int((v > w).sum()), "n": len(pairs)}
        s = summary[c]
        md.append(f"| {c} | {s['window']:.3f} | {s['volume']:.3f} | {s['change']:+.3f} | {s['up']} / {s['n']} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "trunk_modes.md", "\n".join(md) + "\n")
    atomic_write_json(out / "trunk_modes.json", {"rows": rows, "summary": summary, "command": sys.argv})
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
