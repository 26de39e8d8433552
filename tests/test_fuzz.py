"""Fuzzing the NIfTI loader: mangled headers, flipped bytes, truncations.

Whatever the bytes, :func:`m2cofs.data.loading.read_volume` (and ``load_case`` and the
``m2cofs data check`` command on top of it) either returns a checked volume or raises the
project's own :class:`~m2cofs.errors.M2CofsError` with one line naming the file — never another
exception, a traceback or a hang. Each example has a deadline; the number of examples is small
enough for CI (raise ``M2COFS_FUZZ_EXAMPLES`` for a longer local run).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2cofs.cli import main
from m2cofs.data import discover, load_case
from m2cofs.data.loading import read_volume
from m2cofs.errors import M2CofsError

N = int(os.environ.get("M2COFS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=N, deadline=3000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# NIfTI-1 header fields: name → (byte offset, struct format, count).
FIELDS = {
    "sizeof_hdr": (0, "i", 1), "dim_info": (39, "B", 1), "dim": (40, "h", 8), "intent_code": (68, "h", 1),
    "datatype": (70, "h", 1), "bitpix": (72, "h", 1), "pixdim": (76, "f", 8), "vox_offset": (108, "f", 1),
    "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1), "xyzt_units": (123, "B", 1), "cal_max": (124, "f", 1),
    "qform_code": (252, "h", 1), "sform_code": (254, "h", 1), "quatern": (256, "f", 3), "qoffset": (268, "f", 3),
    "srow_x": (280, "f", 4), "srow_y": (296, "f", 4), "srow_z": (312, "f", 4), "magic": (344, "4s", 1),
}
INT_LIMITS = {"i": (-2**31, 2**31 - 1), "h": (-2**15, 2**15 - 1), "B": (0, 255)}
# datatype codes nibabel knows, and a few it does not
DATATYPES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 7, 255, 4096, -1]


def _base_volume(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.uniform(1, 50, size=(6, 7, 5))).astype(dtype)


def _nifti_bytes(dtype=np.float32) -> bytes:
    img = nib.Nifti1Image(_base_volume(dtype), np.diag([1.0, 1.2, 2.0, 1.0]))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    buf = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=buf), "header": nib.FileHolder(fileobj=buf)})
    return buf.getvalue()


BASE = {np.float32: _nifti_bytes(np.float32), np.int16: _nifti_bytes(np.int16)}


def _values(fmt: str, count: int):
    if fmt == "f":
        one = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                        st.sampled_from([0.0, -1.0, 1e-30, 1e30, 352.0, 348.0, 0.5]))
    elif fmt == "4s":
        one = st.one_of(st.binary(min_size=4, max_size=4), st.sampled_from([b"ni1\0", b"n+1\0", b"n+2\0", b"\0\0\0\0"]))
    else:
        lo, hi = INT_LIMITS[fmt]
        one = st.one_of(st.integers(lo, hi), st.integers(max(lo, -3), 8),
                        st.sampled_from([v for v in (0, 1, 2, 3, 4, 5, 7, 348, 540) if lo <= v <= hi]))
    return st.lists(one, min_size=1, max_size=count)


@st.composite
def header_mutation(draw):
    name = draw(st.sampled_from(sorted(FIELDS)))
    off, fmt, count = FIELDS[name]
    if name == "datatype":
        vals = [draw(st.sampled_from(DATATYPES))]
    else:
        vals = draw(_values(fmt, count))
    start = draw(st.integers(0, count - len(vals)))
    return name, off + struct.calcsize("<" + fmt) * start, fmt, vals


@st.composite
def mutated_file(draw):
    """(bytes of a .nii, compress?) after 1-3 header mutations, byte flips and/or a truncation."""
    data = bytearray(BASE[draw(st.sampled_from([np.float32, np.int16]))])
    for _ in range(draw(st.integers(0, 3))):
        _, off, fmt, vals = draw(header_mutation())
        struct.pack_into("<" + fmt * len(vals), data, off, *vals)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))
    gz = draw(st.booleans())
    blob = gzip.compress(bytes(data), mtime=0) if gz else bytes(data)
    if gz and draw(st.integers(0, 3)) == 0:  # damage the compressed stream itself
        blob = bytearray(blob)
        if draw(st.booleans()):
            blob = blob[: draw(st.integers(0, len(blob)))]
        else:
            pos = draw(st.integers(0, len(blob) - 1))
            blob[pos] ^= draw(st.integers(1, 255))
        blob = bytes(blob)
    return blob, gz


def _check_volume_or_clean_error(path: Path) -> None:
    try:
        data, affine, _ = read_volume(path)
    except M2CofsError as exc:
        msg = str(exc)
        assert "\n" not in msg and str(path) in msg, msg
        return
    assert data.ndim == 3 and min(data.shape) >= 2
    assert np.all(np.isfinite(affine))
    if data.dtype.kind == "f":
        assert np.all(np.isfinite(data))


def test_base_files_load():
    with tempfile.TemporaryDirectory() as d:
        for dtype, blob in BASE.items():
            p = Path(d) / "v.nii"
            p.write_bytes(blob)
            data, _, _ = read_volume(p)
            np.testing.assert_array_equal(data, _base_volume(dtype))


@FUZZ
@given(mutated_file())
def test_read_volume_only_raises_clean_errors(case):
    blob, gz = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("vol.nii.gz" if gz else "vol.nii")
        path.write_bytes(blob)
        _check_volume_or_clean_error(path)


@FUZZ
@given(st.binary(max_size=600), st.sampled_from(["x.nii", "x.nii.gz"]))
def test_random_bytes_only_raise_clean_errors(blob, name):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(blob)
        _check_volume_or_clean_error(path)


@settings(FUZZ, max_examples=max(10, N // 3))
@given(mutated_file(), st.sampled_from(["t1ce", "flair", "seg"]))
def test_load_case_and_data_check_never_crash(case, which):
    """One file of a case replaced by fuzzed bytes: ``load_case`` raises only M2CofsError, and
    ``m2cofs data check`` reports it (exit 0, 1 or 2) without a traceback."""
    blob, gz = case
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "data"
        make_case(root, "a", shape=(6, 7, 5), label_values=(0, 1))
        target = root / "a" / f"a_{which}.nii.gz"
        target.unlink()
        target = target.with_name(f"a_{which}.nii.gz" if gz else f"a_{which}.nii")
        target.write_bytes(blob)
        try:
            load_case(discover(root).cases[0], ["t1ce", "flair"])
        except M2CofsError as exc:
            assert "\n" not in str(exc)
        import contextlib

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["data", "check", str(root)])
        assert code in (0, 1, 2)
        assert "Traceback" not in err.getvalue()
        if code != 0:
            assert "m2cofs: error:" in err.getvalue()


@pytest.mark.parametrize("gz", [False, True])
def test_header_declaring_a_huge_volume_fails_fast(tmp_path, gz):
    """A 32767³ float64 volume in the header of a 1 kB file: a clean error, not an attempt to
    allocate 280 TB (or a long read)."""
    data = bytearray(BASE[np.float32])
    struct.pack_into("<8h", data, 40, 3, 32767, 32767, 32767, 1, 1, 1, 1)
    struct.pack_into("<hh", data, 70, 64, 64)
    path = tmp_path / ("big.nii.gz" if gz else "big.nii")
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    import time

    t0 = time.perf_counter()
    with pytest.raises(M2CofsError, match="big.nii.*truncated or corrupt"):
        read_volume(path)
    assert time.perf_counter() - t0 < 2.0


def test_header_declaring_more_than_the_gzip_can_hold_is_not_read(tmp_path):
    """3.2 GB declared in a 1 kB .nii.gz: refused before nibabel allocates the buffer."""
    data = bytearray(BASE[np.float32])
    struct.pack_into("<8h", data, 40, 3, 2000, 2000, 800, 1, 1, 1, 1)
    struct.pack_into("<hh", data, 70, 2, 8)
    path = tmp_path / "big.nii.gz"
    path.write_bytes(gzip.compress(bytes(data)))
    import resource
    import time

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(M2CofsError, match=r"declares 3200000\d* bytes"):
        read_volume(path)
    assert time.perf_counter() - t0 < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 500_000  # kB: no 3.2 GB buffer
