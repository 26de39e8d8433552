"""Scratch: whole-volume (model grid) contrast ratios of mean fusion on the training cases, vs patch-level."""
import json, sys
from pathlib import Path
import torch
from m2cofs.training.options import TrainOptions
from m2cofs.training.pipeline import Trainer
from m2cofs import losses as L


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    cases = json.loads((src / "run.json").read_text())["cases"]
    tr = Trainer(TrainOptions(data="../shared/data", out=str(out), stages=[3], modalities=["t1ce", "flair"], include=cases,
                              cache_dir="runs/loso_fastssim/cache", progress=False))
    regions = tr.convention.region_names
    roles = L.contrast_roles(tr.modalities, regions)
    for c in tr.cases:
        img = torch.as_tensor(c.image)[None].float()
        from m2cofs.data.labels import labels_to_regions
        tgt = torch.as_tensor(labels_to_regions(c.label, tr.convention))[None].float()
        brain = torch.as_tensor(c.mask)[None].float()
        masks = {r: tgt[:, regions.index(r)] * brain for r in ("ET", "WT")}
        masks["brain-WT"] = brain - masks["WT"]; masks["WT-ET"] = (masks["WT"] - masks["ET"]).clamp_min(0)
        row = []
        for s, a, b in roles:
            A, B = masks[a], masks[b]
            d_s = L._standardised_contrast(img[:, s], A, B, brain)
            d_m = L._standardised_contrast(img.mean(1), A, B, brain)
            row.append(f"{a}: d_src {float(d_s):.2f} mean/src {float(d_m / d_s):.2f}")
        print(c.id, " | ".join(row))


if __name__ == "__main__":
    main()
