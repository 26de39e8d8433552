"""θU's fused volume guided by its own segmentation (``m2cofs predict --fusion-guide TC``), measured
on the held-out cases of ``results/cv19_fairpeer`` with that run's trained θU of every fold (no
retraining), against the same θU without the guide and the classic rules of that run.

Usage: python results/cv19_guide/measure.py RUN DATA OUT [--guide TC] [--rule add|max|enhance] [--gain G] [--dest D]
  RUN   the cv19_fairpeer compare folder (runs/cv19_fairpeer: its folds.json, fold*/m2cofs/unified.ckpt,
        fold*/eval/<method>/metrics.csv)
  DATA  ../shared/data
  OUT   where the guided predictions and evaluations go (OUT/fold*/pred, OUT/fold*/eval); a fold whose
        metrics.csv exists is not redone
Writes table.md and per_case.csv to D (default: RULE/ beside this script). RUN may be any `m2cofs compare`
folder with the same methods (results/cv19_guide2 also reads cv19_seg8ce and loso_seg8ce).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from m2cofs.compare.stats import paired_test, read_metrics

HERE = Path(__file__).resolve().parent
OTHERS = {"m2cofs": "θU, no guide", "fusion_specialist": "θF (Stage I fusion)", "mean": "mean",
          "max": "maximum", "pca": "PCA-weighted", "laplacian": "Laplacian pyramid", "copy1": "copy T1ce",
          "copy2": "copy FLAIR"}
COLS = ["retention/t1ce", "retention/flair", "retention/both", "volume/Q_MI", "volume/Q_TE", "volume/Q_NCIE",
        "volume/Q_G", "volume/MI", "volume/VIF"]
SAME = ["Dice/ET", "Dice/TC", "Dice/WT"]


def run_fold(run: Path, data: Path, out: Path, fold: int, ids: list[str], guide: str, rule: str, gain: float) -> Path:
    pred, ev = out / f"fold{fold}" / "pred", out / f"fold{fold}" / "eval"
    if (ev / "metrics.csv").exists():
        return ev / "metrics.csv"
    py = [sys.executable, "-m", "m2cofs"]
    subprocess.run([*py, "predict", "--model", str(run / f"fold{fold}" / "m2cofs" / "unified.ckpt"), "--input", str(data),
                    "--ids", ",".join(ids), "--out", str(pred), "--fusion-guide", guide, "--fusion-guide-rule", rule,
                    "--fusion-guide-gain", str(gain),
                    "--no-progress", "--no-preview",
                    "--overwrite"], check=True)
    from m2cofs.evaluation import evaluate  # as m2cofs compare evaluates every method

    from m2cofs.data.conventions import resolve_convention
    from m2cofs.data.layouts import discover

    conv, _ = resolve_convention(discover(data, "auto"), "auto")  # the training convention, as compare passes it
    evaluate(pred, data, ev, labels=conv.name, modalities=["t1ce", "flair"], mode="volume", metrics="seg,paper",
             report=False, overwrite=True, progress=False, log=lambda m: None)
    return ev / "metrics.csv"


def fmt(v):
    v = [x for x in v if x is not None and np.isfinite(x)]
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else "–"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--guide", default="TC")
    ap.add_argument("--rule", default="add", choices=("add", "max", "enhance"))
    ap.add_argument("--gain", type=float, default=1.0)
    ap.add_argument("--dest", type=Path, default=None)
    a = ap.parse_args()
    folds = json.loads((a.run / "folds.json").read_text())["folds"]
    guided: dict[str, dict[str, float]] = {}
    for i, ids in enumerate(folds):
        guided.update(read_metrics(run_fold(a.run, a.data, a.out, i, ids, a.guide, a.rule, a.gain)))
        print(f"fold {i}: {len(ids)} case(s)", flush=True)
    others = {m: {} for m in OTHERS}
    for i in range(len(folds)):
        for m in OTHERS:
            others[m].update(read_metrics(a.run / f"fold{i}" / "eval" / m / "metrics.csv"))
    cases = sorted(guided)
    name = f"θU, guide {a.guide} ({a.rule}" + (f", gain {a.gain:g})" if a.gain != 1 else ")")
    dest = a.dest or HERE / a.rule
    dest.mkdir(parents=True, exist_ok=True)
    rows = {name: guided, **{OTHERS[m]: others[m] for m in OTHERS}}
    base, mean = others["m2cofs"], others["mean"]
    lines = [f"{len(cases)} held-out cases ({len(folds)} fold(s) of {a.run.name}); mean ± std; p: paired Wilcoxon of "
             f"the guided θU against the row (retention 'both', Q_MI, Q_G, VIF)", "",
             "| volume | " + " | ".join(c.split("/")[1] for c in COLS) + " | p both | p Q_MI | p Q_G | p VIF |",
             "| --- " * (len(COLS) + 5) + "|"]
    for label, per in rows.items():
        cells = [fmt([per[c].get(k) for c in cases]) for k in COLS]
        ps = []
        for k in ("retention/both", "volume/Q_MI", "volume/Q_G", "volume/VIF"):
            if per is guided:
                ps.append("")
                continue
            t = paired_test([guided[c][k] for c in cases], [per[c][k] for c in cases])
            ps.append("–" if t["wilcoxon_p"] is None else f"{t['wilcoxon_p']:.3g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ps) + " |")
    both = [guided[c]["retention/both"] for c in cases]
    lines += ["", f"Guided θU: retention 'both' below 0.5 on {sum(b < 0.5 for b in both)} of {len(both)} cases "
              f"(without the guide: {sum(base[c]['retention/both'] < 0.5 for c in cases)}); lowest "
              f"{min(both):.2f}. Above mean fusion on 'both' in "
              f"{sum(guided[c]['retention/both'] > mean[c]['retention/both'] for c in cases)} of {len(cases)} cases.",
              "Segmentation is the same pass's: Dice "
              + ", ".join(f"{k.split('/')[1]} {np.mean([guided[c][k] for c in cases]):.3f} (no guide "
                          f"{np.mean([base[c][k] for c in cases]):.3f})" for k in SAME) + "."]
    (dest / "table.md").write_text("\n".join(lines) + "\n")
    with open(dest / "per_case.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "volume", *COLS])
        for label, per in rows.items():
            for c in cases:
                w.writerow([c, label, *[per[c].get(k) for k in COLS]])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
