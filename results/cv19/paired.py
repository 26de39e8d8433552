"""Paired comparison of one method between two CV arms on the cases both hold out.

Reads ``results/ARM/results.json`` (``per_case``) of both arms; prints, per metric, the mean in
each arm, the mean paired difference and the two-sided Wilcoxon signed-rank p (scipy) over the
cases both have a value for. Usage (from the repository root):

    python results/cv19/paired.py cv19_segpath --against cv19_fastssim [--method m2cofs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

RESULTS = Path(__file__).resolve().parents[1]
METRICS = ("retention/both", "retention/t1ce", "retention/flair", "volume/Q_MI", "volume/Q_G", "volume/VIF",
           "Dice/WT", "Dice/TC", "Dice/ET", "HD95/WT")


def per_case(arm: str, method: str) -> dict[str, dict]:
    return json.loads((RESULTS / arm / "results.json").read_text())["per_case"][method]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arm")
    ap.add_argument("--against", required=True)
    ap.add_argument("--method", default="m2cofs")
    a = ap.parse_args(argv)
    x, y = per_case(a.arm, a.method), per_case(a.against, a.method)
    ids = sorted(set(x) & set(y))
    print(f"{a.method}: {a.arm} against {a.against}, {len(ids)} cases in both\n")
    print(f"| metric | n | {a.arm} | {a.against} | mean difference | Wilcoxon p |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k in METRICS:
        pairs = [(x[i].get(k), y[i].get(k)) for i in ids]
        pairs = [(p, q) for p, q in pairs if p is not None and q is not None and np.isfinite(p) and np.isfinite(q)]
        if not pairs:
            continue
        u, v = np.array(pairs, dtype=float).T
        d = u - v
        p = float(wilcoxon(u, v).pvalue) if np.any(d != 0) else 1.0
        print(f"| {k} | {len(d)} | {u.mean():.3f} | {v.mean():.3f} | {d.mean():+.3f} | {p:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
