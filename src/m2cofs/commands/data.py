"""``m2cofs data check DATA``: find the cases, load each, print a table, fail on unusable ones."""

from __future__ import annotations

import argparse
import sys

from m2cofs.commands._common import add_data_options, modalities_arg, resample_arg


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    c = dsub.add_parser("check", help="find and check every case of a dataset",
                        description="Find the cases in DATA, load and check each, and print one row per case. "
                                    "Exits 1 if any case is unusable.")
    c.add_argument("data", metavar="DATA", help="dataset folder, case folder, datalist JSON or dataset.json")
    add_data_options(c)
    c.set_defaults(func=run_check)


def _fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()


def run_check(args: argparse.Namespace) -> int:
    from m2cofs.data.check import check_dataset

    spec, convention, reason, rows = check_dataset(
        args.data, args.format, args.labels, modalities_arg(args.modalities), resample_arg(args.resample_to)
    )
    labels = f"labels {convention.name} ({reason})" if len({r.convention for r in rows}) <= 1 else f"labels {reason}"
    print(f"{spec.root}: {len(rows)} case(s), layout {spec.format}, {labels}")
    header = ["id", "modalities", "shape", "spacing (mm)", "orient", "convention", "labels", "regions (voxels)",
              "problems"]
    table = []
    for r in rows:
        table.append([
            r.id,
            ",".join(r.modalities),
            "x".join(map(str, r.shape)) if r.shape else "-",
            "x".join(f"{s:g}" for s in r.spacing) if r.spacing else "-",
            r.orientation or "-",
            r.convention or "-",
            ",".join(map(str, r.label_values)) if r.label_values is not None else "-",
            " ".join(f"{k}={v}" for k, v in r.regions.items()) if r.regions else "-",
            "; ".join(r.problems) if r.problems else "ok",
        ])
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    widths[-1] = 0
    print(_fmt_row(header, widths))
    for t in table:
        print(_fmt_row(t, widths))
    for r in rows:
        for n in r.notes:
            print(f"note: {r.id}: {n}")
    for n in spec.notes:
        print(f"note: {n}")
    bad = [r for r in rows if not r.usable]
    if bad:
        print(f"m2cofs: error: {len(bad)} of {len(rows)} case(s) unusable: {', '.join(r.id for r in bad)}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} case(s) usable")
    return 0
