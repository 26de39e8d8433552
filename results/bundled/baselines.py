"""Classic fusion rules on the held-out case, written as prediction folders that
``m2cofs evaluate`` scores exactly as it scores the bundled model's output.

The sources are scaled the way the model sees them (the model's percentile scaling, on the
input's own grid), so every rule works on the same intensities. Usage:
    python results/bundled/baselines.py DATA_FOLDER CASE_ID OUT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from m2cofs.baselines.classical import fuse_laplacian, fuse_max, fuse_mean, fuse_pca
from m2cofs.data.dataset import MultiModalDataset
from m2cofs.data.loading import foreground_mask
from m2cofs.data.preprocess import apply_intensity_range
from m2cofs.inference import load_model

RULES = {"mean": fuse_mean, "max": fuse_max, "pca": fuse_pca, "laplacian": fuse_laplacian,
         "copy_t1ce": lambda s, m: s[0] * m, "copy_flair": lambda s, m: s[1] * m}


def main(data: str, case_id: str, out: str) -> None:
    model = load_model(Path(__file__).resolve().parents[2] / "src/m2cofs/weights/brats-t1ce-flair/model.safetensors")
    ds = model.dataset(data, ids=[case_id])
    case, src = ds.prepared_with_source(0)
    fg = foreground_mask(src.images, src.mask)
    scaled = np.stack([apply_intensity_range(src.images[c], fg, case.meta.intensity_range[c], ds.preprocess)
                       for c in range(len(src.images))])
    affine = np.array(case.meta.original_affine)
    for name, rule in RULES.items():
        fused = np.asarray(rule(scaled, fg), np.float32)
        fused[~fg] = 0
        dest = Path(out) / name / case_id
        dest.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(fused, affine), str(dest / f"{case_id}_fused.nii.gz"))
        print(name, dest)


if __name__ == "__main__":
    main(*sys.argv[1:4])
