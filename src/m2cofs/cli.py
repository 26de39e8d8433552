"""The ``m2cofs`` command line.

Sub-commands live in :mod:`m2cofs.commands` (one module each, registered in ``COMMANDS``).
User errors (:class:`~m2cofs.errors.M2CofsError`) print one line and exit with status 2;
an interrupt exits with 130. Nothing else is caught, so real bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from m2cofs import __version__
from m2cofs.errors import M2CofsError

COMMANDS = ("synth", "data", "train", "predict", "evaluate", "demo", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2cofs",
        description="M²-CoFS: one unified model for 3D multi-modal MRI fusion and segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"m2cofs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"m2cofs.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"m2cofs.commands.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except M2CofsError as exc:
        print(f"m2cofs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("m2cofs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
