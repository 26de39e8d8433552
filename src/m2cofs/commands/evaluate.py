"""``m2cofs evaluate --pred OUT --data DATA --out REPORT``: metrics.csv, summary.json, report.html."""

from __future__ import annotations

import argparse
import sys

from m2cofs.commands._common import add_data_options, modalities_arg, resample_arg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score predictions: fusion metrics, Dice / HD95, HTML report",
        description="Match the predictions in OUT (OUT/<id>/<id>_fused.nii.gz and/or <id>_seg.nii.gz, as written by "
                    "'m2cofs predict') to the cases of DATA by id; compute fusion metrics for every fused volume "
                    "(sources and fused volume scaled alike; inside the brain mask by default, over whole slices "
                    "with --mask none) and Dice / HD95 per region for "
                    "every segmentation with a ground truth; write REPORT/metrics.csv (one row per case), "
                    "REPORT/summary.json (mean ± std per metric) and REPORT/report.html (self-contained).",
    )
    p.add_argument("--pred", required=True, metavar="OUT", help="prediction folder written by 'm2cofs predict'")
    p.add_argument("--data", required=True, metavar="DATA",
                   help="dataset folder, case folder, datalist JSON or dataset.json with the sources and labels")
    p.add_argument("--out", required=True, metavar="REPORT", help="report folder (not inside DATA)")
    add_data_options(p, modalities_help="comma-separated source modalities for the fusion metrics (default: those "
                                        "recorded in OUT/predict.json, else all of the dataset's modalities)")
    p.add_argument("--mode", default="both", choices=("slice", "volume", "both"),
                   help="fusion metrics per axial slice (averaged), on the whole volume, or both (default both)")
    p.add_argument("--mask", default="brain", choices=("brain", "none"),
                   help="where the fusion metrics are computed. brain (default): inside the brain mask (the case's "
                        "_brainmask, else the non-background voxels), intensities scaled inside it; m2cofs's own "
                        "numbers, not comparable with the paper's. none: whole axial slices (slice mode) or the whole "
                        "volume, background included, intensities scaled over the whole volume: the convention of "
                        "the MATLAB scripts behind the paper's Table 1 (use with --mode slice to compare with it). "
                        "Numbers of the two settings are not comparable; summary.json and the report say which")
    p.add_argument("--metrics", default=None, metavar="LIST",
                   help="comma-separated subset of Q_MI,Q_TE,Q_NCIE,Q_G,MI,VIF,EN,SD,SF,AG,SSIM,PSNR,Q_CB,Q_CV,Dice,HD95 "
                        "(or paper, fusion, seg, all; default all)")
    p.add_argument("--brats-official", action="store_true",
                   help="also BraTS's official lesion-wise Dice and HD95 per region (LesionDice/<region>, "
                        "LesionHD95/<region>), computed by the challenge's brats-evaluation package; needs "
                        "pip install 'm2cofs[brats]'")
    p.add_argument("--no-report", action="store_true", help="write metrics.csv and summary.json only")
    p.add_argument("--max-previews", type=int, default=20, metavar="N",
                   help="case previews embedded in report.html (default 20): the N worst cases by mean Dice (cases "
                        "without a Dice after them, in the dataset's order)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="cases evaluated in parallel (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace metrics.csv / summary.json / report.html in REPORT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2cofs.evaluation import evaluate

    res = evaluate(
        args.pred, args.data, args.out,
        format=args.format, labels=args.labels,
        modalities=modalities_arg(args.modalities), resample_to=resample_arg(args.resample_to),
        mode=args.mode, metrics=args.metrics, mask=args.mask, report=not args.no_report, overwrite=args.overwrite,
        progress=not args.quiet, workers=args.workers, max_previews=args.max_previews,
        brats_official=args.brats_official,
        log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr)),
    )
    for n in res.notes:
        print(f"note: {n}", file=sys.stderr)
    from m2cofs.reporting.format import fmt_pm

    stats = res.summary["metrics"]
    if res.columns:
        width = max(len(c) for c in res.columns)
        for c in res.columns:
            s = stats[c]
            if s["mean"] is None:
                print(f"{c.ljust(width)}  n={s['n']}  (no finite value)")
            else:
                print(f"{c.ljust(width)}  {fmt_pm(s['mean'], s['std'])}  (n={s['n']})")
    else:
        print("no metric computed (no fused volume, and no segmentation with a ground truth)")
    print(f"wrote {', '.join(str(p) for p in res.written)}")
    return 0
