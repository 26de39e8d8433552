"""The generic loop every stage runs: batches → loss → step, with checkpoints, resume, DDP,
a progress bar, a CSV log and a loss-curve PNG.

A stage is a :class:`StageTask` — an ``nn.Module`` whose ``forward(image, target, has_label)``
returns ``(loss, parts)`` and which names the sub-modules it trains. The loop wraps it in
``DistributedDataParallel`` when several processes run, so gradients are averaged across ranks.

Files in ``RUN/`` for a stage called ``name``:

* ``checkpoints/name.pt`` — the in-stage training state (trained weights, optimiser, stage
  extras such as SI accumulators, epoch/batch counters), written atomically every
  ``train.checkpoint_every`` steps and at each epoch's end; loaded with ``weights_only=True``.
* ``logs/name.csv`` and ``logs/name.png`` — one row per step; the loss curves.
* the stage's results, written by the stage itself when the loop returns.

With ``resume=True`` an interrupted stage continues from its last complete checkpoint at the
next batch, and — every patch being a pure function of the seed and its position — ends with
the same weights as a run that was never interrupted.

Speed: the next batch is cut while the current one trains (a background thread when
``workers`` is 0, the DataLoader's worker processes otherwise); the loop counts the time it
waits for data and reports it with the voxel throughput in :class:`StageResult`. Weights and
batches are ``channels_last_3d`` (a lite training step is 1.4× faster in it on a 2-core CPU,
and cuDNN prefers it too). On CUDA the step runs under autocast (bf16 where the card has it,
else fp16 with a gradient scaler) with cuDNN autotuning, batches copied from pinned memory.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from m2cofs.devices import autocast_dtype
from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from m2cofs.training.distributed import DistInfo, all_reduce_mean, barrier
from m2cofs.training.patches import PatchDataset, epoch_batches


class StageTask(nn.Module):
    """A stage's model + loss. Subclasses set ``trained`` (names of sub-modules to optimise)."""

    trained: tuple[str, ...] = ()

    def trained_modules(self) -> dict[str, nn.Module]:
        return {n: getattr(self, n) for n in self.trained}

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.trained_modules().values() for p in m.parameters() if p.requires_grad]

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v.detach().clone() for n, m in self.trained_modules().items() for k, v in m.state_dict().items()}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        for n, m in self.trained_modules().items():
            prefix = f"{n}."
            m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    # hooks (optional)
    def before_optimizer_step(self) -> None:
        """Called after backward, before ``optimizer.step()`` (SI reads the gradients here)."""

    def after_optimizer_step(self) -> None:
        """Called after ``optimizer.step()``."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Additional tensors to checkpoint (e.g. SI accumulators)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`extra_state`."""


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-5
    optimizer: str = "adamw"
    checkpoint_every: int = 50
    seed: int = 0
    workers: int = 0
    progress: bool = True
    amp: bool = False  # bf16 autocast on CUDA only
    stop_after_steps: int | None = None  # for tests: simulate an interruption after this many steps
    max_seconds: float | None = None  # a time budget: the stage ends after the step that exhausts it
    channels_last: bool | None = None  # channels_last_3d weights and batches (None: on CPU and CUDA)
    lr_schedule: str = "constant"  # constant | poly (nnU-Net's: lr · (1 − progress)^0.9)


POLY_POWER = 0.9


def scheduled_lr(s: LoopSettings, step: int, total_steps: int, seconds: float) -> float:
    """The learning rate for the step after ``step`` of ``total_steps`` taken in ``seconds``:
    constant, or poly decay over the loop's progress — by steps, or by time under a budget
    (whichever is further along)."""
    if s.lr_schedule == "constant":
        return s.lr
    progress = step / max(total_steps, 1)
    if s.max_seconds:
        progress = max(progress, seconds / s.max_seconds)
    return s.lr * max(1.0 - min(progress, 1.0), 0.0) ** POLY_POWER


@dataclass
class StageResult:
    name: str
    steps: int
    seconds: float
    last_loss: float
    history: list[dict] = field(default_factory=list)
    data_seconds: float = 0.0  # waiting for batches (this call; rank 0)
    step_seconds: float = 0.0  # the steps themselves: forward, backward, optimiser
    voxels: int = 0  # patch voxels trained on by this rank in this call

    @property
    def data_share(self) -> float:
        """Share of the loop's time spent waiting for data."""
        total = self.data_seconds + self.step_seconds
        return self.data_seconds / total if total > 0 else 0.0

    @property
    def voxels_per_second(self) -> float:
        total = self.data_seconds + self.step_seconds
        return self.voxels / total if total > 0 else 0.0


