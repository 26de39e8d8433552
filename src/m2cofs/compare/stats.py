"""The numbers of ``m2cofs compare``: per-case metrics read back, mean ± std over the held-out
cases, and a paired test of every method against M²-CoFS."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np


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


def aggregate(per_method: dict[str, dict[str, dict[str, float]]], mode: str) -> dict:
    """Mean ± std over all held-out cases, and the paired tests against M²-CoFS."""
    from m2cofs.metrics.registry import PAPER_METRICS, higher_is_better

    fusion_cols = [f"{mode}/{m}" for m in PAPER_METRICS]
    from m2cofs.metrics.retention import retention_columns

    seg_cols = sorted({c for rows in per_method.values() for r in rows.values() for c in r
                       if c.startswith(("Dice/", "HD95/"))}, key=lambda c: (c.split("/")[0] != "Dice", c))
    # lesion contrast retention (ours, not the paper's): every method with a fused volume and a label
    ret_cols = retention_columns({c for rows in per_method.values() for r in rows.values() for c in r},
                                 ("t1ce", "flair", "t2"))
    stats: dict = {"fusion_columns": fusion_cols, "seg_columns": seg_cols, "retention_columns": ret_cols,
                   "methods": {}}
    ref = per_method.get("m2cofs", {})
    for method, rows in per_method.items():
        entry: dict = {}
        for col in fusion_cols + seg_cols + ret_cols:
            vals = [r[col] for r in rows.values() if col in r and math.isfinite(r[col])]
            if not vals:
                continue
            e = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None, "n": len(vals)}
            if method != "m2cofs":
                ids = [i for i in rows if i in ref and col in rows[i] and col in ref[i]]
                e["vs_m2cofs"] = paired_test([ref[i][col] for i in ids], [rows[i][col] for i in ids])
            entry[col] = e
        stats["methods"][method] = entry
    stats["higher_is_better"] = {c: higher_is_better(c) is not False for c in fusion_cols + seg_cols + ret_cols}
    return stats
