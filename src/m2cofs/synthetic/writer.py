"""Writing phantoms: :func:`write_synthetic_dataset` (the BraTS-2021 layout), case ids and seeds."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from m2cofs.errors import M2CofsError
from m2cofs.synthetic.contrast import DEFAULT_MODALITIES, SYNTH_MODALITIES
from m2cofs.synthetic.phantom import Phantom, _check_args, generate_phantom


def case_seed(seed: int, index: int) -> int:
    """The phantom seed of case ``index`` of a dataset written with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def case_id(index: int) -> str:
    return f"synth_{index:03d}"


def _check_target(out: Path, ids: list[str], overwrite: bool) -> None:
    """Refuse a file where a folder goes, and existing cases unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise M2CofsError("exists and is not a folder", out)
    for cid in ids:
        if (out / cid).exists() and not (out / cid).is_dir():
            raise M2CofsError("exists and is not a case folder", out / cid)
    if out.is_dir() and not overwrite:
        clash = [cid for cid in ids if (out / cid).is_dir() and any((out / cid).iterdir())]
        if clash:
            more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
            raise M2CofsError(f"already contains case {clash[0]}{more}; use --overwrite to replace", out)


def _write_case(folder: Path, cid: str, ph: Phantom) -> None:
    """Write one case's files atomically; drop this writer's files that the case does not have."""
    from m2cofs.io import save_nifti

    folder.mkdir(parents=True, exist_ok=True)
    written = set()
    for m, img in ph.images.items():
        save_nifti(folder / f"{cid}_{m}.nii.gz", img, ph.affine, dtype=np.float32)
        written.add(m)
    if ph.label is not None:
        save_nifti(folder / f"{cid}_seg.nii.gz", ph.label, ph.affine, dtype=np.uint8)
        written.add("seg")
    save_nifti(folder / f"{cid}_brainmask.nii.gz", ph.brainmask.astype(np.uint8), ph.affine, dtype=np.uint8)
    written.add("brainmask")
    # overwrite: drop this writer's files that the new case does not have (e.g. an old seg)
    for part in (*SYNTH_MODALITIES, "seg", "brainmask"):
        if part not in written:
            (folder / f"{cid}_{part}.nii.gz").unlink(missing_ok=True)


def write_synthetic_dataset(out: str | Path, cases: int = 4, size: int = 64, seed: int = 0,
                            modalities: Sequence[str] = DEFAULT_MODALITIES, convention: str = "brats2017",
                            progress: bool = False, overwrite: bool = False,
                            background: str = "noise") -> list[Path]:
    """Write ``cases`` phantoms to ``out`` in the BraTS-2021 layout; return the case folders.

    Each case folder ``out/synth_NNN`` holds ``synth_NNN_<modality>.nii.gz`` (float32),
    ``synth_NNN_seg.nii.gz`` (uint8, not for ``convention="none"``) and
    ``synth_NNN_brainmask.nii.gz`` (uint8). Files are written atomically. Refuses (with
    :class:`M2CofsError`) to replace an existing case folder unless ``overwrite=True``.
    """
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise M2CofsError(f"--cases must be a positive integer, got {cases!r}")
    mods, convention = _check_args(size, seed, modalities, convention)
    out = Path(out)
    ids = [case_id(i) for i in range(int(cases))]
    _check_target(out, ids, overwrite)
    folders: list[Path] = []
    for i, cid in enumerate(ids):
        t0 = time.perf_counter()
        ph = generate_phantom(size, case_seed(seed, i), mods, convention, background=background)
        _write_case(out / cid, cid, ph)
        folders.append(out / cid)
        if progress:
            print(f"{cid}: {ph.shape[0]}x{ph.shape[1]}x{ph.shape[2]} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)
    return folders