class _Prefetch:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead, so that cutting the
    next batch overlaps the current step (numpy and torch release the GIL for the heavy parts).
    The order is unchanged. :meth:`close` stops the thread early."""

    _END = object()

    def __init__(self, iterable, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iterable,), daemon=True, name="m2cofs-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, iterable) -> None:
        try:
            for item in iterable:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((self._END, exc))
            return
        self._put((self._END, None))

    def __iter__(self):
        return self

    def __next__(self):
        item, exc = self._q.get()
        if item is self._END:
            self._thread.join()
            if exc is not None:
                raise exc
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _finite_grads(params: list[nn.Parameter]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def make_optimizer(params: Iterable[nn.Parameter], s: LoopSettings) -> torch.optim.Optimizer:
    params = list(params)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)


def _save_state(path: Path, state: dict) -> None:
    # Serialised in memory first: torch.save reports a full disk as an opaque RuntimeError, a
    # Python write as OSError(ENOSPC), which atomic_write_bytes turns into a clear error.
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_training_state(path: Path) -> dict:
    """Read an in-stage checkpoint (``weights_only=True``: tensors and plain values only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads, truncation, ...
        raise M2CofsError(f"cannot load the training checkpoint safely ({str(exc).splitlines()[0][:120]})", path) from None


def _write_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    keys = list(rows[0].keys())
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []

    def value(k: str, v):
        if k == "stage" or v in ("", None):
            return v
        return int(float(v)) if k in ("epoch", "step") else float(v)  # ints stay ints when a resumed run rewrites the log

    with open(path, newline="") as fh:
        return [{k: value(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]


def plot_losses(csv_path: Path, png_path: Path, title: str) -> None:
    """Loss curves of one stage's CSV log (one line per loss term), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(csv_path)
    if not rows:
        return
    keys = [k for k in rows[0] if k not in ("stage", "epoch", "step", "seconds", "lr")]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [r["step"] for r in rows]
    for k in keys:
        vals = [r.get(k) for r in rows]
        if all(isinstance(v, float) and math.isfinite(v) for v in vals):
            ax.plot(steps, vals, label=k, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    atomic_write_with(png_path, write)
    plt.close(fig)


def run_loop(name: str, task: StageTask, dataset: PatchDataset, s: LoopSettings, run_dir: Path,
             dist_info: DistInfo, stage_key: int, resume: bool) -> StageResult:
    """Train ``task`` on ``dataset`` for ``s.epochs`` epochs (see the module docstring)."""
    ckpt_path = run_dir / "checkpoints" / f"{name}.pt"
    log_path = run_dir / "logs" / f"{name}.csv"
    device = dist_info.device
    task.to(device)
    channels_last = device.type in ("cpu", "cuda") if s.channels_last is None else s.channels_last
    if channels_last:  # before the optimiser and DDP see the parameters; undone when the loop ends
        task.to(memory_format=torch.channels_last_3d)
    params = task.trained_parameters()
    optimizer = make_optimizer(params, s)

    start_epoch, start_batch, step = 0, 0, 0
    spent_before = 0.0
    history: list[dict] = []
    if ckpt_path.exists():
        if not resume:
            raise M2CofsError(f"stage {name} was interrupted earlier; pass --resume to continue it or --overwrite to start over",
                              ckpt_path)
        state = load_training_state(ckpt_path)
        try:
            task.load_trained_state(state["trained"])
            optimizer.load_state_dict(state["optimizer"])
            task.load_extra_state(state.get("extra", {}))
            start_epoch, start_batch, step = int(state["epoch"]), int(state["batch"]), int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise M2CofsError(f"does not fit this run's network or settings (another preset or modality count?): "
                              f"{str(exc).splitlines()[0][:120]}; pass --overwrite to start over", ckpt_path) from None
        spent_before = float(state.get("seconds", 0.0))
        history = [r for r in read_log(log_path) if r.get("step", 0) <= step]

    model: nn.Module = task
    if dist_info.enabled:
        model = nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None,
                                                    find_unused_parameters=False)
    model.train()

    steps_per_epoch = len(epoch_batches(len(dataset), s.batch_size, s.seed, stage_key, 0, dist_info.rank, dist_info.world_size))
    total = steps_per_epoch * s.epochs
    bar = None
    if s.progress and dist_info.is_main:
        from tqdm.auto import tqdm

        # Under a time budget the epochs are only a cap: the bar counts steps and shows the time.
        bar = tqdm(total=None if s.max_seconds else total, initial=step, desc=name, unit="step", dynamic_ncols=True,
                   leave=True)

    def checkpoint(epoch: int, batch: int) -> None:
        if dist_info.is_main:
            # The log first: a kill between the two leaves a log that covers the checkpoint (rows
            # past its step are dropped on resume), never one that misses steps.
            _write_log(log_path, history)
            _save_state(ckpt_path, {"trained": task.trained_state(), "optimizer": optimizer.state_dict(),
                                    "extra": task.extra_state(), "epoch": epoch, "batch": batch, "step": step,
                                    "seconds": spent_before + time.time() - t0})
        barrier(dist_info)

    t0 = time.time()

    def budget_spent() -> bool:
        """The time budget is used up (decided alike on every rank)."""
        if s.max_seconds is None:
            return False
        return all_reduce_mean(float(spent_before + time.time() - t0 >= s.max_seconds), dist_info) > 0

    last_loss = float(history[-1]["loss"]) if history and isinstance(history[-1].get("loss"), float) else float("nan")
    steps_this_run = 0
    amp_dtype = autocast_dtype(device) if s.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every batch has the same shape
    data_seconds = step_seconds = 0.0
    voxels = 0
    try:
        for epoch in range(start_epoch, s.epochs):
            dataset.set_epoch(epoch)
            batches = epoch_batches(len(dataset), s.batch_size, s.seed, stage_key, epoch, dist_info.rank, dist_info.world_size)
            first = start_batch if epoch == start_epoch else 0
            loader = DataLoader(dataset, batch_sampler=batches[first:], num_workers=s.workers,
                                persistent_workers=False, pin_memory=device.type == "cuda")
            feed = _Prefetch(loader) if s.workers == 0 else iter(loader)
            try:
                b_idx = first - 1
                while True:
                    t_wait = time.perf_counter()
                    batch = next(feed, None)
                    if batch is None:
                        break
                    b_idx += 1
                    image = batch["image"].to(device, non_blocking=True)
                    target = batch["target"].to(device, non_blocking=True)
                    has_label = batch["has_label"].to(device, non_blocking=True)
                    if channels_last:
                        image = image.contiguous(memory_format=torch.channels_last_3d)
                        target = target.contiguous(memory_format=torch.channels_last_3d)
                    t_step = time.perf_counter()
                    data_seconds += t_step - t_wait
                    lr = scheduled_lr(s, step, total, spent_before + time.time() - t0)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        loss, parts = model(image, target, has_label)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)  # SI and the optimiser see true gradients
                    # fp16 overflow: the scaler skips this step; so do the stage's hooks (SI)
                    skip = scaler.is_enabled() and not _finite_grads(params)
                    if not skip:
                        task.before_optimizer_step()
                    scaler.step(optimizer)
                    scaler.update()
                    if not skip:
                        task.after_optimizer_step()
                    step += 1
                    steps_this_run += 1
                    voxels += image.shape[0] * image[0, 0].numel()
                    last_loss = all_reduce_mean(float(loss.detach()), dist_info)  # waits for the device
                    step_seconds += time.perf_counter() - t_step
                    row = {"stage": name, "epoch": epoch, "step": step, "loss": last_loss, "lr": lr,
                           **{k: float(v) for k, v in parts.items()}, "seconds": round(time.time() - t0, 3)}
                    history.append(row)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix({k: f"{v:.4f}" for k, v in [("loss", last_loss), *parts.items()]}, refresh=False)
                    if step % s.checkpoint_every == 0:
                        checkpoint(epoch, b_idx + 1)
                    if budget_spent():
                        break
                    if s.stop_after_steps is not None and steps_this_run >= s.stop_after_steps:
                        checkpoint(epoch, b_idx + 1)
                        if bar is not None:
                            bar.close()
                        raise KeyboardInterrupt(f"stopped after {steps_this_run} steps (test hook)")
            finally:
                if isinstance(feed, _Prefetch):
                    feed.close()
            checkpoint(epoch + 1, 0)
            if budget_spent():
                break
    finally:
        if channels_last:  # results are saved as contiguous tensors (safetensors needs them)
            task.to(memory_format=torch.contiguous_format)
    if bar is not None:
        bar.close()
    if model is not task:
        # A DDP wrapper sits in reference cycles: free it now, while the process group is alive.
        # Left to the interpreter's exit, a gloo rank now and then aborted after a finished run
        # ("terminate called without an active exception").
        del model
        gc.collect()
    if dist_info.is_main:
        _write_log(log_path, history)
        plot_losses(log_path, run_dir / "logs" / f"{name}.png", name)
    barrier(dist_info)
    return StageResult(name, step, time.time() - t0, last_loss, history, data_seconds, step_seconds, voxels)


def finish_stage(run_dir: Path, name: str, dist_info: DistInfo, write_outputs: Callable[[], None]) -> None:
    """Write the stage's results (rank 0), then drop its in-stage checkpoint."""
    if dist_info.is_main:
        write_outputs()
        (run_dir / "checkpoints" / f"{name}.pt").unlink(missing_ok=True)
    barrier(dist_info)
