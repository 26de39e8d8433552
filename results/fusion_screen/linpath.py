"""Scratch (not shipped): does a direct, zero-initialised 1x1 path from the sources to the gains
logits let the fusion head learn T1ce's rim in few steps? Head (+ path) trained on θU's features
(everything else frozen), then scored on LOSO's 5 held-out cases on the model grid (2 mm).
  LR=0.03 python linpath.py SRC_RUN OUT EPOCHS {0|1|seg}
  (0: ψ alone; 1: + a 1x1 path from the sources; seg: + a 1x1 path from φ's region probabilities,
  detached; LR: the learning rate, default 0.001; EPOCHS 0: score θU as it is)"""
import json, shutil, sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from m2cofs.data.dataset import MultiModalDataset
from m2cofs.data.labels import labels_to_regions
from m2cofs.losses import _standardised_contrast
from m2cofs.models.heads import compose
from m2cofs.training import stage1_independent as s1
from m2cofs.training.options import TrainOptions
from m2cofs.training.pipeline import Trainer

TEST = ["brats2013_pat0003", "brats2013_pat0004", "brats2013_pat0005", "brats2013_pat0006", "TCGA-FG-6692"]


def score(net, tr, cases):
    from monai.inferers import sliding_window_inference
    rows = []
    net.eval()
    for c in cases:
        img = torch.as_tensor(c.image)[None].float()

        def fuse(x):
            feats = torch.cat([enc(x[:, j: j + 1]) for j, enc in enumerate(net.encoders)], 1)
            return net.fusion_head.fuse(net.fusion(feats), x)

        with torch.no_grad():
            fused = sliding_window_inference(img, (64, 64, 32), 2, fuse, overlap=0.5, mode="gaussian")
        reg = torch.as_tensor(labels_to_regions(c.label, tr.conv_of[c.id]))[None].float()
        brain = torch.as_tensor(c.mask)[None].float()
        names = list(tr.convention.region_names)
        et, wt = reg[:, names.index("ET")] * brain, reg[:, names.index("WT")] * brain
        out = []
        for x_src, a, b in ((img[:, 0], et, (wt - et).clamp_min(0)), (img[:, 1], wt, brain - wt)):
            ds = _standardised_contrast(x_src, a, b, brain)
            out.append(float(_standardised_contrast(fused[:, 0], a, b, brain) / ds) if a.sum() > 0 else float("nan"))
            out.append(float(_standardised_contrast(img.mean(1), a, b, brain) / ds) if a.sum() > 0 else float("nan"))
        from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
        from m2cofs.metrics.fusion import fusion_metrics
        m = c.mask.astype(bool); cfg = PreprocessConfig()
        srcs = [scale_intensity(c.image[j], m, cfg)[0] for j in range(2)]
        for vol in (fused[0, 0].numpy(), c.image.mean(0)):
            v = fusion_metrics(srcs, scale_intensity(vol.astype(np.float32), m, cfg)[0], m, "volume", ["Q_MI", "Q_G", "VIF"])
            out += [float(v["Q_MI"]), float(v["Q_G"]), float(v["VIF"])]
        rows.append(out)
        print(c.id, " ".join(f"{v:.2f}" for v in out), flush=True)
    r = np.array(rows)
    both = np.nanmin(r[:, [0, 2]], 1); both_m = np.nanmin(r[:, [1, 3]], 1)
    print(f"MEAN t1ce {np.nanmean(r[:,0]):.3f} (mean fusion {np.nanmean(r[:,1]):.3f})  flair {np.nanmean(r[:,2]):.3f} "
          f"({np.nanmean(r[:,3]):.3f})  both {both.mean():.3f} ({both_m.mean():.3f})  Q_MI {r[:,4].mean():.3f} ({r[:,7].mean():.3f}) "
          f"Q_G {r[:,5].mean():.3f} ({r[:,8].mean():.3f}) VIF {r[:,6].mean():.3f} ({r[:,9].mean():.3f})", flush=True)


def main():
    src, out, epochs, mode = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    path = mode == "1"
    cases = json.loads((src / "run.json").read_text())["cases"]
    (out / "stages").mkdir(parents=True, exist_ok=True)
    for f in (src / "stages").glob("*.safetensors"):
        shutil.copy(f, out / "stages" / f.name)
    tr = Trainer(TrainOptions(data="../shared/data", out=str(out), overrides=[f"train.epochs.stage1_fusion={max(epochs, 1)}", "train.lr=" + __import__("os").environ.get("LR", "0.001")],
                              stages=[3], modalities=["t1ce", "flair"], include=cases,
                              cache_dir="runs/loso_fastssim/cache", progress=False))
    for st, stage in enumerate((tr.stage0, tr.stage1, tr.stage2, tr.stage3)):
        tr.results = stage(False, tr.results)
    head = tr.net.fusion_head
    if path:
        head.src_path = nn.Conv3d(2, 2, 1)
        nn.init.zeros_(head.src_path.weight); nn.init.zeros_(head.src_path.bias)

        def fuse(z, sources):
            logits = head(z) + head.src_path(sources)
            return compose(torch.sigmoid(logits) * (2.0 / logits.shape[1]), sources)
        head.fuse = fuse
    if mode == "seg":  # ψ also reads the segmentation head's region probabilities (ET, TC, WT), detached
        head.src_path = nn.Conv3d(3, 2, 1)
        nn.init.zeros_(head.src_path.weight); nn.init.zeros_(head.src_path.bias)
        seg = tr.net.seg_head
        seg.requires_grad_(False)

        def fuse(z, sources):
            with torch.no_grad():
                prob = torch.sigmoid(seg(z))
            logits = head(z) + head.src_path(prob)
            return compose(torch.sigmoid(logits) * (2.0 / logits.shape[1]), sources)
        head.fuse = fuse
    test = MultiModalDataset("../shared/data", modalities=["t1ce", "flair"], preprocess=tr.preprocess, ids=TEST,
                             cache_dir="runs/loso_fastssim/cache")
    tcases = [test.prepared(i) for i in range(len(test))]
    from m2cofs.data.labels import get_convention
    tr.conv_of = {c.id: get_convention(c.meta.label_convention) for c in tcases}
    if epochs > 0:
        tr.net.fusion.requires_grad_(False)
        task = s1.FusionTask(tr.net, loss=tr.fusion_loss(), si_xi=None, train_head=True)
        print("trained parameters:", sum(p.numel() for p in task.trained_parameters()), flush=True)
        tr._run("stage1_fusion", task, 1)
        if path or mode == "seg":
            print("source path weight", head.src_path.weight.flatten().tolist(), head.src_path.bias.tolist())
    score(tr.net, tr, tcases)


if __name__ == "__main__":
    main()
