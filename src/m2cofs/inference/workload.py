"""Before the first prediction: every input file read and checked, and the work bounded.

A header is untrusted input: 5 mm voxels resampled onto a 1 mm model grid are 125 times the
voxels (637 sliding windows for one case). :func:`check_inputs` reads every case once (so that a
bad file in the last case stops the run before the first is predicted), estimates each case's
size on the model grid and its windows, and refuses a case beyond ``max_voxels``
(``--max-voxels`` raises it).
"""

from __future__ import annotations

import math

import numpy as np

from m2cofs.errors import M2CofsError

DEFAULT_MAX_VOXELS = 64_000_000  # on the model grid: a 400³ volume; BraTS at 1 mm is 8.9 M


def model_grid_shape(shape, affine, spacing) -> list[int]:
    """The shape of a volume resampled to ``spacing`` (mm; ``None``: its own grid), before cropping."""
    if not spacing:
        return [int(s) for s in shape]
    vox = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    return [max(2, int(round(n * v / t))) for n, v, t in zip(shape, vox, spacing)]


def windows_of(shape, patch, overlap: float) -> int:
    step = [max(1, int(p * (1 - overlap))) for p in patch]
    return math.prod(max(1, math.ceil((s - p) / st) + 1) for s, p, st in zip(shape, patch, step))


def check_inputs(predictor, ds, resample_to: str | None) -> str:
    """Read every case of ``ds`` (images only), refuse one that would exceed
    ``predictor.max_voxels`` on the model grid; return the estimate as a phrase."""
    from m2cofs.data.loading import load_case

    model = predictor.model
    spacing = model.preprocessing.spacing
    patch = list(model.config.data.patch_size)
    overlap = model.config.inference.overlap if predictor.overlap is None else predictor.overlap
    total_vox = total_win = 0
    for spec in ds.cases:
        case = load_case(spec, model.modalities, None, resample_to, load_label=False)
        shape = model_grid_shape(case.shape, case.affine, spacing)
        n = math.prod(shape)
        if n > predictor.max_voxels:
            where = next(iter(spec.images.values())).path
            vox = "x".join(f"{v:.3g}" for v in case.spacing)
            raise M2CofsError(
                f"case {spec.id}: {'x'.join(map(str, case.shape))} voxels of {vox} mm become "
                f"{'x'.join(map(str, shape))} = {n / 1e6:.0f} M voxels on the model grid "
                f"({windows_of(shape, patch, overlap)} windows), over the limit of {predictor.max_voxels / 1e6:.0f} M: "
                "check the voxel size in the header, or raise --max-voxels", where)
        total_vox += n
        total_win += windows_of(shape, patch, overlap)
        del case
    return f"about {total_win} window(s) of {'x'.join(map(str, patch))} in all ({total_vox / 1e6:.1f} M voxels on the model grid)"
