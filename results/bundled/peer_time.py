"""The same-time peer's budget when it trains on another machine than the model did.

θU's training seconds (the stages' clocks of the bundled run) scaled by how much faster or slower
this machine runs θU's own Stage-I segmentation loop: the seconds of its first N steps in the
bundled run's log against the same loop rerun here for a few minutes (same data, same settings),
N = the steps of the rerun. Stage 0 is reported beside it as a check. Usage:

    m2cofs train --data ../shared/data --modalities t1ce,flair --exclude Brats18_CBICA_ABM_1 \\
        --out runs/speed_u --stages 0,1 --time-budget 5 --no-progress
    python results/bundled/peer_time.py --old results/bundled/compare/logs --new runs/speed_u/logs \\
        --out results/bundled/compare_peer/peer_time.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

LOOPS = ("stage1_segmentation", "stage0_autoencoder")  # the first decides; the second is a check


def seconds_at(log: Path) -> dict[int, float]:
    with open(log, newline="") as f:
        return {int(r["step"]): float(r["seconds"]) for r in csv.DictReader(f)}


def loop_ratio(old: Path, new: Path, loop: str) -> dict:
    """Seconds per step of ``loop`` here over there, on the same first steps."""
    there, here = seconds_at(old / f"{loop}.csv"), seconds_at(new / f"{loop}.csv")
    n = max(s for s in here if s in there)
    return {"steps": n, "seconds_there": there[n], "seconds_here": here[n], "ratio": here[n] / there[n]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, type=Path, help="the bundled run's logs/ (with m2cofs_summary.json)")
    ap.add_argument("--new", required=True, type=Path, help="logs/ of the same loops rerun on this machine")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    total = sum(json.loads((a.old / "m2cofs_summary.json").read_text())["stage_seconds"].values())
    loops = {loop: loop_ratio(a.old, a.new, loop) for loop in LOOPS}
    ratio = loops[LOOPS[0]]["ratio"]
    result = {"model_seconds_there": round(total, 1), "ratio": round(ratio, 4),
              "peer_seconds_here": round(total * ratio, 1), "loops": loops}
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
