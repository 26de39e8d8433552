"""The fusion path's training step with the structure term computed two ways, side by side.

    python benchmarks/fusion_step.py            # lite's fusion loss (L_F + SSIM + retention)

* **MONAI's SSIMLoss**, once per source (one 7³ Gaussian convolution per local moment): what
  ``FusionLoss`` did until 2026-12-07;
* **structure_loss** (``m2cofs.losses``): the same SSIM (value and gradient, tests/test_losses.py)
  with the window split into three 1-D passes and the fused volume's moments shared.

Each: one forward + backward + optimiser step of Stage I's fusion loop (Φ frozen, F and ψ trained)
on a batch of the preset's patches with labels, the median of round-robin repeats (so load from
other processes hits both alike: the *ratio* is the result); the segmentation step beside them
for scale. Random weights: the time of a step does not depend on their values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved  # noqa: E402
from common import med as median  # noqa: E402
from common import ratio_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from monai.losses import SSIMLoss

    from m2cofs.config import load_config
    from m2cofs.losses import FusionLoss
    from m2cofs.models.network import M2CoFSNet
    from m2cofs.training.stage1_independent import FusionTask, SegmentationTask

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.preset)
    roi, b = tuple(cfg.data.patch_size), cfg.data.batch_size
    net = M2CoFSNet(2, 3, cfg.model, roi)
    for p in net.encoders.parameters():
        p.requires_grad_(False)
    net.encoders.eval()
    x = torch.rand(b, 2, *roi)
    y = (torch.rand(b, 3, *roi) > 0.8).float()
    y[:, 0] *= y[:, 2]  # ET inside WT, as real labels
    has = torch.ones(b)

    import m2cofs.losses as losses

    monai_ssim = SSIMLoss(spatial_dims=3, data_range=1.0, win_size=7)

    def monai_structure(fused, sources):
        return sum(monai_ssim(fused, sources[:, i: i + 1]) for i in range(sources.shape[1]))

    fusion = FusionTask(net, FusionLoss.from_train(cfg.train, ["t1ce", "flair"], ["ET", "TC", "WT"]))
    seg = SegmentationTask(net, seg_loss=cfg.train.seg_loss)

    def stepper(task, structure=None):
        opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)

        def step():
            saved = losses.structure_loss
            if structure is not None:
                losses.structure_loss = structure  # what FusionLoss calls
            try:
                opt.zero_grad(set_to_none=True)
                loss, _ = task(x, y, has)
                loss.backward()
                opt.step()
            finally:
                losses.structure_loss = saved
        return step

    fns = {"fusion step, MONAI SSIMLoss per source": stepper(fusion, monai_structure),
           "fusion step, structure_loss (separable)": stepper(fusion),
           "segmentation step (for scale)": stepper(seg)}
    med = {k: median(v) for k, v in interleaved(fns, args.repeats).items()}  # one warm-up each
    print(f"{args.preset}: patch {roi}, batch {b}, 2 modalities, {args.threads} threads; median of {args.repeats} "
          "round-robin repeats")
    print(ratio_table(med, "fusion step, MONAI SSIMLoss per source", ("step", "seconds", "ratio to the MONAI-SSIM fusion step")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
