"""``m2cofs models``: the bundled models, what each expects and how well it was measured to do;
``m2cofs models --details NAME`` prints its model card. No torch import: it answers at once."""

from __future__ import annotations

import argparse

from m2cofs.errors import M2CofsError


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the bundled models (or print one's model card)",
                       description="Lists the models shipped inside m2cofs: modalities, grid, output label "
                                   "convention, training data and measured quality. `m2cofs predict` uses the "
                                   "default one when --model is left out.")
    p.add_argument("--details", metavar="NAME", help="print the model card of NAME")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2cofs.bundled import get_model, list_models, render_card, summary_line

    if args.details:
        print(render_card(get_model(args.details)), end="")
        return 0
    models = list_models()
    if not models:
        raise M2CofsError("no bundled models are installed (the package's m2cofs/weights folder is empty)")
    print("\n\n".join(summary_line(m) for m in models))
    return 0
