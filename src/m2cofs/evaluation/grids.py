"""Grid checks from the headers alone: every prediction must be on its case's original grid
(shape and affine), checked for all cases before any voxel is read."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from m2cofs.errors import M2CofsError
from m2cofs.evaluation.scoring import CaseJob


def _header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    from m2cofs.data.loading import open_nifti

    img = open_nifti(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    return shape, np.asarray(img.affine, dtype=np.float64)


def _check_grid(pred: Path, shape, affine, case_id: str, ref_name: str) -> None:
    from m2cofs.data.loading import grid_text, same_grid

    pshape, paff = _header_grid(pred)
    if len(pshape) != 3:
        raise M2CofsError(f"is {len(pshape)}-D with shape {pshape}, expected a 3-D volume on case {case_id}'s grid", pred)
    if not same_grid(pshape, paff, shape, affine):
        what = "shape" if tuple(pshape) != tuple(shape) else "affine"
        raise M2CofsError(
            f"prediction {what} differs from case {case_id}: prediction on {grid_text(pshape, paff)}, "
            f"case ({ref_name}) on {grid_text(shape, affine)}; predictions must be on the input's original grid",
            pred,
        )


def check_prediction_grids(jobs: Sequence[CaseJob]) -> None:
    """Compare every prediction's header grid with its case's reference image (fast, no data read)."""
    for job in jobs:
        ref_mod = job.resample_to or job.modalities[0]
        ref = job.spec.images.get(ref_mod)
        if ref is None:
            raise M2CofsError(f"case {job.spec.id!r} has no {ref_mod} image (found: {', '.join(job.spec.images) or 'none'})")
        shape, aff = _header_grid(ref.path)
        shape = shape[:3]
        for p in (job.fused, job.seg):
            if p is not None:
                _check_grid(p, shape, aff, job.spec.id, ref.path.name)
