"""Scratch: patch-level contrast ratios (d_fused / d_source per role) of θU's fusion on training patches."""
import json, shutil, sys
from pathlib import Path
import os
import torch
MODE = os.environ.get('MODE', 'brain')
from m2cofs.training.options import TrainOptions
from m2cofs.training.pipeline import Trainer
from m2cofs import losses as L


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    cases = json.loads((src / "run.json").read_text())["cases"]
    (out / "stages").mkdir(parents=True, exist_ok=True)
    for f in (src / "stages").glob("*.safetensors"):
        shutil.copy(f, out / "stages" / f.name)
    tr = Trainer(TrainOptions(data="../shared/data", out=str(out), stages=[3], modalities=["t1ce", "flair"], include=cases,
                              cache_dir="runs/loso_fastssim/cache", progress=False))
    for st, stage in enumerate((tr.stage0, tr.stage1, tr.stage2, tr.stage3)):
        tr.results = stage(False, tr.results)
    net = tr.net.eval()
    ds = tr.patch_dataset("stage1_fusion")
    regions = tr.convention.region_names
    roles = L.contrast_roles(tr.modalities, regions)
    print("roles", roles, "regions", regions)
    rows = {r: [] for r in range(len(roles))}
    with torch.no_grad():
        for i in range(min(len(ds), 40)):
            b = ds[i]
            image, target = b["image"][None], b["target"][None]
            feats = torch.cat([enc(image[:, j: j + 1]) for j, enc in enumerate(net.encoders)], 1)
            fused = net.fusion_head.fuse(net.fusion(feats), image)
            w = net.fusion_head.weights(net.fusion(feats))
            brain = (image > 0).any(1).float()
            masks = {r: target[:, regions.index(r)] * brain for r in ("ET", "WT")}
            masks["brain-WT"] = brain - masks["WT"]; masks["WT-ET"] = (masks["WT"] - masks["ET"]).clamp_min(0)
            for k, (s, a, bb) in enumerate(roles):
                A, B = masks[a], masks[bb]
                if A.sum() < 32 or B.sum() < 32:
                    continue
                ref = brain if MODE == "brain" else masks["brain-WT"]
                ds_ = L._standardised_contrast(image[:, s], A, B, ref)
                df = L._standardised_contrast(fused[:, 0], A, B, ref)
                mean = L._standardised_contrast(image.mean(1), A, B, ref)
                if MODE == "whole":
                    case = tr.cases[ds.case_of(i)]
                    vol = torch.as_tensor(case.image)[:, torch.as_tensor(case.mask)]
                    dA = lambda x: ((x * A).sum() / A.sum() - (x * B).sum() / B.sum())
                    ds_ = dA(image[:, s]) / vol[s].std()
                    mean = dA(image.mean(1)) / vol.mean(0).std()
                gT = (w[:, 0] * A).sum() / A.sum(); gF = (w[:, 1] * A).sum() / A.sum()
                gTo = (w[:, 0] * B).sum() / B.sum(); gFo = (w[:, 1] * B).sum() / B.sum()
                rows[k].append((float(ds_), float(df / ds_), float(mean / ds_), float(gT), float(gF), float(gTo), float(gFo)))
    for k, r in rows.items():
        t = torch.tensor(r)
        print("median ratio fused", t[:, 1].median().item(), "median ratio mean", t[:, 2].median().item(), "quartiles", t[:, 2].quantile(torch.tensor([0.25, 0.75])).tolist())
        print(roles[k], "n", len(r), "d_src %.2f  ratio fused %.2f  ratio mean %.2f  gains in (T1ce %.2f FLAIR %.2f) out (T1ce %.2f FLAIR %.2f)" % tuple(t.mean(0).tolist()))


if __name__ == "__main__":
    main()
