"""The options of one ``m2cofs compare`` (torch-free; :mod:`.folds`, :mod:`.predict` and :mod:`.run` read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from m2cofs.compare.methods import DEFAULT_METHODS


@dataclass
class CompareOptions:
    data: str
    out: str
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    preset: str = "lite"
    overrides: list[str] = field(default_factory=list)
    folds: int = 5
    format: str = "auto"
    labels: str = "auto"
    modalities: list[str] | None = None
    mode: str = "volume"
    progress: bool = True
    fisher_batches: int = 8
    run_folds: list[int] | None = None  # train/predict only these folds (None: all); the tables use every finished one
    test_ids: list[str] | None = None  # one split instead of folds: these cases held out, the rest trained on
    peer_seconds: float | None = None  # the peers' training time (None: the fold's M²-CoFS run's)
    peer_loss: str | None = None  # the peers' segmentation loss, dice | dicece (None: the run's train.seg_loss)
    model: str | None = None  # the M²-CoFS row from this model (file or bundled name), not a run trained per fold
