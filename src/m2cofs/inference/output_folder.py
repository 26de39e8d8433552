"""The prediction folder: what may be written where, and the staging folder.

Every case is written into a hidden staging folder inside OUT (``.predict-partial-<pid>-…``)
and moved into place only once all cases have succeeded, so a failing or interrupted run leaves
no partial output behind; a killed run's staging folder is removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from m2cofs.errors import M2CofsError

STAGING_PREFIX = ".predict-partial-"


def check_prediction_folder(out: Path, data: Path) -> None:
    """Refuse an output folder inside the input data, or a file where the folder should be."""
    from m2cofs.training.pipeline import check_output_folder

    check_output_folder(out, data)
    if out.exists() and not out.is_dir():
        raise M2CofsError("exists and is not a folder", out)


def case_files(spec) -> list[Path]:
    """The files of a found case (:class:`~m2cofs.data.layouts.CaseSpec`): images, label, mask."""
    return [r.path for r in spec.images.values()] + [p for p in (spec.label, spec.mask) if p is not None]


def make_staging(out: Path) -> Path:
    """A new staging folder of this process inside ``out``."""
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))


def move_into_place(staging: Path, cid: str, out: Path) -> None:
    """Move ``staging/cid`` to ``out/cid`` (an old ``out/cid``, allowed by --overwrite, goes)."""
    new, target = staging / cid, out / cid
    if not new.exists():
        return
    if target.exists() or target.is_symlink():
        old = staging / f".old-{cid}"
        os.replace(target, old)
    os.replace(new, target)


def remove_stale_staging(out: Path) -> None:
    """Staging folders of killed predict runs (their process is gone) are removed."""
    for d in out.glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(d.name[len(STAGING_PREFIX):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue
