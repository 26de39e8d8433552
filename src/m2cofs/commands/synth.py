"""``m2cofs synth OUT``: write synthetic multi-modal brain phantoms in the BraTS-2021 layout."""

from __future__ import annotations

import argparse

from m2cofs.commands._common import modalities_arg
from m2cofs.data.labels import CONVENTIONS


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic multi-modal brain phantoms",
                       description="Write N brain-like multi-modal MRI phantoms with tumour labels in the "
                                   "BraTS-2021 layout OUT/<id>/<id>_<modality>.nii.gz.")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--cases", type=int, default=4, help="number of cases (default 4)")
    p.add_argument("--size", type=int, default=64, help="grid edge in voxels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--modalities", default="t1,t1ce,t2,flair", help="comma-separated (default t1,t1ce,t2,flair)")
    p.add_argument("--labels", default="brats2017", choices=[c for c in CONVENTIONS],
                   help="label convention of the seg files (default brats2017)")
    p.add_argument("--overwrite", action="store_true", help="replace existing cases in OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2cofs.synthetic import write_synthetic_dataset

    mods = modalities_arg(args.modalities)
    folders = write_synthetic_dataset(args.out, cases=args.cases, size=args.size, seed=args.seed,
                                      modalities=mods or ("t1", "t1ce", "t2", "flair"),
                                      convention=args.labels, progress=True, overwrite=args.overwrite)
    print(f"wrote {len(folders)} synthetic case(s) to {args.out}")
    return 0
