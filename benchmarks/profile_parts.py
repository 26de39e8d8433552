"""Where a window's time goes: each part of the network (encoders Φ, F, ψ, φ) timed alone in
both memory layouts, then torch.profiler's top operators for the whole network.

    python benchmarks/profile_parts.py                 # lite, one window batch, 2 threads
    python benchmarks/profile_parts.py --preset paper --threads 16

This is the profile that the speed work in the README's *Performance* section started from.
Random weights: the time of a forward pass does not depend on their values.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def median_ms(fn, x, repeats: int) -> float:
    with torch.inference_mode():
        fn(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    from monai.networks.nets import SegResNet
    from torch.profiler import ProfilerActivity, profile

    from m2cofs.config import load_config
    from m2cofs.models.network import M2CoFSNet

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--modalities", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, as for m2cofs train (repeatable), e.g. model.seg_head=segresnet")
    ap.add_argument("--top", type=int, default=15, help="rows of the operator table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.preset, overrides=args.set)
    roi = tuple(cfg.data.patch_size)
    batch = cfg.inference.sw_batch_size
    plain = M2CoFSNet(args.modalities, 3, cfg.model, roi).eval()
    nets = {"contiguous": plain, "channels_last_3d": copy.deepcopy(plain).to(memory_format=torch.channels_last_3d)}
    layouts = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
    x = torch.rand(batch, args.modalities, *roi)
    with torch.inference_mode():
        feats = plain.encode(x)
        z = plain.fusion(feats)
    peer = SegResNet(spatial_dims=3, in_channels=args.modalities, out_channels=3, init_filters=16).eval()
    parts = {
        "encoders Φ (all)": (lambda n: n.encode, x),
        "F (fusion module)": (lambda n: n.fusion, feats),
        "F, concatenating form (before)": (lambda n: n.fusion.forward_concat, feats),
        "ψ (fusion head)": (lambda n: n.fusion_head, z),
        f"φ ({cfg.model.seg_head} head)": (lambda n: n.seg_head, z),
        "whole network": (lambda n: n, x),
        "SegResNet-16 (reference)": (lambda n: peer, x),
    }
    print(f"{args.preset}: window {roi}, batch {batch}, {args.modalities} modalities, {args.threads} threads; "
          f"median of {args.repeats}, ms")
    print(f"| part | {' | '.join(nets)} |\n| --- | --- | --- |")
    for name, (get, inp) in parts.items():
        row = []
        for layout, net in nets.items():
            if name.startswith("SegResNet"):
                peer.to(memory_format=layouts[layout])
            row.append(median_ms(get(net), inp.contiguous(memory_format=layouts[layout]), args.repeats))
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in row) + " |")
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        nets["channels_last_3d"](x.contiguous(memory_format=torch.channels_last_3d))
    print("\nchannels_last_3d, whole network, top operators by own time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
