"""The prediction folder: what may be written where, the staging folder, and sharing OUT.

Every case is written into a hidden staging folder inside OUT (``.predict-partial-<pid>-…``)
and moved into place only once all cases have succeeded, so a failing or interrupted run leaves
no partial output behind. Several runs may share OUT:

* each run owns only its staging folder (held with an ``flock`` for its lifetime) and the files
  it moves into place: a failing run removes its staging folder and nothing else (OUT itself
  only where it created it and it is empty again);
* moving into place and ``predict.json`` are done under an exclusive lock on OUT, where the
  existing outputs are checked again: a case another run wrote meanwhile is not replaced without
  ``--overwrite``; ``predict.json`` keeps the cases of earlier runs (each case records its
  model and label convention);
* in a case folder only m2cofs's own files (``<id>_fused.nii.gz``, ``<id>_seg.nii.gz``,
  ``<id>_preview.png``) are replaced; anything else a user keeps there stays;
* a staging folder whose run is gone (killed: no lock held on it) is removed by the next run,
  under the lock; a staging folder of a live run is never touched (a reused pid does not fool it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from m2cofs.errors import M2CofsError

STAGING_PREFIX = ".predict-partial-"
OUTPUT_SUFFIXES = ("_fused.nii.gz", "_seg.nii.gz", "_preview.png")  # OUT/<id>/<id><suffix>: ours
RECORD = "predict.json"
PER_CASE = ("label_convention", "model_sha256", "model", "modalities")  # copied into each case's record


def check_prediction_folder(out: Path, data: Path) -> None:
    """Refuse an output folder inside the input data, a file where the folder should be, or a
    symbolic link to nowhere."""
    from m2cofs.training.pipeline import check_output_folder

    if out.is_symlink() and not out.exists():
        raise M2CofsError(f"is a symbolic link to {os.readlink(out)}, which does not exist", out)
    check_output_folder(out, data)
    if out.exists() and not out.is_dir():
        raise M2CofsError("exists and is not a folder", out)


def check_case_ids(ids, where) -> None:
    """A case id that would collide with ``predict.json`` or a hidden (staging) name."""
    for cid in ids:
        if cid == RECORD or cid.startswith("."):
            raise M2CofsError(f"case id {cid!r} cannot be written to the output folder (it would collide with "
                              f"{RECORD if cid == RECORD else 'a hidden file'}); rename the case", where(cid))


def case_files(spec) -> list[Path]:
    """The files of a found case (:class:`~m2cofs.data.layouts.CaseSpec`): images, label, mask."""
    return [r.path for r in spec.images.values()] + [p for p in (spec.label, spec.mask) if p is not None]


def own_files(folder: Path, cid: str) -> list[Path]:
    """The m2cofs outputs present in ``folder`` (a case folder of OUT)."""
    return [folder / f"{cid}{s}" for s in OUTPUT_SUFFIXES if (folder / f"{cid}{s}").exists()]


def existing_outputs(out: Path, ids) -> list[str]:
    """The case ids of ``ids`` with outputs in ``out`` (a case folder holding m2cofs's files)."""
    return [cid for cid in ids if (out / cid).is_dir() and own_files(out / cid, cid)
            or (out / cid).exists() and not (out / cid).is_dir()]


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """An exclusive lock on OUT (``flock`` on the folder itself: released when the process dies)."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class Staging:
    """This run's staging folder in ``out``, locked for as long as the run lives."""

    def __init__(self, out: Path):
        with locked(out):
            remove_stale_staging(out)
            self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
            self.fd = os.open(self.path, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def make_staging(out: Path) -> Path:
    """A new staging folder of this process inside ``out`` (see :class:`Staging`)."""
    return Staging(out).path


def move_into_place(staging: Path, cid: str, out: Path) -> None:
    """Move the files of ``staging/cid`` into ``out/cid``: m2cofs's own files there are replaced
    (and removed where this run did not write them, e.g. an old preview), others are kept."""
    new, target = staging / cid, out / cid
    if not new.exists():
        return
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise M2CofsError("exists and is not a case folder; remove it or choose another --out", target)
    target.mkdir(exist_ok=True)
    written = []
    for f in sorted(new.iterdir()):
        os.replace(f, target / f.name)
        written.append(f.name)
    for old in own_files(target, cid):
        if old.name not in written:
            old.unlink()
    new.rmdir()


def merge_record(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """``predict.json`` for this run, keeping the cases of earlier runs that are still in OUT."""
    merged = {**record, "cases": {}}
    old: Any = None
    try:
        old = json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    if isinstance(old, dict) and isinstance(old.get("cases"), dict):
        for cid, entry in old["cases"].items():
            if cid in record["cases"] or not isinstance(entry, dict) or not own_files(out / cid, cid):
                continue
            merged["cases"][cid] = {**{k: old.get(k) for k in PER_CASE if k in old}, **entry}
    for cid, entry in record["cases"].items():
        merged["cases"][cid] = {**{k: record.get(k) for k in PER_CASE if k in record}, **entry}
    return merged


def remove_stale_staging(out: Path) -> None:
    """Staging folders of killed predict runs (no process holds their lock) are removed; call
    under :func:`locked`, so that no run is between making its staging folder and locking it."""
    for d in out.glob(f"{STAGING_PREFIX}*"):
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its run is alive
            os.close(fd)
            continue
        shutil.rmtree(d, ignore_errors=True)
        os.close(fd)
