"""``m2cofs train --data DATA --out RUN``: the three-stage M²-CoFS training."""

from __future__ import annotations

import argparse

from m2cofs.commands._common import add_data_options, modalities_arg, resample_arg
from m2cofs.config import PRESETS


def _ids(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train M²-CoFS (stages 0-3) and write RUN/unified.ckpt",
        description="Stage 0 autoencoders, Stage I independent fusion and segmentation, Stage II cross-task "
                    "weight adaptation, Stage III weight unification. Writes RUN/unified.ckpt (one weight, "
                    "both tasks), the two Stage I specialists, logs and loss curves.")
    p.add_argument("--data", required=True, help="training data (folder, datalist JSON or dataset.json)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder")
    p.add_argument("--preset", default="lite", choices=PRESETS, help="sizes and schedule (default lite: CPU-sized)")
    p.add_argument("--config", default=None, metavar="YAML", help="YAML file merged over the preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.epochs.stage1=50 (repeatable)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="train for this many minutes (wall clock) in all, split over the stages in the preset's "
                        "proportions (printed at the start); the epochs become a cap")
    p.add_argument("--stages", default="all", help="'all' or a subset such as 0,1 or 3 (default all)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run where it stopped")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in RUN and start over")
    p.add_argument("--include", default=None, metavar="IDS", help="train only on these case ids (comma-separated)")
    p.add_argument("--exclude", default=None, metavar="IDS", help="leave these case ids out (e.g. a held-back test case)")
    p.add_argument("--cache-dir", default=None, help="preprocessing cache (default RUN/cache)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: CUDA when available")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_options(p, "comma-separated input modalities (default: t1ce,flair for BraTS, t1,flair for MRBrainS)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.time_budget is not None and args.time_budget <= 0:
        from m2cofs.errors import M2CofsError

        raise M2CofsError(f"--time-budget must be a positive number of minutes, not {args.time_budget:g}")
    from m2cofs.training.pipeline import TrainOptions, parse_stages, train

    opts = TrainOptions(
        data=args.data, out=args.out, preset=args.preset, config_file=args.config, overrides=args.set,
        stages=parse_stages(args.stages), resume=args.resume, overwrite=args.overwrite, format=args.format,
        labels=args.labels, modalities=modalities_arg(args.modalities), resample_to=resample_arg(args.resample_to),
        include=_ids(args.include), exclude=_ids(args.exclude), cache_dir=args.cache_dir,
        progress=not args.no_progress, device=args.device, time_budget=args.time_budget,
    )
    train(opts)
    return 0
