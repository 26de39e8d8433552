"""A CV arm's finished folds beside other runs on the same held-out cases, as markdown tables.

Reads ``results/NAME/results.json`` of each run and ``results/ARM/logs/fold*/`` (the folds the arm
has finished). Prints, for those cases, each run's θU / θS / SegResNet-16 Dice per region, θU's
gap to SegResNet-16 and the retention "both" of θU and mean fusion; then the arm's steps and
seconds per training loop. Usage (from the repository root):

    python results/cv19/arms.py cv19_fairpeer --against cv19 cv19_dice16h cv19_seg8
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1]
LOOPS = ("stage0_autoencoder", "stage1_fusion", "stage1_segmentation", "stage2_seg_to_fusion",
         "stage2_fusion_to_seg", "stage3_unification", "peer_segresnet")


def finished_folds(arm: str) -> list[int]:
    return [k for k in range(5) if (RESULTS / arm / "logs" / f"fold{k}" / "m2cofs_summary.json").exists()]


def mean(per_case: dict, method: str, key: str, ids: list[str]) -> float:
    return float(np.nanmean([per_case[method][i].get(key, np.nan) for i in ids]))


def row(name: str, per_case: dict, ids: list[str]) -> str:
    m = lambda meth, k: mean(per_case, meth, k, ids)  # noqa: E731
    u = [m("m2cofs", f"Dice/{r}") for r in ("WT", "TC", "ET")]
    p = [m("segresnet", f"Dice/{r}") for r in ("WT", "TC", "ET")]
    gaps = " / ".join(f"{a - b:+.3f}" for a, b in zip(u, p))
    return (f"| {name} | {' / '.join(f'{x:.3f}' for x in u)} | {m('seg_specialist', 'Dice/WT'):.3f} | "
            f"{' / '.join(f'{x:.3f}' for x in p)} | {gaps} | {m('m2cofs', 'retention/both'):.3f} | "
            f"{m('mean', 'retention/both'):.3f} |")


def last_row(path: Path) -> str:
    with open(path) as f:
        r = list(csv.DictReader(f))[-1]
    return f"{r['step']} / {float(r['seconds']):.0f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arm")
    ap.add_argument("--against", nargs="*", default=["cv19"])
    a = ap.parse_args(argv)
    runs = {n: json.loads((RESULTS / n / "results.json").read_text()) for n in [*a.against, a.arm]}
    folds = runs[a.arm]["folds"]
    ids = [i for k in finished_folds(a.arm) for i in folds[k]]
    print(f"{len(ids)} held-out cases (folds {', '.join(map(str, finished_folds(a.arm)))})\n")
    print("| run | θU WT / TC / ET | θS WT | SegResNet-16 WT / TC / ET | θU − SegResNet WT / TC / ET | θU retention both | mean fusion both |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, res in runs.items():
        if all(i in res["per_case"].get("m2cofs", {}) for i in ids):
            print(row(name, res["per_case"], ids))
        else:
            print(f"| {name} | (not all of these cases) | | | | | |")
    print("\n| fold | " + " | ".join(LOOPS) + " |")
    print("| --- " * (len(LOOPS) + 1) + "|")
    for k in finished_folds(a.arm):
        logs = RESULTS / a.arm / "logs" / f"fold{k}"
        print(f"| {k} | " + " | ".join(last_row(logs / f"{s}.csv") for s in LOOPS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
