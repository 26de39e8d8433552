#!/usr/bin/env python
"""Post-processing chosen as nnU-Net chooses it: on other cases' held-out predictions, never on
the case it is applied to.

    python results/postprocess_choice.py --postprocess results/cv5/postprocess.json --out results/cv5

Reads the per-case numbers of ``postprocess_cv.py`` (each fold's held-out case under the three
post-processings). For each method and each held-out case, the setting with the highest mean
Dice (ET, TC, WT) over the *other* folds' held-out cases is chosen and applied to this case;
ties go to the simpler setting (``none`` before ``small_only`` before ``default``). The case's
own label never enters its choice. The models of the other folds were trained with this case
among their training cases, so the choice is not independent of it in every way, but no
prediction of it is scored to make the choice. Writes ``postprocess_choice.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from m2cofs.io import atomic_write_json, atomic_write_text

SIMPLEST_FIRST = ("none", "small_only", "default")
DICE = ("Dice/ET", "Dice/TC", "Dice/WT")
COLUMNS = ("Dice/ET", "Dice/TC", "Dice/WT", "HD95/WT")


def mean_dice(rows: dict[str, dict[str, float]], cases: list[str]) -> float:
    return float(np.mean([rows[c][k] for c in cases for k in DICE]))


def choose(per_setting: dict[str, dict[str, dict[str, float]]]) -> dict[str, str]:
    """Held-out case → the setting chosen on the other cases."""
    cases = sorted(next(iter(per_setting.values())))
    chosen = {}
    for case in cases:
        others = [c for c in cases if c != case]
        scores = {s: mean_dice(per_setting[s], others) for s in SIMPLEST_FIRST if s in per_setting}
        best = max(scores.values())
        chosen[case] = next(s for s in SIMPLEST_FIRST if s in scores and scores[s] >= best - 1e-12)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postprocess", required=True, type=Path, help="postprocess.json of postprocess_cv.py")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    per_case = json.loads(args.postprocess.read_text())["per_case"]
    result, lines = {}, ["| method | post-processing | " + " | ".join(COLUMNS) + " | chosen per held-out case |",
                         "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " | --- |"]
    for method, per_setting in per_case.items():
        chosen = choose(per_setting)
        rows = {"chosen": {c: per_setting[s][c] for c, s in chosen.items()}}
        rows.update({s: per_setting[s] for s in ("default", "none") if s in per_setting})
        result[method] = {"chosen": chosen, "per_case": rows["chosen"]}
        for name, r in rows.items():
            cells = []
            for k in COLUMNS:
                v = np.array([r[c][k] for c in sorted(r)])
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if k.startswith("Dice") else f"{v.mean():.1f}")
            note = ", ".join(f"{c}: {s}" for c, s in chosen.items()) if name == "chosen" else ""
            lines.append(f"| {method} | {name} | " + " | ".join(cells) + f" | {note} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "postprocess_choice.md", "\n".join(lines) + "\n")
    atomic_write_json(args.out / "postprocess_choice.json", result)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
