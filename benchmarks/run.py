#!/usr/bin/env python
"""m2cofs performance benchmarks — one command, one table.

    python benchmarks/run.py            # everything (about an hour on 2 CPU cores)
    python benchmarks/run.py --quick    # the same measurements, fewer repeats, no preset training (~10 min)
    python benchmarks/run.py --only unified,peer --threads 2

Writes ``benchmarks/results/<date>-<machine>.json`` and ``.md`` and prints the table. What each
benchmark measures, and how, is in ``benchmarks/README.md``. Ratios are measured side by side
in one process (round-robin repeats, medians); nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CACHE, MODALITIES, REAL_DATA, CpuWatch, interleaved, machine_info, machine_slug, matmul_gflops,  # noqa: E402
                    med, peak_rss_mib, run_measured, thread_env, write_synthetic_case, write_untrained_models)

BENCHMARKS = ("training", "unified", "peer", "memory", "presets")
TRAIN_IDS = ["brats2013_pat0003", "brats2013_pat0004", "brats2013_pat0005"]
TEST_ID = "brats2013_pat0006"
SHORT = [f"train.epochs.stage{i}=1" for i in range(4)]  # the short lite run the inference benchmarks use


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ============================================================================ children
def child_train(args) -> int:
    """Train in this process (so its peak RSS is the training's) and report per-stage loop
    timings: ``m2cofs train`` with run_loop wrapped to keep each StageResult."""
    import m2cofs.training.pipeline as pl

    results = []
    orig_loop = pl.run_loop

    def run_loop(name, *a, **k):
        r = orig_loop(name, *a, **k)
        results.append({"stage": name, "steps": r.steps, "seconds": r.seconds, "data_seconds": r.data_seconds,
                        "step_seconds": r.step_seconds, "voxels": r.voxels, "last_loss": r.last_loss})
        return r

    pl.run_loop = run_loop
    if args.budget_seconds:
        per_loop = args.budget_seconds / 6  # stage 0, I (two), II (two), III
        orig_settings = pl.Trainer.loop_settings
        pl.Trainer.loop_settings = lambda self, stage: dataclasses.replace(orig_settings(self, stage), max_seconds=per_loop)
    opts = pl.TrainOptions(data=str(REAL_DATA), out=args.out, preset=args.preset, overrides=list(args.set or []),
                           include=TRAIN_IDS, overwrite=True, progress=False, modalities=MODALITIES,
                           cache_dir=str(CACHE / f"prep-{args.preset}"))
    t = time.perf_counter()
    pl.train(opts)
    out = {"seconds": time.perf_counter() - t, "peak_rss_mib": peak_rss_mib(), "stages": results}
    Path(args.result).write_text(json.dumps(out))
    return 0


def child_window_memory(args) -> int:
    """Peak RSS of predict_array alone on a model-grid volume of ``--shape`` (the sliding window's
    memory, without loading files or the original grid)."""
    import numpy as np
    import torch

    from m2cofs.inference import load_model, predict_array

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    shape = [int(s) for s in args.shape.split(",")]
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    predict_array(model, x[:, :64, :64, :32])  # warm up (allocator, one-time inits)
    base = _rss_now()
    t = time.perf_counter()
    predict_array(model, x)
    dt = time.perf_counter() - t
    print("BENCH " + json.dumps({"base_mib": base, "peak_rss_mib": peak_rss_mib(), "seconds": dt,
                                 "input_mib": x.nbytes / 2**20}))
    return 0


def _rss_now() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(args_list: list[str], threads: int, timeout: float | None = None) -> dict:
    import subprocess

    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args_list], env=thread_env(threads),
                          capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args_list)} failed:\n{proc.stderr[-3000:]}")
    return {}


# ============================================================================ context
class Ctx:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.threads = args.threads
        self.repeats = 2 if args.quick else 4
        self._cases: dict = {}
        self.run_dir = Path(args.run) if args.run else CACHE / "run-lite-short"
        self.training_info: dict | None = None

    def case(self, preset: str, case_id: str = TEST_ID):
        """The real test case, preprocessed as ``preset`` does (cached)."""
        key = (preset, case_id)
        if key not in self._cases:
            from m2cofs.config import load_config
            from m2cofs.data import MultiModalDataset, PreprocessConfig

            cfg = load_config(preset)
            pre = PreprocessConfig(spacing=cfg.data.spacing, intensity=cfg.data.intensity)
            ds = MultiModalDataset(str(REAL_DATA), modalities=MODALITIES, preprocess=pre, ids=[case_id],
                                   cache_dir=str(CACHE / f"prep-{preset}"), load_labels=False)
            self._cases[key] = ds.prepared(0)
        return self._cases[key]

    def ensure_run(self) -> Path:
        """A finished lite run (unified + both specialists): --run, or a short one trained here."""
        if (self.run_dir / "unified.ckpt").exists() and (self.run_dir / "seg_specialist.ckpt").exists():
            return self.run_dir
        log(f"training a short lite run into {self.run_dir} (1 epoch per stage)")
        self.training_info = train_child("lite", self.run_dir, SHORT, self.threads)
        return self.run_dir


def train_child(preset: str, out: Path, overrides: list[str], threads: int, budget_seconds: float | None = None) -> dict:
    result = CACHE / f"train-{preset}-{os.getpid()}.json"
    argv = ["--child", "train", "--preset", preset, "--out", str(out), "--result", str(result)]
    for o in overrides:
        argv += ["--set", o]
    if budget_seconds:
        argv += ["--budget-seconds", str(budget_seconds)]
    _child(argv, threads)
    info = json.loads(result.read_text())
    result.unlink()
    return info


# ============================================================================ 5. training
def bench_training(ctx: Ctx) -> dict:
    import numpy as np

    from m2cofs.config import load_config
    from m2cofs.data import MultiModalDataset, PreprocessConfig
    from m2cofs.data.labels import get_convention
    from m2cofs.training.patches import PatchDataset

    out: dict = {}
    # preprocessing: parallel spawn workers, then the cache
    cfg = load_config("lite")
    pre = PreprocessConfig(spacing=cfg.data.spacing, intensity=cfg.data.intensity)
    cache = CACHE / "prep-bench"
    shutil.rmtree(cache, ignore_errors=True)
    ds = MultiModalDataset(str(REAL_DATA), modalities=MODALITIES, preprocess=pre, cache_dir=str(cache))
    workers = min(len(ds.ids), os.cpu_count() or 1)
    t = time.perf_counter()
    ds.prepare_all(workers=1)
    serial = time.perf_counter() - t
    shutil.rmtree(cache, ignore_errors=True)
    ds = MultiModalDataset(str(REAL_DATA), modalities=MODALITIES, preprocess=pre, cache_dir=str(cache))
    t = time.perf_counter()
    cases = ds.prepare_all(workers=workers)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    ds.prepare_all(workers=workers)
    warm = time.perf_counter() - t
    out["preprocess"] = {"cases": len(ds.ids), "workers": workers, "serial_s": serial, "parallel_s": cold,
                         "cached_s": warm}

    # cutting one batch (what the prefetch thread hides)
    patches = PatchDataset(cases, get_convention("brats2013"), cfg.data.patch_size, cfg.data.samples_per_case,
                           cfg.data.foreground_ratio, True, 0, 1)
    t = time.perf_counter()
    n = 16
    for i in range(n):
        patches[i % len(patches)]
    out["batch_cut_s"] = (time.perf_counter() - t) / n * cfg.data.batch_size

    # the stages (this run is also the one the inference benchmarks use)
    if not ctx.args.run:
        shutil.rmtree(ctx.run_dir, ignore_errors=True)
    run_dir = ctx.run_dir if not ctx.args.run else CACHE / "run-lite-training-bench"
    log("training lite, 1 epoch per stage, on 3 real cases")
    info = train_child("lite", run_dir, SHORT, ctx.threads)
    out["train"] = info
    rows = []
    for st in info["stages"]:
        total = st["data_seconds"] + st["step_seconds"]
        rows.append({"stage": st["stage"], "steps": st["steps"], "voxels_per_s": st["voxels"] / total if total else 0,
                     "seconds_per_step": st["step_seconds"] / max(st["steps"], 1),
                     "data_share": st["data_seconds"] / total if total else 0})
    out["stages"] = rows
    out["max_data_share"] = max(r["data_share"] for r in rows)
    out["batch_cut_share_without_overlap"] = float(np.median(
        [out["batch_cut_s"] / (out["batch_cut_s"] + r["seconds_per_step"]) for r in rows]))
    return out


# ============================================================================ 1. unified vs specialists
def bench_unified(ctx: Ctx) -> dict:
    from m2cofs.inference import load_model, predict_array, predict_case

    run = ctx.ensure_run()
    case = ctx.case("lite")
    models = {k: load_model(run / f"{k}.ckpt") for k in ("unified", "fusion_specialist", "seg_specialist")}
    sizes = {k: (run / f"{k}.ckpt").stat().st_size for k in models}
    log("unified vs specialists: predict_case, round-robin")
    t_case = interleaved({k: (lambda m=m: predict_case(m, case)) for k, m in models.items()}, ctx.repeats)
    t_net = interleaved({k: (lambda m=m: predict_array(m, case.image)) for k, m in models.items()}, ctx.repeats)
    tc = {k: med(v) for k, v in t_case.items()}
    tn = {k: med(v) for k, v in t_net.items()}
    costlier = max(("fusion_specialist", "seg_specialist"), key=lambda k: tc[k])
    out = {
        "case": TEST_ID, "original_shape": case.meta.original_shape, "model_grid": case.meta.shape,
        "predict_case_s": tc, "predict_case_all_s": t_case, "network_s": tn,
        "costlier_specialist": costlier,
        "ratio_vs_costlier": tc["unified"] / tc[costlier],
        "ratio_vs_both": tc["unified"] / (tc["fusion_specialist"] + tc["seg_specialist"]),
        "network_ratio_vs_costlier": tn["unified"] / max(tn["fusion_specialist"], tn["seg_specialist"]),
        "checkpoint_bytes": sizes,
        "checkpoint_ratio": sizes["unified"] / max(sizes["fusion_specialist"], sizes["seg_specialist"]),
    }
    if not ctx.quick:  # the CLI, one process per model as a user would run it
        log("unified vs specialists: m2cofs predict, one process each")
        cli = {}
        for k in models:
            dest = CACHE / "cli-pred" / k
            shutil.rmtree(dest, ignore_errors=True)
            r = run_measured(["predict", "--model", str(run / f"{k}.ckpt"), "--input", str(REAL_DATA), "--ids", TEST_ID,
                              "--out", str(dest)], ctx.threads)
            cli[k] = r
        out["cli"] = cli
        out["cli_ratio_vs_both"] = cli["unified"]["seconds"] / (cli["fusion_specialist"]["seconds"] + cli["seg_specialist"]["seconds"])
    return out


# ============================================================================ 2 + 3. peer and FLOP/s
def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def _count_windows(shape, roi, overlap) -> int:
    import torch
    from monai.inferers import sliding_window_inference

    n = [0]

    def pred(p):
        n[0] += p.shape[0]
        return torch.zeros((p.shape[0], 1, *p.shape[2:]))

    sliding_window_inference(torch.zeros((1, 1, *shape)), roi, 4, pred, overlap=overlap)
    return n[0]


def bench_peer(ctx: Ctx) -> dict:
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SegResNet

    from m2cofs.inference import load_model, predict_array

    run = ctx.ensure_run()
    lite = load_model(run / "unified.ckpt")
    case = ctx.case("lite")
    cfg = lite.config
    roi = tuple(cfg.data.patch_size)
    sw = cfg.inference.sw_batch_size
    overlap = cfg.inference.overlap
    torch.manual_seed(0)
    # the peer gets the layout that is faster for it too (channels_last_3d, as predict uses)
    peer = SegResNet(spatial_dims=3, in_channels=len(MODALITIES), out_channels=3, init_filters=16).eval()
    peer.to(memory_format=torch.channels_last_3d)
    x = torch.from_numpy(case.image)[None]

    @torch.inference_mode()
    def run_peer():
        return sliding_window_inference(
            x, roi, sw, lambda p: torch.sigmoid(peer(p.contiguous(memory_format=torch.channels_last_3d))),
            overlap=overlap, mode="gaussian", padding_mode="constant", cval=0.0)

    def run_lite():
        return predict_array(lite, case.image)

    mm_before = matmul_gflops()
    log("lite vs SegResNet-16: same volume, same sliding window, round-robin")
    # and the fused volume alone, with the trunk in every window or once per voxel (trunk="volume")
    times = interleaved({"lite": run_lite, "segresnet16": run_peer,
                         "lite_fusion_window": lambda: predict_array(lite, case.image, tasks=["fusion"]),
                         "lite_fusion_volume": lambda: predict_array(lite, case.image, tasks=["fusion"], trunk="volume")},
                        ctx.repeats + 1)
    mm_after = matmul_gflops()
    t = {k: med(v) for k, v in times.items()}

    windows = _count_windows(case.image.shape[1:], roi, overlap)
    batch = torch.rand(sw, len(MODALITIES), *roi)
    with torch.inference_mode():
        f_lite = _flops(lambda: lite.net(batch)) / sw
        f_peer = _flops(lambda: peer(batch)) / sw
        net_t = {k: min(v) for k, v in interleaved({"lite": lambda: lite.net(batch), "segresnet16": lambda: peer(batch)},
                                                     ctx.repeats + 1).items()}
    matmul = max(mm_before, mm_after)
    rate = f_lite * windows / t["lite"] / 1e9
    return {
        "model_grid": list(case.image.shape[1:]), "roi": list(roi), "overlap": overlap, "sw_batch_size": sw,
        "windows": windows, "seconds": t, "all_seconds": times, "ratio_lite_vs_peer": t["lite"] / t["segresnet16"],
        "ratio_fusion_volume_vs_window": t["lite_fusion_volume"] / t["lite_fusion_window"],
        "gflop_per_window": {"lite": f_lite / 1e9, "segresnet16": f_peer / 1e9},
        "params": {"lite": sum(p.numel() for p in lite.net.parameters() if True),
                   "segresnet16": sum(p.numel() for p in peer.parameters())},
        "matmul_gflops": matmul, "matmul_gflops_before_after": [mm_before, mm_after],
        "lite_gflops_full_volume": rate, "flops_ratio": rate / matmul,
        "peer_gflops_full_volume": f_peer * windows / t["segresnet16"] / 1e9,
        "network_only_gflops": {"lite": f_lite * sw / net_t["lite"] / 1e9, "segresnet16": f_peer * sw / net_t["segresnet16"] / 1e9},
    }


# ============================================================================ 4. memory
MEM_SIZES = [(128, 128, 128), (240, 240, 155), (320, 320, 320)]
BIG = (512, 512, 300)


def bench_memory(ctx: Ctx) -> dict:
    run = ctx.ensure_run()
    model = run / "unified.ckpt"
    sizes = MEM_SIZES + ([] if ctx.quick else [BIG])
    rows = []
    for shape in sizes:
        tag = "x".join(map(str, shape))
        data = CACHE / "synth" / tag
        if not (data / f"s{tag}").is_dir():
            log(f"writing a synthetic {tag} case (1 mm)")
            write_synthetic_case(data, f"s{tag}", shape)
        dest = CACHE / "mem-pred" / tag
        shutil.rmtree(dest, ignore_errors=True)
        log(f"memory: m2cofs predict on {tag}")
        whole = run_measured(["predict", "--model", str(model), "--input", str(data), "--out", str(dest)], ctx.threads)
        grid = [s // 2 for s in shape]  # lite works at 2 mm
        window = _child(["--child", "window-memory", "--model", str(model), "--shape", ",".join(map(str, grid)),
                         "--threads", str(ctx.threads)], ctx.threads)
        voxels = shape[0] * shape[1] * shape[2]
        rows.append({"shape": list(shape), "voxels": voxels, "predict_peak_rss_mib": whole["peak_rss_mib"],
                     "predict_seconds": whole["seconds"], "model_grid": grid,
                     "window_base_mib": window["base_mib"], "window_peak_rss_mib": window["peak_rss_mib"],
                     "window_growth_mib": window["peak_rss_mib"] - window["base_mib"],
                     "window_seconds": window["seconds"]})
    a, b = rows[0], rows[-1]
    slope = (b["predict_peak_rss_mib"] - a["predict_peak_rss_mib"]) * 2**20 / (b["voxels"] - a["voxels"])
    wslope = (b["window_growth_mib"] - a["window_growth_mib"]) * 2**20 / (b["voxels"] - a["voxels"])
    return {"rows": rows, "predict_bytes_per_voxel": slope, "window_bytes_per_voxel": wslope}


# ============================================================================ 6. presets
def _parts(net) -> dict:
    return {k: sum(p.numel() for p in getattr(net, k).parameters())
            for k in ("encoders", "fusion", "fusion_head", "seg_head")}


def bench_presets(ctx: Ctx) -> dict:
    import torch

    from m2cofs.config import load_config
    from m2cofs.inference import prepare_for_inference
    from m2cofs.models import M2CoFSNet

    out: dict = {}
    for preset in ("lite", "paper"):
        cfg = load_config(preset)
        roi = tuple(cfg.data.patch_size)
        torch.manual_seed(0)
        net = prepare_for_inference(M2CoFSNet(len(MODALITIES), 3, cfg.model, roi))  # as predict runs it
        parts = _parts(net)
        sw = cfg.inference.sw_batch_size
        batch = torch.rand(sw, len(MODALITIES), *roi).contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            flops = _flops(lambda: net(batch)) / sw
            log(f"{preset}: one window batch")
            t_win = min(interleaved({"w": lambda: net(batch)}, 1 if preset == "paper" else ctx.repeats)["w"]) / sw
        case = ctx.case(preset)
        windows = _count_windows(case.image.shape[1:], roi, cfg.inference.overlap)
        row = {"params": sum(parts.values()), "params_by_part": parts, "roi": list(roi), "spacing": cfg.data.spacing,
               "model_grid": list(case.image.shape[1:]), "windows": windows, "gflop_per_window": flops / 1e9,
               "seconds_per_window": t_win, "estimated_volume_seconds": t_win * windows}
        paths = write_untrained_models(CACHE / f"untrained-{preset}", preset)
        row["checkpoint_bytes"] = paths["unified"].stat().st_size
        out[preset] = row
        del net
    # the lite run's model on the real case (a paper volume takes many minutes on a CPU: it is
    # predicted only after its budget training, in the full run)
    run = ctx.ensure_run()
    dest = CACHE / "preset-pred" / "lite"
    shutil.rmtree(dest, ignore_errors=True)
    log("lite: m2cofs predict on the real test case")
    r = run_measured(["predict", "--model", str(run / "unified.ckpt"), "--input", str(REAL_DATA), "--ids", TEST_ID,
                      "--out", str(dest), "--no-preview"], ctx.threads)
    out["lite"]["predict_seconds"] = r["seconds"]
    out["lite"]["predict_peak_rss_mib"] = r["peak_rss_mib"]

    if not ctx.quick:
        budget = ctx.args.budget_minutes * 60
        out["budget_minutes"] = ctx.args.budget_minutes
        for preset in ("lite", "paper"):
            run = CACHE / f"budget-{preset}"
            log(f"{preset}: training for a {ctx.args.budget_minutes:.0f}-minute budget on {len(TRAIN_IDS)} real cases")
            many = [f"train.epochs.stage{i}=1000" for i in range(4)]
            if preset == "paper":
                many.append("data.workers=0")
            info = train_child(preset, run, many, ctx.threads, budget_seconds=budget)
            steps = {s["stage"]: s["steps"] for s in info["stages"]}
            pred = CACHE / f"budget-{preset}-pred"
            rep = CACHE / f"budget-{preset}-report"
            shutil.rmtree(pred, ignore_errors=True)
            shutil.rmtree(rep, ignore_errors=True)
            log(f"{preset}: predict + evaluate the held-out case")
            p = run_measured(["predict", "--model", str(run / "unified.ckpt"), "--input", str(REAL_DATA), "--ids", TEST_ID,
                              "--out", str(pred), "--no-preview"], ctx.threads)
            run_measured(["evaluate", "--pred", str(pred), "--data", str(REAL_DATA), "--out", str(rep), "--no-report",
                          "--quiet"], ctx.threads)
            summary = json.loads((rep / "summary.json").read_text())
            out[preset]["budget"] = {"train_seconds": info["seconds"], "train_peak_rss_mib": info["peak_rss_mib"],
                                     "steps": steps, "predict_seconds": p["seconds"], "predict_peak_rss_mib": p["peak_rss_mib"],
                                     "metrics": _metrics(summary)}
            if preset == "paper":
                out[preset]["predict_seconds"] = p["seconds"]
                out[preset]["predict_peak_rss_mib"] = p["peak_rss_mib"]
    return out


def _metrics(summary: dict) -> dict:
    """Dice per region and the paper's main fusion metrics from ``m2cofs evaluate``'s summary."""
    keep = ("Dice/", "/Q_MI", "/Q_TE", "/Q_NCIE", "/Q_G", "/VIF", "/SSIM")
    return {col: e["mean"] for col, e in summary.get("metrics", {}).items()
            if any(k in col for k in keep) and (col.startswith("Dice/") or col.startswith("volume/"))}


# ============================================================================ report
def fmt(x, nd=2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(res: dict) -> str:
    b = res["benchmarks"]
    lines = ["| # | benchmark | result | target | met |", "| --- | --- | --- | --- | --- |"]

    def add(num, name, result, target, ok):
        lines.append(f"| {num} | {name} | {result} | {target} | {'yes' if ok else 'no' if ok is not None else '—'} |")

    if "unified" in b:
        u = b["unified"]
        tc = u["predict_case_s"]
        add(1, "unified vs two specialists (predict_case, real 240×240×155)",
            f"unified {tc['unified']:.2f} s; fusion spec. {tc['fusion_specialist']:.2f} s; seg spec. {tc['seg_specialist']:.2f} s; "
            f"ratio to the costlier {u['ratio_vs_costlier']:.3f}, to both {u['ratio_vs_both']:.2f}",
            "≤ 1.1× costlier", u["ratio_vs_costlier"] <= 1.1)
        add(1, "checkpoint size", f"unified {u['checkpoint_bytes']['unified'] / 2**20:.2f} MiB; ratio {u['checkpoint_ratio']:.3f}",
            "≤ 1.1× larger", u["checkpoint_ratio"] <= 1.1)
    if "peer" in b:
        p = b["peer"]
        add(2, "lite (fuse + segment) vs SegResNet-16 (segment), same sliding window",
            f"lite {p['seconds']['lite']:.2f} s, SegResNet {p['seconds']['segresnet16']:.2f} s; ratio {p['ratio_lite_vs_peer']:.2f} "
            f"({p['gflop_per_window']['lite']:.1f} vs {p['gflop_per_window']['segresnet16']:.1f} GFLOP/window)",
            "≤ 1.0", p["ratio_lite_vs_peer"] <= 1.0)
        if "lite_fusion_volume" in p["seconds"]:
            add(2, "lite, fused volume alone: `--trunk volume` (Φ, F, ψ once per voxel) vs the default window",
                f"{p['seconds']['lite_fusion_volume']:.2f} s vs {p['seconds']['lite_fusion_window']:.2f} s; "
                f"ratio {p['ratio_fusion_volume_vs_window']:.2f} (segmentation this way is much worse: not a way to target 2)",
                "—", None)
        add(3, "model FLOP/s ÷ matmul FLOP/s (full volume)",
            f"{p['lite_gflops_full_volume']:.1f} / {p['matmul_gflops']:.1f} GFLOP/s = {p['flops_ratio']:.2f} "
            f"(network alone {p['network_only_gflops']['lite']:.1f})", "≥ 0.5", p["flops_ratio"] >= 0.5)
    if "memory" in b:
        m = b["memory"]
        rows = "; ".join(f"{'×'.join(map(str, r['shape']))}: {r['predict_peak_rss_mib']:.0f} MiB "
                         f"(window {r['window_growth_mib']:.0f})" for r in m["rows"])
        add(4, "peak RSS, m2cofs predict (lite)", rows + f"; slope {m['predict_bytes_per_voxel']:.1f} B/voxel, "
            f"sliding window {m['window_bytes_per_voxel']:.2f} B/voxel",
            "bounded by the window", m["window_bytes_per_voxel"] < 8)
    if "training" in b:
        t = b["training"]
        st = "; ".join(f"{r['stage']}: {r['voxels_per_s'] / 1e3:.0f}k vox/s, data {100 * r['data_share']:.1f}%" for r in t["stages"])
        add(5, "training voxels/s, data wait", st, "data < 10%", t["max_data_share"] < 0.10)
        pp = t["preprocess"]
        add(5, "preprocessing (4 real cases)", f"serial {pp['serial_s']:.1f} s, {pp['workers']} processes {pp['parallel_s']:.1f} s, "
            f"cached {pp['cached_s']:.2f} s", "parallel, cached", pp["cached_s"] < pp["parallel_s"])
    if "presets" in b:
        for preset in ("lite", "paper"):
            r = b["presets"][preset]
            txt = (f"{r['params'] / 1e6:.2f} M params, {r['gflop_per_window']:.0f} GFLOP/window, {r['seconds_per_window']:.2f} s/window, "
                   f"{r['windows']} windows")
            if "predict_seconds" in r:
                txt += f"; predict {r['predict_seconds']:.0f} s, {r['predict_peak_rss_mib']:.0f} MiB"
            else:
                txt += f"; predict ≈ {r['estimated_volume_seconds']:.0f} s (estimated)"
            if "budget" in r:
                bb = r["budget"]
                txt += f"; {b['presets']['budget_minutes']:.0f}-min budget: {sum(bb['steps'].values())} steps, " + \
                    ", ".join(f"{k} {v:.3f}" for k, v in bb["metrics"].items())
            add(6, f"preset {preset}", txt, "—", None)
    return "\n".join(lines)


def write_results(res: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{res['date']}-{machine_slug(res['machine'])}" + ("-quick" if res["quick"] else "")
    if set(res["benchmarks"]) != set(BENCHMARKS):  # a subset (--only) does not overwrite a whole run
        stem += "-" + "-".join(res["benchmarks"])
    (out_dir / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    m = res["machine"]
    md = [f"# m2cofs benchmarks, {res['date']}{' (quick)' if res['quick'] else ''}", "",
          f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['simd'])}), {m['memory_gib']} GiB; "
          f"torch {m['torch']} with {m['torch_threads']} threads, MONAI {m['monai']}, Python {m['python']}; "
          f"GPU: {m['gpu'] or 'none'}.",
          f"Load average before / after: {m['load_before']:.2f} / {res.get('load_after', float('nan')):.2f}"
          f" ({res.get('idle_note', '')}). Wall time {res['seconds'] / 60:.1f} min.", "",
          "Command: `" + res["command"] + "`", "", table(res), "",
          "Raw numbers: the JSON file next to this one."]
    (out_dir / f"{stem}.md").write_text("\n".join(md) + "\n")
    return out_dir / f"{stem}.md"


FUNCS = {"training": bench_training, "unified": bench_unified, "peer": bench_peer, "memory": bench_memory,
         "presets": bench_presets}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no 512×512×300 case, no preset training")
    ap.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16), help="torch threads (default: all cores)")
    ap.add_argument("--run", default=None, help="a finished lite run folder to take the models from (default: train a short one)")
    ap.add_argument("--budget-minutes", type=float, default=15.0, help="training budget per preset for benchmark 6")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="wait up to this long for the 1-minute load average to fall below 0.5 before starting")
    # children (internal)
    ap.add_argument("--child", choices=("train", "window-memory"), help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="lite", help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--budget-seconds", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.child == "train":
        return child_train(args)
    if args.child == "window-memory":
        return child_window_memory(args)

    import torch

    if not REAL_DATA.is_dir():
        print(f"real data not found at {REAL_DATA}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    os.environ.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    CACHE.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.wait_idle
    while os.getloadavg()[0] >= 0.5 and time.time() < deadline:
        time.sleep(15)
    info = machine_info(args.threads)
    busy = info["load_before"] >= 0.5
    log(f"machine: {info['cpu']}, {info['cores']} cores, {args.threads} threads, load {info['load_before']:.2f}"
        + (" — BUSY: other processes share the CPUs; absolute times are inflated" if busy else ""))
    res = {"date": _dt.date.today().isoformat(), "quick": args.quick, "machine": info,
           "command": "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "benchmarks": {}}
    ctx = Ctx(args)
    t0 = time.time()
    wanted = [b.strip() for b in args.only.split(",") if b.strip()]
    whole = CpuWatch()
    res["others_cpu_share"] = {}
    for name in BENCHMARKS:
        if name in wanted:
            log(f"=== {name}")
            watch = CpuWatch()
            res["benchmarks"][name] = FUNCS[name](ctx)
            res["others_cpu_share"][name] = watch.others_share()
            log(f"{name}: other processes used {100 * res['others_cpu_share'][name]:.0f}% of the CPUs meanwhile")
    res["seconds"] = time.time() - t0
    res["load_after"] = os.getloadavg()[0]
    share = whole.others_share()
    res["others_cpu_share"]["all"] = share
    res["idle_note"] = (f"other processes used {100 * share:.0f}% of the CPUs during the run: "
                        + ("machine otherwise idle" if share < 0.05 else "SHARED machine, times inflated"))
    path = write_results(res, Path(args.out))
    print()
    print(table(res))
    print(f"\nwritten: {path} (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
