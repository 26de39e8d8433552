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
import re
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
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if _is_disk_full(exc):
            raise M2CofsError("no space left on the device (disk full or quota exceeded); nothing was written and "
                              "any previous version of the file is intact", target) from None
        raise


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a full disk or an exceeded quota.

    Writers that are not plain Python file I/O report it in their own way (safetensors as a
    ``SafetensorError`` mentioning "os error 28"); the message is checked too.
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        text = str(exc)
        if "No space left on device" in text or "Disk quota exceeded" in text or "os error 28" in text:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


# ``atomic_path`` temporary names: "." + target name + "." + 8 random characters + target suffixes.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}(?P<suffix>(\.[^.]+)*)$")


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file left by :func:`atomic_path` (e.g. by a kill)."""
    m = _TEMP_RE.match(name)
    if m is None:
        return False
    target, suffix = m["name"], m["suffix"]
    return target.endswith(suffix) if suffix and suffix != ".tmp" else True


def clean_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove temporary files that an interrupted :func:`atomic_path` left in ``folder``.

    Only for folders m2cofs owns (a run or output folder) and only when no other m2cofs process
    writes there. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in (folder.rglob(".*") if recursive else folder.glob(".*")):
        if p.is_file() and not p.is_symlink() and is_temp_name(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def is_inside(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """True when ``child`` is ``parent`` or lies inside it (links resolved)."""
    c, p = Path(child).resolve(), Path(parent).resolve()
    return c == p or p in c.parents


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


def _xform_codes(header: Any | None) -> tuple[int, int]:
    """``(qform_code, sform_code)`` of a NIfTI header, kept as they are (1, 1 without one). Both
    at 0 stay 0: readers then take the affine from the voxel sizes, the same one as the input's."""
    try:
        return int(header["qform_code"]), int(header["sform_code"])
    except (TypeError, KeyError, ValueError, IndexError):
        return 1, 1


def save_nifti(
    target: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    header: Any | None = None,
    dtype: Any | None = None,
) -> None:
    """Write ``array`` as a NIfTI-1 file with ``affine`` (and the source ``header``), atomically.

    The header's data type and scaling are reset to those of ``array`` (or ``dtype``) so a label
    map written over a float image header stays integer, and an image is not re-quantised. The
    source header's ``qform_code`` and ``sform_code`` are kept (an input with ``sform_code`` 0
    gives an output with ``sform_code`` 0); without a header both are 1 (scanner).
    """
    import nibabel as nib

    arr = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(arr, affine, header=hdr)
    img.set_data_dtype(arr.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    qcode, scode = _xform_codes(hdr)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    atomic_write_with(target, lambda p: nib.save(img, str(p)))
