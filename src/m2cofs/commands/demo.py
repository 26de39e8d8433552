"""``m2cofs demo --out DIR``: the main job end to end on embedded synthetic data.

synth (phantoms) → data check → train (lite, all stages, a short schedule) on all but the last
cases → predict the held-out cases → evaluate → ``DIR/report/report.html``. A few minutes on
two CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from m2cofs.errors import M2CofsError

# A schedule that shows every stage working in a few CPU minutes (not a good model: raise it).
DEMO_SETTINGS = [
    "data.spacing=null",  # phantoms are small already
    "data.samples_per_case=4",
    "train.epochs.stage0=1",
    "train.epochs.stage1=6",
    "train.epochs.stage2=2",
    "train.epochs.stage3=3",
    "train.checkpoint_every=25",
]
PARTS = ("data", "run", "pred", "report")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="synthetic data → train → predict → evaluate, in a few CPU minutes",
                       description="Runs the whole M²-CoFS pipeline on synthetic multi-modal brain phantoms and "
                                   "ends with an HTML report.")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--cases", type=int, default=6, help="synthetic cases (default 6; the last 2 are held out)")
    p.add_argument("--holdout", type=int, default=2, help="cases held out for prediction (default 2)")
    p.add_argument("--size", type=int, default=64, help="phantom grid edge (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra training overrides")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in OUT")
    p.set_defaults(func=run)


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.time()


def run(args: argparse.Namespace) -> int:
    from m2cofs.cli import main as cli

    out = Path(args.out)
    if args.cases - args.holdout < 1 or args.holdout < 1:
        raise M2CofsError("--cases must exceed --holdout, and --holdout must be at least 1")
    existing = [p for p in PARTS if (out / p).exists()]
    if existing:
        if not args.overwrite:
            raise M2CofsError(f"already holds a demo ({', '.join(existing)}); pass --overwrite to replace it", out)
        for p in existing:
            shutil.rmtree(out / p)
    data, run_dir, pred, report = (out / p for p in PARTS)
    t_all = time.time()
    timings = {}

    t = _step(f"1/5 synth: {args.cases} phantoms of size {args.size}")
    code = cli(["synth", str(data), "--cases", str(args.cases), "--size", str(args.size), "--seed", str(args.seed)])
    timings["synth"] = time.time() - t
    if code:
        return code

    t = _step("2/5 data check")
    code = cli(["data", "check", str(data)])
    timings["data check"] = time.time() - t
    if code:
        return code

    ids = sorted(p.name for p in data.iterdir() if p.is_dir())
    held = ids[-args.holdout:]
    t = _step(f"3/5 train (lite, stages 0-3) on {len(ids) - len(held)} cases; held out: {', '.join(held)}")
    settings = [x for s in [*DEMO_SETTINGS, *args.set] for x in ("--set", s)]
    code = cli(["train", "--data", str(data), "--out", str(run_dir), "--preset", "lite", "--exclude", ",".join(held),
                *settings])
    timings["train"] = time.time() - t
    if code:
        return code

    t = _step("4/5 predict the held-out cases with the unified model")
    code = cli(["predict", "--model", str(run_dir / "unified.ckpt"), "--input", str(data), "--out", str(pred),
                "--ids", ",".join(held)])
    timings["predict"] = time.time() - t
    if code:
        return code

    t = _step("5/5 evaluate")
    code = cli(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(report), "--quiet"])
    timings["evaluate"] = time.time() - t
    if code:
        return code

    print("\n== done in {:.0f} s ({})".format(time.time() - t_all, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"unified model: {run_dir / 'unified.ckpt'}")
    print(f"predictions:   {pred}")
    print(f"report:        {(report / 'report.html').resolve()}")
    return 0
