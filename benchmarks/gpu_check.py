#!/usr/bin/env python
"""The whole GPU path in a few minutes: train a few lite steps of every stage (AMP, channels_last_3d,
cuDNN autotune — what ``m2cofs train`` does on CUDA), predict a full 240×240×155 volume, and print
throughput and peak memory with the card's name. Run through ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_check.py                    # CUDA; exits 3 when there is none
    python benchmarks/gpu_check.py --device cpu --steps 1 --size 48   # the same path on a CPU (a smoke test)

Data: the real BraTS-2013 cases in ``../shared/data`` when present, else synthetic phantoms made
here (``m2cofs synth``). The result is printed as a table and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODALITIES, REAL_DATA, machine_info, peak_rss_mib, write_synthetic_case  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--steps", type=int, default=8, help="training steps per stage (default 8)")
    ap.add_argument("--size", type=int, default=128, help="synthetic training cases' size when there is no real data")
    ap.add_argument("--volume", default="240,240,155", help="the full volume predicted (synthetic, 1 mm)")
    ap.add_argument("--out", default=None, help="JSON result file (default: benchmarks/results/gpu-<card>.json)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); use --device cpu for a smoke test",
              file=sys.stderr)
        return 3
    import m2cofs.training.pipeline as pl
    from m2cofs.cli import main as m2cofs_main
    from m2cofs.data import MultiModalDataset, PreprocessConfig
    from m2cofs.inference import load_model, predict_case
    from m2cofs.devices import autocast_dtype

    dev = torch.device(args.device)
    card = torch.cuda.get_device_name(0) if dev.type == "cuda" else machine_info(torch.get_num_threads())["cpu"]
    work = Path(args.work or tempfile.mkdtemp(prefix="m2cofs-gpu-check-"))
    t_all = time.perf_counter()

    # data
    if REAL_DATA.is_dir():
        data, include = REAL_DATA, ["brats2013_pat0003", "brats2013_pat0004", "brats2013_pat0005"]
    else:
        data, include = work / "data", None
        if not data.is_dir():
            assert m2cofs_main(["synth", str(data), "--cases", "3", "--size", str(args.size), "--seed", "0",
                                "--modalities", ",".join(MODALITIES)]) == 0

    # training: every stage, a few steps each, with the loop's own timings
    stages: list[dict] = []
    orig_loop = pl.run_loop

    def run_loop(name, task, dataset, settings, *a, **k):
        settings = dataclasses.replace(settings, epochs=1, max_seconds=None, stop_after_steps=None)
        dataset.samples_per_case = max(1, -(-args.steps * settings.batch_size // max(len(dataset.cases), 1)))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = orig_loop(name, task, dataset, settings, *a, **k)
        total = r.data_seconds + r.step_seconds
        stages.append({"stage": name, "steps": r.steps, "seconds": round(r.seconds, 2),
                       "voxels_per_s": r.voxels / total if total else 0.0, "data_share": r.data_share,
                       "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None})
        return r

    pl.run_loop = run_loop
    try:
        opts = pl.TrainOptions(data=str(data), out=str(work / "run"), preset="lite", include=include, overwrite=True,
                               progress=False, modalities=MODALITIES, device=args.device, cache_dir=str(work / "cache"))
        t = time.perf_counter()
        pl.train(opts)
        train_s = time.perf_counter() - t
    finally:
        pl.run_loop = orig_loop

    # a full volume, as a user predicts it
    shape = tuple(int(s) for s in args.volume.split(","))
    vol = work / "volume"
    if not (vol / "full").is_dir():
        write_synthetic_case(vol, "full", shape)
    model = load_model(work / "run" / "unified.ckpt", dev)
    pre = PreprocessConfig(spacing=model.config.data.spacing, intensity=model.config.data.intensity)
    case = MultiModalDataset(str(vol), modalities=MODALITIES, preprocess=pre,
                             load_labels=False, cache_dir=str(work / "cache-vol")).prepared(0)
    predict_case(model, case, device=dev)  # warm-up: cuDNN autotuning, allocator
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    pred = predict_case(model, case, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    predict_s = time.perf_counter() - t
    assert pred.fused is not None and pred.label is not None and pred.fused.shape == shape

    res = {"device": card, "torch": torch.__version__, "cuda": torch.version.cuda,
           "autocast": str(autocast_dtype(dev)).replace("torch.", ""), "data": str(data), "train_seconds": train_s,
           "stages": stages, "predict_volume": list(shape), "predict_seconds": predict_s,
           "predict_peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
           "peak_rss_mib": peak_rss_mib(), "total_seconds": time.perf_counter() - t_all}
    print(f"\nm2cofs GPU check on {card} (torch {res['torch']}, CUDA {res['cuda']}, autocast {res['autocast']})")
    print("| stage | steps | voxels/s | data wait | peak GPU MiB |\n| --- | --- | --- | --- | --- |")
    for s in stages:
        gpu = f"{s['peak_gpu_mib']:.0f}" if s["peak_gpu_mib"] is not None else "—"
        print(f"| {s['stage']} | {s['steps']} | {s['voxels_per_s'] / 1e6:.2f} M | {100 * s['data_share']:.1f}% | {gpu} |")
    gpu = f", peak GPU {res['predict_peak_gpu_mib']:.0f} MiB" if res["predict_peak_gpu_mib"] is not None else ""
    print(f"predict {'×'.join(map(str, shape))} (fused + segmentation, original grid): {predict_s:.2f} s{gpu}; "
          f"peak RSS {res['peak_rss_mib']:.0f} MiB; whole check {res['total_seconds']:.0f} s")
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / (
        "gpu-" + "".join(c if c.isalnum() else "-" for c in card).strip("-").lower() + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
