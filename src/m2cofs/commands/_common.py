"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse
import importlib

from m2cofs.data.labels import CONVENTION_CHOICES
from m2cofs.data.layouts import FORMATS
from m2cofs.data.modalities import normalize_modality, parse_modality_list
from m2cofs.errors import M2CofsError


def add_data_options(p: argparse.ArgumentParser, modalities_help: str | None = None) -> None:
    """``--format``, ``--labels``, ``--modalities`` and ``--resample-to``."""
    p.add_argument("--format", default="auto", choices=FORMATS,
                   help="dataset layout (default: auto-detect)")
    p.add_argument("--labels", default="auto", choices=CONVENTION_CHOICES,
                   help="label convention (default: infer from naming and label values)")
    p.add_argument("--modalities", default=None, metavar="LIST",
                   help=modalities_help or "comma-separated modalities to use, in channel order (default: all found)")
    p.add_argument("--resample-to", default=None, metavar="MODALITY",
                   help="resample every file of a case onto this modality's grid (default: refuse mismatched grids)")


def modalities_arg(text: str | None) -> list[str] | None:
    try:
        return parse_modality_list(text)
    except ValueError as exc:
        raise M2CofsError(f"--modalities: {exc}") from None


def resample_arg(text: str | None) -> str | None:
    if text is None:
        return None
    canon = normalize_modality(text)
    if canon is None:
        raise M2CofsError(f"--resample-to: unknown modality {text!r}")
    return canon


def run_command(name: str, argv: list[str]) -> int:
    """Run the sub-command ``name`` from inside another command (``demo``), as ``m2cofs NAME
    ARGV`` would: its own parser fills in the defaults. Errors and interrupts reach the caller,
    so that the outer command reports them once and cleans up as one; returns the exit status."""
    parser = argparse.ArgumentParser(prog="m2cofs")
    importlib.import_module(f"m2cofs.commands.{name}").add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args([name, *argv])
    return int(args.func(args) or 0)
