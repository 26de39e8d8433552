"""``m2cofs compare --data DATA --out DIR``: M²-CoFS against baselines and ablations, cross-validated."""

from __future__ import annotations

import argparse

from m2cofs.commands._common import modalities_arg
from m2cofs.config import PRESETS, SEG_LOSSES
from m2cofs.data.labels import CONVENTION_CHOICES
from m2cofs.data.layouts import FORMATS


def add_parser(sub) -> None:
    from m2cofs.compare.methods import GROUPS  # torch-free

    p = sub.add_parser(
        "compare", help="M²-CoFS vs baselines and ablations, cross-validated, with tables and a report",
        description="Trains what each method needs (reusing the fold's Stage I/II results), predicts the held-out "
                    "cases, evaluates them, and writes table_fusion.md/.csv, table_segmentation.md/.csv, "
                    "table_ablation.md, weight_space.png and index.html. Interrupted runs continue where they stopped. "
                    "Method groups: " + "; ".join(f"{g}: {', '.join(ms)}" for g, ms in GROUPS.items()) + ".")
    p.add_argument("--data", required=True, help="dataset (folder, datalist JSON or dataset.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (not inside DATA)")
    p.add_argument("--methods", default=None, help="comma-separated methods or groups, 'default' or 'all' "
                                                   "(default: every group except plugin)")
    p.add_argument("--preset", default="lite", choices=PRESETS)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training overrides (repeatable)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds over cases (default 5)")
    p.add_argument("--fold", action="append", default=None, metavar="I",
                   help="run only fold I (repeatable or comma-separated, numbered from 0); the tables use every "
                        "fold finished so far, so folds can run on several machines into one folder")
    p.add_argument("--test-ids", default=None, metavar="IDS",
                   help="one split instead of --folds: hold out these cases (comma-separated ids), train on the rest; "
                        "e.g. the cases of one source, for a leave-one-source-out check")
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="score this model (a model file, run folder or bundled name) as the M²-CoFS row instead of "
                        "training one per fold, e.g. a bundled model on its held-out case; other methods: classic "
                        "rules, copy-one-source and peers (give the model's training time with --peer-seconds)")
    p.add_argument("--peer-seconds", type=float, default=None, metavar="S",
                   help="train the segmentation-only peers (segresnet, unet) for S seconds instead of the CPU time "
                        "of the fold's M²-CoFS run")
    p.add_argument("--peer-loss", default=None, choices=SEG_LOSSES,
                   help="train the peers on this segmentation loss instead of the run's train.seg_loss (e.g. each "
                        "method on the loss that suits it best at a short budget)")
    p.add_argument("--mode", default="volume", choices=("volume", "slice"), help="fusion-metric mode (default volume)")
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--labels", default="auto", choices=CONVENTION_CHOICES)
    p.add_argument("--modalities", default=None, help="input modalities (default: the method's default pair)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2cofs.compare import CompareOptions, compare, parse_methods

    opts = CompareOptions(data=args.data, out=args.out, methods=parse_methods(args.methods), preset=args.preset,
                          overrides=args.set, folds=args.folds, format=args.format, labels=args.labels,
                          modalities=modalities_arg(args.modalities), mode=args.mode, progress=not args.no_progress,
                          run_folds=_fold_list(args.fold), peer_seconds=args.peer_seconds, peer_loss=args.peer_loss,
                          model=args.model,
                          test_ids=[t.strip() for t in args.test_ids.split(",") if t.strip()] if args.test_ids else None)
    compare(opts)
    return 0


def _fold_list(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    from m2cofs.errors import M2CofsError

    try:
        return sorted({int(v) for text in values for v in text.split(",") if v.strip()})
    except ValueError:
        raise M2CofsError(f"--fold takes fold numbers such as 0 or 0,2, not {' '.join(values)!r}") from None

