"""The ``m2cofs`` command line.

Sub-commands live in :mod:`m2cofs.commands` (one module each, registered in ``COMMANDS``).
User errors (:class:`~m2cofs.errors.M2CofsError`) print one line and exit with status 2;
an interrupt exits with 130, SIGTERM with 143 (128 + 15). SIGTERM takes the same path as Ctrl-C
(it raises :class:`Terminated`, a ``KeyboardInterrupt``), so every ``finally`` and clean-up runs:
``predict`` removes its staging folder, ``train`` keeps its last checkpoint. Nothing else is
caught, so real bugs keep their traceback.

Start-up imports neither torch nor MONAI: the sub-command modules import them inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from m2cofs import __version__
from m2cofs.errors import M2CofsError

COMMANDS = ("synth", "data", "train", "predict", "evaluate", "demo", "compare", "models")


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that clean-up runs as it does for Ctrl-C."""


def _sigterm_handler(pid: int):
    def handler(signum, frame):
        if os.getpid() != pid:  # a forked worker inherited the handler: die as SIGTERM says
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut the clean-up short
        raise Terminated()

    return handler


_depth = 0  # main() calls in progress: demo and compare run other sub-commands through main()


def main(argv: list[str] | None = None) -> int:
    global _depth
    parser = build_parser()
    args = parser.parse_args(argv)
    outer = _depth == 0
    previous = None
    if outer and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    _depth += 1
    try:
        return int(args.func(args) or 0)
    except M2CofsError as exc:
        print(f"m2cofs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not outer:  # a step of demo / compare: the whole command stops, and cleans up, as one
            raise
        if isinstance(sys.exc_info()[1], Terminated):
            print("m2cofs: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("m2cofs: interrupted", file=sys.stderr)
        return 130
    finally:
        _depth -= 1
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
