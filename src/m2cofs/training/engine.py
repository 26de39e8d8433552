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

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from m2cofs.devices import autocast_dtype
from m2cofs.errors import M2CofsError
from m2cofs.training.distributed import DistInfo, all_reduce_mean, barrier
from m2cofs.training.logs import plot_losses, read_log, write_log  # noqa: F401  (read_log: re-exported)
from m2cofs.training.patches import PatchDataset, epoch_batches
from m2cofs.training.prefetch import Prefetch as _Prefetch
from m2cofs.training.state import load_training_state, save_training_state
from m2cofs.training.task import StageTask

_save_state = save_training_state  # the old private name (tests use it)


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


def _finite_grads(params: list[nn.Parameter]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def make_optimizer(params: Iterable[nn.Parameter] | list[dict], s: LoopSettings) -> torch.optim.Optimizer:
    """The loop's optimiser over ``params`` (parameters, or parameter groups as
    :meth:`StageTask.param_groups` gives them)."""
    params = list(params)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)


class _Loop:
    """One call of :func:`run_loop`: its state, and the steps it takes in order — :meth:`resume`,
    :meth:`start`, then per epoch :meth:`epoch` (per batch :meth:`train_step`, :meth:`log`,
    :meth:`after_step`, which writes :meth:`checkpoint` s), and :meth:`finish`."""

    def __init__(self, name: str, task: StageTask, dataset: PatchDataset, s: LoopSettings, run_dir: Path,
                 dist_info: DistInfo, stage_key: int):
        self.name, self.task, self.dataset, self.s, self.dist, self.stage_key = name, task, dataset, s, dist_info, stage_key
        self.run_dir = run_dir
        self.ckpt_path = run_dir / "checkpoints" / f"{name}.pt"
        self.log_path = run_dir / "logs" / f"{name}.csv"
        self.device = dist_info.device
        task.to(self.device)
        self.channels_last = self.device.type in ("cpu", "cuda") if s.channels_last is None else s.channels_last
        if self.channels_last:  # before the optimiser and DDP see the parameters; undone when the loop ends
            task.to(memory_format=torch.channels_last_3d)
        self.params = task.trained_parameters()
        self.optimizer = make_optimizer([g for g in task.param_groups() if g["params"]], s)
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.spent_before = 0.0  # seconds trained before this call (from the checkpoint)
        self.history: list[dict] = []
        self.steps_this_run = 0
        self.data_seconds = self.step_seconds = 0.0
        self.voxels = 0

    def resume(self, allowed: bool) -> None:
        """Continue from the stage's in-stage checkpoint, if it has one (refused unless ``allowed``)."""
        if not self.ckpt_path.exists():
            return
        if not allowed:
            raise M2CofsError(f"stage {self.name} was interrupted earlier; pass --resume to continue it or --overwrite to "
                              "start over", self.ckpt_path)
        state = load_training_state(self.ckpt_path)
        try:
            self.task.load_trained_state(state["trained"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.task.load_extra_state(state.get("extra", {}))
            self.start_epoch, self.start_batch, self.step = int(state["epoch"]), int(state["batch"]), int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise M2CofsError(f"does not fit this run's network or settings (another preset or modality count?): "
                              f"{str(exc).splitlines()[0][:120]}; pass --overwrite to start over", self.ckpt_path) from None
        self.spent_before = float(state.get("seconds", 0.0))
        self.history = [r for r in read_log(self.log_path) if r.get("step", 0) <= self.step]

    def start(self) -> None:
        """The DDP wrapper, the progress bar, the clock, mixed precision."""
        s, d, device = self.s, self.dist, self.device
        self.model: nn.Module = self.task
        if d.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.task, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
        self.model.train()
        steps_per_epoch = len(epoch_batches(len(self.dataset), s.batch_size, s.seed, self.stage_key, 0, d.rank, d.world_size))
        self.total = steps_per_epoch * s.epochs
        self.bar = None
        if s.progress and d.is_main:
            from tqdm.auto import tqdm

            # Under a time budget the epochs are only a cap: the bar counts steps and shows the time.
            self.bar = tqdm(total=None if s.max_seconds else self.total, initial=self.step, desc=self.name, unit="step",
                            dynamic_ncols=True, leave=True)
        self.t0 = time.time()
        h = self.history
        self.last_loss = float(h[-1]["loss"]) if h and isinstance(h[-1].get("loss"), float) else float("nan")
        self.amp_dtype = autocast_dtype(device) if s.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the same shape

    def elapsed(self) -> float:
        """Seconds trained in all (before this call and in it)."""
        return self.spent_before + time.time() - self.t0

    def checkpoint(self, epoch: int, batch: int) -> None:
        """The log and the in-stage state, to continue at ``batch`` of ``epoch`` (rank 0 writes)."""
        if self.dist.is_main:
            # The log first: a kill between the two leaves a log that covers the checkpoint (rows
            # past its step are dropped on resume), never one that misses steps.
            write_log(self.log_path, self.history)
            save_training_state(self.ckpt_path, {"trained": self.task.trained_state(), "optimizer": self.optimizer.state_dict(),
                                         "extra": self.task.extra_state(), "epoch": epoch, "batch": batch,
                                         "step": self.step, "seconds": self.elapsed()})
        barrier(self.dist)

    def budget_spent(self) -> bool:
        """The time budget is used up (decided alike on every rank)."""
        if self.s.max_seconds is None:
            return False
        return all_reduce_mean(float(self.elapsed() >= self.s.max_seconds), self.dist) > 0

    def epochs(self) -> None:
        for epoch in range(self.start_epoch, self.s.epochs):
            self.epoch(epoch)
            spent = self.budget_spent()  # before the checkpoint: its write is not the step's time
            self.checkpoint(epoch + 1, 0)
            if spent:
                break

    def epoch(self, epoch: int) -> None:
        """The epoch's batches (from ``start_batch`` in the epoch resumed); ends early when the budget is spent."""
        s, d = self.s, self.dist
        self.dataset.set_epoch(epoch)
        batches = epoch_batches(len(self.dataset), s.batch_size, s.seed, self.stage_key, epoch, d.rank, d.world_size)
        done = self.start_batch if epoch == self.start_epoch else 0
        loader = DataLoader(self.dataset, batch_sampler=batches[done:], num_workers=s.workers,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        feed = _Prefetch(loader) if s.workers == 0 else iter(loader)
        try:
            while True:
                t_wait = time.perf_counter()
                batch = next(feed, None)
                if batch is None:
                    return
                done += 1
                lr, parts = self.train_step(batch, t_wait)
                self.log(epoch, lr, parts)
                if self.after_step(epoch, done):
                    return
        finally:
            if isinstance(feed, _Prefetch):
                feed.close()

    def train_step(self, batch: dict, t_wait: float) -> tuple[float, dict]:
        """One optimiser step on ``batch`` (waited for since ``t_wait``); returns its lr and loss terms."""
        device, optimizer, scaler = self.device, self.optimizer, self.scaler
        image = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        has_label = batch["has_label"].to(device, non_blocking=True)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
            target = target.contiguous(memory_format=torch.channels_last_3d)
        t_step = time.perf_counter()
        self.data_seconds += t_step - t_wait
        lr = scheduled_lr(self.s, self.step, self.total, self.elapsed())
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        optimizer.zero_grad(set_to_none=True)
        amp_dtype = self.amp_dtype
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss, parts = self.model(image, target, has_label)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # SI and the optimiser see true gradients
        # fp16 overflow: the scaler skips this step; so do the stage's hooks (SI)
        skip = scaler.is_enabled() and not _finite_grads(self.params)
        if not skip:
            self.task.before_optimizer_step()
        scaler.step(optimizer)
        scaler.update()
        if not skip:
            self.task.after_optimizer_step()
        self.step += 1
        self.steps_this_run += 1
        self.voxels += image.shape[0] * image[0, 0].numel()
        self.last_loss = all_reduce_mean(float(loss.detach()), self.dist)  # waits for the device
        self.step_seconds += time.perf_counter() - t_step
        return lr, parts

    def log(self, epoch: int, lr: float, parts: dict) -> None:
        """The step's row (kept for the CSV log) and the progress bar."""
        row = {"stage": self.name, "epoch": epoch, "step": self.step, "loss": self.last_loss, "lr": lr,
               **{k: float(v) for k, v in parts.items()}, "seconds": round(time.time() - self.t0, 3)}
        self.history.append(row)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in [("loss", self.last_loss), *parts.items()]}, refresh=False)

    def after_step(self, epoch: int, batch: int) -> bool:
        """A checkpoint when due; True when the budget ends the epoch. The test hook
        (``stop_after_steps``) checkpoints and interrupts here."""
        s = self.s
        spent = self.budget_spent()  # decided on the step's own end, as the log's seconds are
        if self.step % s.checkpoint_every == 0:
            self.checkpoint(epoch, batch)
        if spent:
            return True
        if s.stop_after_steps is not None and self.steps_this_run >= s.stop_after_steps:
            self.checkpoint(epoch, batch)
            if self.bar is not None:
                self.bar.close()
            raise KeyboardInterrupt(f"stopped after {self.steps_this_run} steps (test hook)")
        return False

    def restore_memory_format(self) -> None:
        if self.channels_last:  # results are saved as contiguous tensors (safetensors needs them)
            self.task.to(memory_format=torch.contiguous_format)

    def finish(self) -> StageResult:
        """The bar closed, the DDP wrapper freed, the final log and loss curves (rank 0)."""
        if self.bar is not None:
            self.bar.close()
        if self.model is not self.task:
            # A DDP wrapper sits in reference cycles: free it now, while the process group is alive.
            # Left to the interpreter's exit, a gloo rank now and then aborted after a finished run
            # ("terminate called without an active exception").
            del self.model
            gc.collect()
        if self.dist.is_main:
            write_log(self.log_path, self.history)
            plot_losses(self.log_path, self.run_dir / "logs" / f"{self.name}.png", self.name)
        barrier(self.dist)
        return StageResult(self.name, self.step, time.time() - self.t0, self.last_loss, self.history, self.data_seconds,
                           self.step_seconds, self.voxels)


def run_loop(name: str, task: StageTask, dataset: PatchDataset, s: LoopSettings, run_dir: Path,
             dist_info: DistInfo, stage_key: int, resume: bool) -> StageResult:
    """Train ``task`` on ``dataset`` for ``s.epochs`` epochs (see the module docstring)."""
    loop = _Loop(name, task, dataset, s, run_dir, dist_info, stage_key)
    loop.resume(resume)
    loop.start()
    try:
        loop.epochs()
    finally:
        loop.restore_memory_format()
    return loop.finish()
