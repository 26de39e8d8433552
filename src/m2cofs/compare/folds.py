"""The folds of ``m2cofs compare``: which cases each holds out, which run here, and
:class:`FoldContext`, a fold's M²-CoFS run that the methods start from."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from m2cofs.compare.options import CompareOptions
from m2cofs.errors import M2CofsError


@dataclass
class Fold:
    index: int
    test_ids: list[str]
    train_ids: list[str]
    dir: Path


def make_folds(ids: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint held-out sets covering every case (a seeded shuffle, then round-robin)."""
    if k < 2:
        raise M2CofsError("--folds must be at least 2")
    if k > len(ids):
        raise M2CofsError(f"--folds {k} is more than the {len(ids)} case(s)")
    order = list(np.random.default_rng(seed).permutation(sorted(ids)))
    return [sorted(order[i::k]) for i in range(k)]


def select_folds(run_folds: Sequence[int] | None, k: int) -> set[int]:
    """The fold indices to run (``--fold``, as in nnU-Net: several machines can each run some
    folds into one shared output folder); all of them when none is given."""
    if run_folds is None:
        return set(range(k))
    bad = [i for i in run_folds if not 0 <= i < k]
    if bad:
        raise M2CofsError(f"--fold {bad[0]} does not exist: folds are numbered 0 to {k - 1}")
    return set(run_folds)


class FoldContext:
    """One fold: its M²-CoFS run (the Trainer, stage results) and helpers for the methods.

    Nothing is trained until :meth:`train` (or use :meth:`trained`); a finished run is only
    loaded again."""

    def __init__(self, opts: CompareOptions, fold: Fold, cache: Path, log: Callable[[str], None]):
        self.opts, self.fold, self.log = opts, fold, log
        self.cache = cache
        self.run_dir = fold.dir / "m2cofs"
        self.trainer = None
        self.train_seconds: float | None = None
        self.m2cofs_seconds: float | None = None  # the run's training time (the peers' budget)

    @classmethod
    def trained(cls, opts: CompareOptions, fold: Fold, cache: Path, log: Callable[[str], None]) -> "FoldContext":
        ctx = cls(opts, fold, cache, log)
        ctx.train()
        return ctx

    def train(self) -> None:
        """Run (or resume, or load) the fold's M²-CoFS stages 0-3 on its training cases; with
        ``--model`` (a model trained elsewhere), only set the run up (data, config) for the peers."""
        from m2cofs.training.pipeline import Trainer

        if self.opts.model is not None:
            self.trainer = Trainer(self._train_opts(self.run_dir, self.opts.overrides, resume=True, stages=()))
            return
        t0 = time.time()
        self.trainer = Trainer(self._train_opts(self.run_dir, self.opts.overrides, resume=True))
        self.trainer.run()
        self.train_seconds = time.time() - t0
        summary = json.loads((self.run_dir / "summary.json").read_text())
        self.m2cofs_seconds = float(sum(summary.get("stage_seconds", {}).values())) or self.train_seconds

    def _train_opts(self, out: Path, overrides: list[str], resume: bool = True, stages=(0, 1, 2, 3)):
        from m2cofs.training.pipeline import TrainOptions

        o = self.opts
        return TrainOptions(data=o.data, out=str(out), preset=o.preset, overrides=list(overrides), stages=list(stages),
                            resume=resume, format=o.format, labels=o.labels, modalities=o.modalities,
                            include=self.fold.train_ids, cache_dir=str(self.cache), progress=o.progress)

    @property
    def peer_seconds(self) -> float:
        """The peers' training time: ``--peer-seconds``, else the CPU time of the fold's M²-CoFS run."""
        return float(self.opts.peer_seconds if self.opts.peer_seconds is not None else self.m2cofs_seconds)

    @property
    def t(self):
        """The fold's Trainer (its config, network and stage results)."""
        if self.trainer is None:
            raise RuntimeError(f"fold {self.fold.index} is not trained yet: call train() first")
        return self.trainer

    def method_dir(self, name: str) -> Path:
        return self.fold.dir / "methods" / name

    def derived_run(self, name: str, overrides: list[str], copy_stages: Sequence[str], stages: Sequence[int],
                    fake: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
        """A run that starts from this fold's stage results (copied) and trains ``stages``
        with ``overrides``; ``fake`` writes given tensors as stage results (skipping a stage)."""
        from m2cofs.checkpoint import save_tensors
        from m2cofs.training.pipeline import Trainer

        run = self.method_dir(name)
        if not (run / "unified.ckpt").exists():
            (run / "stages").mkdir(parents=True, exist_ok=True)
            for st in copy_stages:
                src = self.run_dir / "stages" / f"{st}.safetensors"
                dst = run / "stages" / f"{st}.safetensors"
                if not dst.exists():
                    shutil.copy2(src, dst)
            for st, tensors in (fake or {}).items():
                dst = run / "stages" / f"{st}.safetensors"
                if not dst.exists():
                    save_tensors(dst, tensors, {"stage": st, "note": f"stands in for {st} ({name})"})
            Trainer(self._train_opts(run, [*self.opts.overrides, *overrides], resume=True, stages=stages)).run()
        return run / "unified.ckpt"
