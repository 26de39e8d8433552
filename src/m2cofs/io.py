"""Atomic file writing and NIfTI output.

Every file m2cofs writes appears whole or not at all: it is written to a temporary file in the
destination folder, flushed to disk, then renamed over the target (``os.replace`` is atomic on
POSIX within one file system). A failure (full disk, kill) leaves any previous file untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from m2cofs.errors import M2CofsError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    The temporary name keeps ``target``'s suffixes (e.g. ``.nii.gz``) so writers that infer the
    format from the name work. On any exception the temporary file is removed and ``target`` is
    left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise M2CofsError("no space left on the device; nothing was written", target) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_with(target: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and rename the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_nifti(
    target: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    header: Any | None = None,
    dtype: Any | None = None,
) -> None:
    """Write ``array`` as a NIfTI-1 file with ``affine`` (and the source ``header``), atomically.

    The header's data type and scaling are reset to those of ``array`` (or ``dtype``) so a label
    map written over a float image header stays integer, and an image is not re-quantised.
    """
    import nibabel as nib

    arr = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(arr, affine, header=hdr)
    img.set_data_dtype(arr.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    atomic_write_with(target, lambda p: nib.save(img, str(p)))
