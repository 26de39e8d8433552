"""Helpers shared by the benchmarks: machine description, model files, synthetic volumes, timing.

Nothing here is imported by the package; the benchmarks use m2cofs only through its public API
(``load_model``, ``predict_case``, ``predict_array``, ``m2cofs predict`` / ``train`` / ``evaluate``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"
REAL_DATA = ROOT.parent / "shared" / "data" / "brats2013"
MODALITIES = ["t1ce", "flair"]


# ------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info(threads: int) -> dict:
    import torch

    flags = cpu_flags()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "memory_gib": mem,
        "torch_threads": threads,
        "torch": torch.__version__,
        "monai": __import__("monai").__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_before": os.getloadavg()[0],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def machine_slug(info: dict) -> str:
    cpu = "".join(ch if ch.isalnum() else "-" for ch in info["cpu"]).strip("-").lower()
    while "--" in cpu:
        cpu = cpu.replace("--", "-")
    return f"{cpu}-{info['cores']}c"


# ------------------------------------------------------------------------------------ timing
def best_of(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time several functions round-robin (ABCABC...), so a load change hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t)
    return out


def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def ratio_table(times: dict[str, float], ref: str, headers: tuple[str, str, str], digits: int = 3,
                labels: dict[str, str] | None = None) -> str:
    """A markdown table of ``times`` (seconds per row, ``digits`` decimals) and each one's ratio to
    ``times[ref]``; ``labels`` name the rows (default: their keys)."""
    rows = [f"| {' | '.join(headers)} |", "| --- | --- | --- |"]
    rows += [f"| {(labels or {}).get(k, k)} | {v:.{digits}f} | {v / times[ref]:.2f} |" for k, v in times.items()]
    return "\n".join(rows)


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an n×n fp32 matrix product (best of ``repeats``), on the current threads."""
    import torch

    a = torch.rand(n, n)
    b = torch.rand(n, n)
    best = min(best_of(lambda: a @ b, repeats))
    return 2 * n**3 / best / 1e9


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): VmHWM, the high-water mark of its own address
    space. Not ``ru_maxrss``: Linux carries that across fork + exec, so a child started by a
    large parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------ models
def model_meta(cfg, kind: str, tasks: list[str], theta: str) -> dict:
    """The sidecar ``m2cofs train`` writes (see training.pipeline._model_meta)."""
    from m2cofs.data.labels import get_convention
    from m2cofs.data.preprocess import PreprocessConfig

    conv = get_convention("brats2013")
    pre = PreprocessConfig(spacing=cfg.data.spacing, intensity=cfg.data.intensity)
    return {"kind": kind, "tasks": tasks, "fusion_weights": theta, "preset": cfg.preset, "config": cfg.to_dict(),
            "modalities": MODALITIES, "label_convention": conv.name, "regions": list(conv.regions),
            "preprocessing": pre.to_dict(), "trained_on": []}


def write_untrained_models(out: Path, preset: str = "lite", overrides: list[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """unified.ckpt, fusion_specialist.ckpt and seg_specialist.ckpt with freshly initialised
    weights, holding the same tensors as the files ``m2cofs train`` writes. For timing and
    memory only (their outputs are meaningless)."""
    import torch

    from m2cofs.checkpoint import save_model_file
    from m2cofs.config import load_config
    from m2cofs.models import M2CoFSNet

    cfg = load_config(preset, overrides=overrides)
    torch.manual_seed(seed)
    net = M2CoFSNet(len(MODALITIES), 3, cfg.model, tuple(cfg.data.patch_size))

    def part(prefix: str, module) -> dict:
        return {f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()}

    enc, fus = part("encoders", net.encoders), part("fusion", net.fusion)
    psi, phi = part("fusion_head", net.fusion_head), part("seg_head", net.seg_head)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "unified": (enc | fus | psi | phi, "unified", ["fusion", "segmentation"], "theta_U"),
        "fusion_specialist": (enc | fus | psi, "fusion_specialist", ["fusion"], "theta_F"),
        "seg_specialist": (enc | fus | phi, "seg_specialist", ["segmentation"], "theta_S"),
    }
    paths = {}
    for name, (tensors, kind, tasks, theta) in files.items():
        paths[name] = save_model_file(out / f"{name}.ckpt", tensors, model_meta(cfg, kind, tasks, theta))
    return paths


# ------------------------------------------------------------------------------------ volumes
def write_synthetic_case(root: Path, case_id: str, shape: tuple[int, int, int], spacing: float = 1.0,
                         seed: int = 0) -> Path:
    """A brain-like two-modality case (t1ce, flair; int16, uncompressed NIfTI) in the BraTS-2021
    layout, written slab by slab so that even 512×512×300 needs little memory to make."""
    import nibabel as nib

    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    affine = np.diag([spacing, spacing, spacing, 1.0])
    centre = np.array(shape) / 2
    radii = np.array(shape) * 0.42
    tumour_c = centre + np.array(shape) * 0.12
    tumour_r = min(shape) * 0.09
    x = (np.arange(X)[:, None] - centre[0]) / radii[0]
    y = (np.arange(Y)[None, :] - centre[1]) / radii[1]
    xt = (np.arange(X)[:, None] - tumour_c[0])
    yt = (np.arange(Y)[None, :] - tumour_c[1])
    for mod, (brain, tumour) in {"t1ce": (500, 900), "flair": (400, 1100)}.items():
        data = np.zeros(shape, dtype=np.int16)
        for z in range(Z):
            zz = (z - centre[2]) / radii[2]
            r2 = x**2 + y**2 + zz**2
            inside = r2 < 1.0
            d_t = np.sqrt(xt**2 + yt**2 + (z - tumour_c[2]) ** 2)
            sl = np.where(inside, brain * (1.0 - 0.3 * r2), 0.0)
            sl = np.where(inside & (d_t < tumour_r), tumour, sl)
            sl = sl + np.where(inside, rng.normal(0, 20, size=(X, Y)), 0.0)
            data[:, :, z] = np.clip(sl, 0, 32000).astype(np.int16)
        img = nib.Nifti1Image(data, affine)
        img.header.set_zooms((spacing,) * 3)
        nib.save(img, str(folder / f"{case_id}_{mod}.nii"))
    return folder


# ------------------------------------------------------------------------------------ processes
def run_measured(argv: list[str], env_threads: int, cwd: Path | None = None, timeout: float | None = None) -> dict:
    """Run ``python -m m2cofs ARGV`` in a fresh process; its wall time and peak RSS (MiB)."""
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from common import peak_rss_mib\n"
        "from m2cofs.cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main({argv!r})\n"
        "dt = time.perf_counter() - t\n"
        "print('BENCH ' + json.dumps({'rc': rc, 'seconds': dt, "
        "'peak_rss_mib': peak_rss_mib()}))\n"
    )
    env = thread_env(env_threads)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            res = json.loads(line[6:])
            if res["rc"] != 0:
                raise RuntimeError(f"m2cofs {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
            return res
    raise RuntimeError(f"m2cofs {' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


# ------------------------------------------------------------------------------------ other load
class CpuWatch:
    """How much CPU other processes used while a block ran: machine busy time from /proc/stat
    minus this process's and its finished children's CPU time, as a share of all cores."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.time(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        try:
            fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except OSError:
            return float("nan")
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def others_share(self) -> float:
        """Share (0–1) of the machine's CPU capacity used by other processes so far."""
        wall = time.time() - self.t0
        other = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, other / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0
