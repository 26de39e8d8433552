"""Reading one case from disk and checking that it is usable.

:func:`load_case` reads the images of a :class:`~m2cofs.data.layouts.CaseSpec`, checks each file
(readable NIfTI, 3-D, finite, not constant), checks that all files of the case share one grid
(or resamples them onto a reference modality when asked), reads the label and brain mask, and
returns a :class:`Case` with channel-first float32 data in the files' own voxel order.

Every problem raises :class:`~m2cofs.errors.M2CofsError` with one line naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np

from m2cofs.data.labels import LabelConvention, check_label_values
from m2cofs.data.layouts import CaseSpec, ImageRef
from m2cofs.errors import M2CofsError

AFFINE_ATOL = 1e-3  # mm: affines that differ by less are the same grid
# Largest |value| accepted in an image: float32 holds 3.4e38, but normalising (squares, sums over
# millions of voxels) must not overflow either. No scanner writes intensities anywhere near it.
F32_SAFE = 1e15


@dataclass
class Case:
    """One loaded case in its files' own voxel grid (no preprocessing)."""

    id: str
    modalities: list[str]
    images: np.ndarray  # (C, X, Y, Z) float32
    affine: np.ndarray  # (4, 4) voxel → world (mm) of the reference grid
    header: nib.Nifti1Header
    label: np.ndarray | None = None  # (X, Y, Z) int16, the dataset's own label values
    mask: np.ndarray | None = None  # (X, Y, Z) bool brain mask
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    label_convention: str = ""  # the convention ``label`` is in (its dataset folder's), when known

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's header-fixing log lines and numpy warnings while a file is read: the
    user sees m2cofs's own one-line error instead (or nothing, for a usable file)."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                yield
    finally:
        logger.setLevel(level)


# Deflate never compresses more than about 1032:1, so a .nii.gz whose header declares more data
# than MAX_GZIP_RATIO times its own size is truncated or corrupt, whatever its content.
MAX_GZIP_RATIO = 1100


def _check_declared_size(img, path: Path) -> None:
    """Refuse a header that declares more data than the file can hold, before reading it (a
    damaged header must not make the loader allocate gigabytes or read for minutes)."""
    try:
        hdr = img.header
        n_vox = int(np.prod([int(d) for d in img.shape], dtype=object))
        need = int(hdr.get_data_offset()) + n_vox * int(hdr.get_data_dtype().itemsize)
        size = path.stat().st_size
    except Exception as exc:
        raise M2CofsError(f"is not a valid NIfTI file ({_why(exc)})", path) from None
    gz = path.name.lower().endswith(".gz")
    limit = size * MAX_GZIP_RATIO if gz else size
    if need > limit:
        raise M2CofsError(f"cannot be read: truncated or corrupt file (the header declares {need} bytes for shape "
                          f"{tuple(int(d) for d in img.shape)}, the {'compressed ' if gz else ''}file holds {size})", path)


def open_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    """Open a NIfTI file's header (no voxel data read); a missing, unreadable or non-NIfTI file
    raises :class:`M2CofsError` naming it."""
    if not path.exists():
        raise M2CofsError("file not found", path)
    if path.is_dir():
        raise M2CofsError("is a folder, expected a NIfTI file", path)
    with _quiet_nibabel():
        return _open_quiet(path)


