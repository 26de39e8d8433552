"""What ``m2cofs train`` is asked to do: :class:`TrainOptions`, the stages and their names,
the default modalities, and how a time budget is shared among the stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from m2cofs.data.labels import LabelConvention
from m2cofs.errors import M2CofsError
from m2cofs.training import stage0_autoencoder as s0
from m2cofs.training import stage1_independent as s1
from m2cofs.training import stage2_adaptation as s2
from m2cofs.training import stage3_unification as s3

STAGE_NAMES = {
    0: [s0.NAME],
    1: [s1.FUSION, s1.SEGMENTATION],
    2: [s2.SEG_TO_FUSION, s2.FUSION_TO_SEG],
    3: [s3.NAME],
}
LOOPS_PER_STAGE = {0: 1, 1: 2, 2: 2, 3: 1}  # Stage I and II train a fusion and a segmentation loop each
BUDGET_EPOCHS = 1_000_000  # the epoch cap of a loop that a time budget ends


@dataclass
class TrainOptions:
    data: str
    out: str
    preset: str = "lite"
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    resume: bool = False
    overwrite: bool = False
    format: str = "auto"
    labels: str = "auto"
    modalities: list[str] | None = None
    resample_to: str | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    cache_dir: str | None = None
    progress: bool = True
    device: str = "auto"
    stop_after_steps: int | None = None  # test hook: simulate an interruption
    time_budget: float | None = None  # minutes in all (overrides train.time_budget_minutes)


def default_modalities(available: Sequence[str], convention: LabelConvention) -> list[str]:
    """The paper's pairs: T1ce + FLAIR for tumour data, T1 + FLAIR for MRBrainS; else all."""
    avail = list(available)
    if convention.name.startswith(("brats", "msd")) and {"t1ce", "flair"} <= set(avail):
        return ["t1ce", "flair"]
    if convention.name.startswith("mrbrains") and {"t1", "flair"} <= set(avail):
        return ["t1", "flair"]
    return avail


def parse_stages(text: str) -> list[int]:
    """``"all"`` or ``"0,1,2,3"`` (any subset) → sorted stage numbers."""
    if text.strip().lower() == "all":
        return [0, 1, 2, 3]
    try:
        stages = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise M2CofsError(f"--stages {text!r}: expected 'all' or numbers from 0 to 3, e.g. 0,1,2,3") from None
    if not stages or any(s not in STAGE_NAMES for s in stages):
        raise M2CofsError(f"--stages {text!r}: expected 'all' or numbers from 0 to 3")
    return stages


def stage_budgets(epochs: dict[str, int], stages: list[int], minutes: float) -> dict[int, float]:
    """Seconds per stage for a budget of ``minutes`` over ``stages``: in the preset's proportions,
    each stage's share its epochs times its loops (a stage with no epochs gets no time)."""
    weight = {st: epochs[f"stage{st}"] * LOOPS_PER_STAGE[st] for st in stages}
    total = sum(weight.values())
    if total <= 0:
        raise M2CofsError("--time-budget: the stages to run have no epochs to share the budget by")
    return {st: 60.0 * minutes * w / total for st, w in weight.items()}


LOOP_NAMES = [name for st in sorted(STAGE_NAMES) for name in STAGE_NAMES[st]]
SEGMENTATION_LOOPS = (s1.SEGMENTATION, s2.FUSION_TO_SEG, s3.NAME)  # the loops that train the segmentation path


def loop_budgets(shares: dict[str, int], epochs: dict[str, int], stages: list[int], minutes: float) -> dict[str, float]:
    """Seconds per training loop for a budget of ``minutes`` over ``stages``.

    With ``shares`` (``train.budget_shares``: a weight per loop, e.g. percent; all zero: unused)
    each loop of the stages to run gets its weight's part of the budget; without, each stage gets
    :func:`stage_budgets`' part, split evenly over its loops."""
    names = [n for st in stages for n in STAGE_NAMES[st]]
    if shares and any(shares.values()):
        total = sum(shares.get(n, 0) for n in names)
        if total <= 0:
            raise M2CofsError("--time-budget: train.budget_shares gives the stages to run no time")
        return {n: 60.0 * minutes * shares.get(n, 0) / total for n in names}
    per_stage = stage_budgets(epochs, stages, minutes)
    return {n: per_stage[st] / LOOPS_PER_STAGE[st] for st in stages for n in STAGE_NAMES[st]}
