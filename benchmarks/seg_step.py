"""The segmentation path's cost against SegResNet-16, side by side in one process.

    python benchmarks/seg_step.py                        # lite (and the variants below) vs SegResNet-16
    python benchmarks/seg_step.py --variant "unetr=model.seg_head=unetr;model.seg_feature_size=12"
    python benchmarks/seg_step.py --predict              # also a 240×240×155 case, both outputs

Two costs, each a median of round-robin repeats (every variant and the peer take turns, so
load from other processes hits them alike; the *ratios* are the result):

* **training step**: one forward + backward + optimiser step of the segmentation path on a batch of
  the preset's patches (Φ frozen and run without autograd, F and φ trained: what Stage I's
  segmentation loop and Stage II F→S do), against SegResNet-16 (``compare``'s peer: MONAI
  ``SegResNet``, 16 filters, blocks (1, 2, 2, 4)) on the same batch with the same loss;
* **prediction** (``--predict``): the sliding-window pass over a 240×240×155 case resampled to
  the model grid (both outputs for M²-CoFS), against SegResNet-16's pass over the same grid.

Random weights: the time of a step does not depend on their values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, med, ratio_table  # noqa: E402


def _net_and_task(preset: str, sets: list[str], n_mod: int):
    from m2cofs.config import load_config
    from m2cofs.models.network import M2CoFSNet
    from m2cofs.training.stage1_independent import SegmentationTask

    cfg = load_config(preset, overrides=sets)
    net = M2CoFSNet(n_mod, 3, cfg.model, tuple(cfg.data.patch_size))
    for p in net.encoders.parameters():
        p.requires_grad_(False)
    net.encoders.eval()
    task = SegmentationTask(net, seg_loss=cfg.train.seg_loss)
    return cfg, net, task


def _stepper(task, params, x, y, has):
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = task(x, y, has)
        loss.backward()
        opt.step()
    return step


def _predictor(model_fn, grid, roi, n_mod, batch, overlap):
    from monai.inferers import sliding_window_inference

    vol = torch.rand(1, n_mod, *grid).contiguous(memory_format=torch.channels_last_3d)

    def run():
        with torch.inference_mode():
            sliding_window_inference(vol, roi, batch, model_fn, overlap=overlap, mode="gaussian")
    return run


def main(argv: list[str] | None = None) -> int:
    from m2cofs.baselines.peers import PeerTask, build_peer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE;KEY=VALUE",
                    help="an extra configuration to time beside the preset (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--predict", action="store_true", help="also time the prediction of a 240×240×155 case")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_mod = 2
    variants = {args.preset: []}
    for v in args.variant:
        name, _, sets = v.partition("=")
        variants[name] = [s for s in sets.split(";") if s]

    steps, preds = {}, {}
    cfg0 = None
    for name, sets in variants.items():
        cfg, net, task = _net_and_task(args.preset, sets, n_mod)
        cfg0 = cfg0 or cfg
        roi = tuple(cfg.data.patch_size)
        b = cfg.data.batch_size
        x = torch.rand(b, n_mod, *roi).contiguous(memory_format=torch.channels_last_3d)
        y = (torch.rand(b, 3, *roi) > 0.7).float()
        has = torch.ones(b)
        net.to(memory_format=torch.channels_last_3d)
        params = [p for p in net.parameters() if p.requires_grad]
        steps[name] = _stepper(task, params, x, y, has)
        if args.predict:
            grid = tuple(int(round(s * 1.0 / sp)) for s, sp in zip((240, 240, 155), cfg.data.spacing))
            net.eval()
            preds[name] = _predictor(lambda t, n=net: torch.cat(list(n(t).values()), 1), grid, roi, n_mod,
                                     cfg.inference.sw_batch_size, cfg.inference.overlap)
    roi = tuple(cfg0.data.patch_size)
    b = cfg0.data.batch_size
    peer = build_peer("segresnet", n_mod, 3).to(memory_format=torch.channels_last_3d)
    ptask = PeerTask(peer, cfg0.train.seg_loss)
    x = torch.rand(b, n_mod, *roi).contiguous(memory_format=torch.channels_last_3d)
    y = (torch.rand(b, 3, *roi) > 0.7).float()
    steps["SegResNet-16"] = _stepper(ptask, list(peer.parameters()), x, y, torch.ones(b))
    if args.predict:
        grid = tuple(int(round(s / sp)) for s, sp in zip((240, 240, 155), cfg0.data.spacing))
        peer_eval = build_peer("segresnet", n_mod, 3).eval().to(memory_format=torch.channels_last_3d)
        preds["SegResNet-16"] = _predictor(peer_eval, grid, roi, n_mod, cfg0.inference.sw_batch_size,
                                           cfg0.inference.overlap)

    def measure(fns: dict, repeats: int) -> dict:
        return {k: med(v) for k, v in interleaved(fns, repeats).items()}  # one warm-up each

    print(f"{args.preset}: patch {roi}, batch {b}, {n_mod} modalities, {args.threads} threads; "
          f"median of {args.repeats} round-robin repeats")
    st = measure(steps, args.repeats)
    print(ratio_table(st, "SegResNet-16", ("configuration", "training step (s)", "ratio to SegResNet-16"),
                      labels={k: f"{k} {' '.join(variants.get(k, []))}" for k in st}))
    if preds:
        pt = measure(preds, max(1, args.repeats // 2))
        print()
        print(ratio_table(pt, "SegResNet-16", ("configuration", "prediction, 240×240×155 at the model grid (s)", "ratio"),
                          digits=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