def _open_quiet(path: Path) -> nib.spatialimages.SpatialImage:
    try:
        img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError:
        raise M2CofsError("is not a NIfTI file (unrecognised header)", path) from None
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as exc:
        raise M2CofsError(f"cannot be read: truncated or corrupt file ({_why(exc)})", path) from None
    except Exception as exc:  # nibabel raises assorted errors on mangled headers
        raise M2CofsError(f"is not a valid NIfTI file ({_why(exc)})", path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise M2CofsError(f"is a {type(img).__name__}, not NIfTI", path)
    return img


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _read_array(img, path: Path) -> np.ndarray:
    _check_declared_size(img, path)
    try:
        with _quiet_nibabel():
            data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise M2CofsError(f"cannot be read: truncated or corrupt file ({_why(exc)})", path) from None
    except MemoryError:
        raise M2CofsError("header declares a volume too large to read", path) from None
    except Exception as exc:
        raise M2CofsError(f"cannot be read ({_why(exc)})", path) from None
    return data


def _valid_affine(img, path: Path) -> np.ndarray:
    aff = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise M2CofsError("has an invalid affine (non-finite or singular voxel-to-world matrix)", path)
    _check_orientation_fields(img, path)
    return aff


def _raw_header(img, path: Path):
    """The header as written in the file (nibabel fixes some fields, e.g. a zero pixdim, on load)."""
    from nibabel.openers import ImageOpener

    try:
        with _quiet_nibabel(), ImageOpener(str(path)) as fh:
            return type(img.header).from_fileobj(fh, check=False)
    except Exception:
        return img.header


def _check_orientation_fields(img, path: Path) -> None:
    """A zero voxel size where the qform places the voxels (nibabel would silently make it 1 mm),
    and a qform and sform that disagree (nibabel silently uses the sform)."""
    hdr = img.header
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform_code == 0:
        raw = np.asarray(_raw_header(img, path)["pixdim"][1:4], dtype=np.float64)
        if not np.all(np.isfinite(raw)) or np.any(raw == 0):
            raise M2CofsError(f"has voxel size (pixdim) {tuple(float(v) for v in raw)} with no sform: the voxel size is "
                              "unknown (a zero would be read as 1 mm); fix the header", path)
    if sform_code > 0 and qform_code > 0:
        try:
            with _quiet_nibabel():
                diff = float(np.abs(hdr.get_qform() - hdr.get_sform()).max())
        except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. quaternion parameters that are no rotation
            raise M2CofsError(f"has an invalid qform ({exc}); fix the header", path) from None
        if not np.isfinite(diff) or diff > AFFINE_ATOL:
            raise M2CofsError(f"its qform and sform disagree (by up to {diff:.3g} mm): which of them places the voxels "
                              "is unknown; fix the header (e.g. set the wrong one's code to 0)", path)


def read_volume(ref: ImageRef | Path, what: str = "image") -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read one 3-D volume (or one channel of a 4-D file) and check it.

    Returns ``(data, affine, header)``; ``data`` keeps its on-disk dtype. Raises
    :class:`M2CofsError` for unreadable files, wrong dimensionality, NaN/Inf values, and (for
    images) all-zero or constant volumes.
    """
    if isinstance(ref, Path):
        ref = ImageRef(ref)
    path = ref.path
    img = open_nifti(path)
    shape = img.shape
    if ref.channel is None:
        if len(shape) == 4 and shape[3] == 1:
            pass
        elif len(shape) != 3:
            raise M2CofsError(f"is {len(shape)}-D with shape {tuple(shape)}, expected a 3-D volume", path)
    else:
        if len(shape) != 4 or ref.channel >= shape[3]:
            raise M2CofsError(f"expected a 4-D file with at least {ref.channel + 1} channels, got shape {tuple(shape)}", path)
    if min(shape[:3]) < 2:
        raise M2CofsError(f"has a degenerate shape {tuple(shape)}", path)
    affine = _valid_affine(img, path)
    data = _read_array(img, path)
    if data.ndim == 4:
        data = data[..., 0 if ref.channel is None else ref.channel]
    if data.dtype.kind not in "biuf":
        raise M2CofsError(f"has unsupported data type {data.dtype}", path)
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        n = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise M2CofsError(f"contains {n} NaN/Inf voxel(s)", str(ref))
    if data.dtype.kind == "f":  # checked as the float32 m2cofs computes in, after scl_slope/scl_inter
        big = float(np.abs(data).max())
        if big > F32_SAFE:
            slope = float(getattr(img.dataobj, "slope", 1.0))  # nibabel moves scl_slope from the header to dataobj
            why = f" (scl_slope {slope:g})" if np.isfinite(slope) and slope not in (0.0, 1.0) else ""
            raise M2CofsError(f"has values up to {big:.3g}{why}, beyond what float32 arithmetic holds "
                              f"(|value| <= {F32_SAFE:.0e}); rescale the volume", str(ref))
    if what == "image":
        if not np.any(data):
            raise M2CofsError("is an all-zero volume", str(ref))
        if np.all(data == data.flat[0]):
            raise M2CofsError(f"is a constant volume (every voxel {data.flat[0]})", str(ref))
    header = img.header.copy()
    return data, affine, header


def grid_text(shape, affine) -> str:
    """``(240, 240, 155) at 1x1x1 mm, origin (0.0, -239.0, 0.0)``: a grid as error messages name it."""
    sp = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return f"{tuple(int(s) for s in shape)} at {'x'.join(f'{s:g}' for s in sp)} mm, origin {tuple(round(float(v), 2) for v in affine[:3, 3])}"


def grid_difference(shape_a, aff_a, shape_b, aff_b) -> str:
    """What ``grid_text`` may not show: ``"; the affines differ by up to 0.002 mm"`` for equal shapes."""
    if tuple(shape_a) != tuple(shape_b):
        return ""
    return f"; the affines differ by up to {float(np.abs(np.asarray(aff_a) - np.asarray(aff_b)).max()):.3g} mm"


def same_grid(shape_a, aff_a, shape_b, aff_b, atol: float = AFFINE_ATOL) -> bool:
    """True when two volumes share shape and (within ``atol`` mm) affine."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(aff_a, aff_b, atol=atol)


def _resample(data: np.ndarray, src_aff: np.ndarray, ref_shape, ref_aff: np.ndarray, order: int) -> np.ndarray:
    from nibabel.processing import resample_from_to

    src = nib.Nifti1Image(np.asarray(data, dtype=np.float32 if order else data.dtype), src_aff)
    out = resample_from_to(src, (tuple(ref_shape), ref_aff), order=order, mode="constant", cval=0.0)
    return np.asarray(out.dataobj)


def load_case(
    spec: CaseSpec,
    modalities: Sequence[str] | None = None,
    convention: LabelConvention | None = None,
    resample_to: str | None = None,
    load_label: bool = True,
) -> Case:
    """Read and check one case.

    Args:
        spec: the case's files, from :func:`~m2cofs.data.layouts.discover`.
        modalities: which modalities to load, in this channel order (default: all found, in the
            canonical order t1, t1ce, t2, flair, ...). A missing one is an error.
        convention: if given, label values outside it are an error.
        resample_to: a modality whose grid the others (and the label and mask) are resampled
            onto, by their affines. Without it, files on different grids are an error.
        load_label: read the label map when the case has one.
    """
    from m2cofs.data.modalities import CANONICAL

    if modalities is None:
        modalities = sorted(spec.images, key=lambda m: CANONICAL.index(m) if m in CANONICAL else 99)
    missing = [m for m in modalities if m not in spec.images]
    if missing:
        where = next(iter(spec.images.values())).path.parent if spec.images else spec.id
        raise M2CofsError(f"case {spec.id!r} has no {', '.join(missing)} image (found: {', '.join(spec.images) or 'none'})", where)
    if len(modalities) == 0:
        raise M2CofsError(f"case {spec.id!r} has no images")
    if resample_to is not None and resample_to not in modalities:
        raise M2CofsError(f"--resample-to {resample_to}: case {spec.id!r} has no such modality among {', '.join(modalities)}")

    vols = {m: read_volume(spec.images[m], "image") for m in modalities}
    ref_mod = resample_to or modalities[0]
    ref_data, ref_aff, ref_hdr = vols[ref_mod]
    ref_shape = ref_data.shape
    notes = list(spec.notes)
    chans = []
    for m in modalities:
        data, aff, _ = vols[m]
        if not same_grid(data.shape, aff, ref_shape, ref_aff):
            if resample_to is None:
                raise M2CofsError(
                    f"{spec.images[m].path.name} is on grid {grid_text(data.shape, aff)} but "
                    f"{spec.images[ref_mod].path.name} is on {grid_text(ref_shape, ref_aff)}"
                    f"{grid_difference(data.shape, aff, ref_shape, ref_aff)}; "
                    f"pass --resample-to {ref_mod} to resample onto one grid",
                    spec.images[m].path.parent,
                )
            data = _resample(data, aff, ref_shape, ref_aff, order=1)
            notes.append(f"resampled {m} onto the {ref_mod} grid")
        chans.append(np.asarray(data, dtype=np.float32))
    images = np.stack(chans, axis=0)

    label = None
    if load_label and spec.label is not None:
        label = _read_aux(spec.label, ref_shape, ref_aff, resample_to, ref_mod, spec, notes, "label")
        lab = np.asarray(label)
        if lab.dtype.kind == "f":
            rounded = np.rint(lab)
            if not np.allclose(lab, rounded, atol=1e-3):
                raise M2CofsError("label map has non-integer values", spec.label)
            lab = rounded
        if lab.min() < 0 or lab.max() > 255:
            raise M2CofsError(f"label values outside 0..255 (min {lab.min()}, max {lab.max()})", spec.label)
        label = lab.astype(np.int16)
        if convention is not None:
            bad = check_label_values(set(np.unique(label).tolist()), convention)
            if bad:
                raise M2CofsError(
                    f"label values {bad} are not in the {convention.name} convention (allowed {sorted(convention.values)}); "
                    "pass the right --labels",
                    spec.label,
                )
    mask = None
    if spec.mask is not None:
        m = _read_aux(spec.mask, ref_shape, ref_aff, resample_to, ref_mod, spec, notes, "mask")
        mask = np.asarray(m) > 0.5
        if not mask.any():
            raise M2CofsError("brain mask is empty", spec.mask)
    files = {m: str(spec.images[m]) for m in modalities}
    if spec.label is not None:
        files["label"] = str(spec.label)
    if spec.mask is not None:
        files["mask"] = str(spec.mask)
    return Case(spec.id, list(modalities), images, ref_aff, ref_hdr, label, mask, files, notes,
                convention.name if convention is not None else (spec.convention or ""))


def _read_aux(path: Path, ref_shape, ref_aff, resample_to, ref_mod, spec: CaseSpec, notes: list[str], what: str):
    data, aff, _ = read_volume(path, what)
    if not same_grid(data.shape, aff, ref_shape, ref_aff):
        if resample_to is None:
            raise M2CofsError(
                f"{what} is on grid {grid_text(data.shape, aff)} but {spec.images[ref_mod].path.name} is on "
                f"{grid_text(ref_shape, ref_aff)}{grid_difference(data.shape, aff, ref_shape, ref_aff)}; pass --resample-to {ref_mod} to resample onto one grid",
                path,
            )
        data = _resample(data, aff, ref_shape, ref_aff, order=0)
        notes.append(f"resampled the {what} onto the {ref_mod} grid")
    return data


def foreground_mask(images: np.ndarray, brainmask: np.ndarray | None = None) -> np.ndarray:
    """The head/brain foreground of a (C, X, Y, Z) case.

    The brain mask when there is one; otherwise every voxel where some modality differs from its
    background value (the most common value on the volume's border: 0 for most scans, the
    minimum for z-scored data such as the BraTS-2013 redistribution).
    """
    if brainmask is not None:
        return brainmask.astype(bool)
    fg = np.zeros(images.shape[1:], dtype=bool)
    for ch in images:
        fg |= np.abs(ch - border_value(ch)) > 1e-6 * max(1.0, float(np.abs(ch).max()))
    return fg


def border_value(vol: np.ndarray) -> float:
    """Most common value on the faces of a 3-D volume (its background)."""
    faces = np.concatenate([vol[0].ravel(), vol[-1].ravel(), vol[:, 0].ravel(), vol[:, -1].ravel(),
                            vol[:, :, 0].ravel(), vol[:, :, -1].ravel()])
    vals, counts = np.unique(faces, return_counts=True)
    return float(vals[np.argmax(counts)])
