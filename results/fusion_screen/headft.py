"""Scratch (not shipped): train only the fusion head ψ on a finished run's unified features F(θU)
(or θS's), everything else frozen; write a unified model with that head.
  python headft.py SRC_RUN OUT EPOCHS {u|s} [--set k=v ...]"""
import shutil, sys
from pathlib import Path

import torch

from m2cofs.training.options import TrainOptions
from m2cofs.training.pipeline import Trainer
from m2cofs.training import stage1_independent as s1

def main():
    src, out, epochs, feats = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    extra = sys.argv[5:]
    import json
    cases = json.loads((src / "run.json").read_text())["cases"]
    (out / "stages").mkdir(parents=True, exist_ok=True)
    for f in (src / "stages").glob("*.safetensors"):
        shutil.copy(f, out / "stages" / f.name)
    opts = TrainOptions(data="../shared/data", out=str(out), overrides=[f"train.epochs.stage1_fusion={epochs}", *extra],
                        stages=[3], modalities=["t1ce", "flair"], include=cases,
                        cache_dir="runs/loso_fastssim/cache", progress=False)
    tr = Trainer(opts)
    for st, stage in enumerate((tr.stage0, tr.stage1, tr.stage2, tr.stage3)):
        tr.results = stage(False, tr.results)
    if feats == "s":
        tr.net.load_fusion_state(tr.results.theta_s)
    tr.net.fusion.requires_grad_(False)
    task = s1.FusionTask(tr.net, loss=tr.fusion_loss(), si_xi=None, train_head=True)
    print("trained parameters:", sum(p.numel() for p in task.trained_parameters()))
    tr._run("stage1_fusion", task, 1)
    tr.net.load_fusion_state(tr.results.theta_u)
    tr.write_model("unified_headft.ckpt", "unified", ["fusion", "segmentation"], "theta_U", tr.results.theta_u,
                   fusion_head=tr.net.fusion_head.state_dict(), seg_head=tr.net.seg_head.state_dict())
    print("wrote", out / "unified_headft.ckpt")


if __name__ == "__main__":
    main()
