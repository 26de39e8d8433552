"""Evaluating predictions against a dataset: fusion metrics, Dice / HD95, CSV, JSON and HTML.

:func:`evaluate` is what ``m2cofs evaluate --pred OUT --data DATA --out REPORT`` runs:

1. **Predictions** are found in the layout ``m2cofs predict`` writes:
   ``OUT/<id>/<id>_fused.nii.gz`` and/or ``OUT/<id>/<id>_seg.nii.gz`` (either may be absent),
   on the case's original grid with its affine, labels in the dataset's own convention.
   ``OUT/predict.json`` (if present) says which modalities were fused.
2. **Matching** is by case id (the folder name under OUT = the dataset's case id). Predictions
   with no case and cases with no prediction are reported as notes; nothing matching at all is
   an error. A prediction on another grid (shape or affine) than its case is an error naming
   the file; all grids are checked (from the headers) before any metric is computed.
3. **Fusion metrics** (:mod:`m2cofs.metrics.fusion`) for every case with a fused volume, in
   ``slice`` and/or ``volume`` mode, each source and the fused volume scaled the same way by
   :func:`~m2cofs.data.preprocess.scale_intensity` (robust [0, 1] scaling). Where they are
   computed is ``mask``:

   * ``"brain"`` (default, ``--mask brain``): inside the brain mask (the case's ``_brainmask``,
     else :func:`~m2cofs.data.loading.foreground_mask`); scaled inside that mask, zero outside.
     The background does not count: these numbers describe the fused brain.
   * ``"none"`` (``--mask none``): every voxel of each axial slice (slice mode) or of the volume,
     the zero background included; scaled over the whole volume. This is the convention of the
     MATLAB scripts behind the paper's Table 1 (whole 2-D slices), so use it to compare with the
     paper. The background is large, flat and zero in sources and fused image alike, so it
     changes every metric (the joint histograms gain a large (0, 0) bin; windowed and gradient
     metrics are averaged over flat background too): numbers of the two settings are not
     comparable with each other.
4. **Segmentation metrics** (:mod:`m2cofs.metrics.segmentation`): Dice and HD95 (mm) per region
   for every case with a predicted label map and a ground truth.
5. **Outputs** in REPORT: ``metrics.csv`` (one row per case), ``summary.json`` (mean ± std and
   more per metric) and ``report.html`` (self-contained); all computed in memory first, then
   each written atomically, so an error leaves no partial output. ``summary.json`` also records
   ``mask`` (``brain`` / ``none``) and its description, ``provenance`` (the model of
   ``predict.json``: file, SHA-256, preset, training data, commit), ``volumes_ml`` (predicted and
   true volume per case and region, flagged beyond :data:`VOLUME_RATIO_FLAG`) and ``case_order``
   (worst first by mean Dice, the report's order; previews limited by ``max_previews`` are of
   the worst cases).

``--pred`` must be apart from the dataset: the same folder, one inside the other (links
resolved) or a prediction file that is a case's own file is refused, since the dataset's
``<id>_seg`` files would be scored against themselves.

Column names carry the metric's group: ``volume/Q_MI``, ``slice/Q_MI``, ``Dice/ET``, ``HD95/WT``.

The package, one concept a module: :mod:`.selection` (``--metrics``, ``--mode``, ``--mask``),
:mod:`.discovery` (finding predictions, keeping them apart from the dataset), :mod:`.grids`
(header grid checks), :mod:`.scoring` (one case's metrics; running the cases), :mod:`.summary`
(statistics, region volumes, ``metrics.csv``) and :mod:`.run` (:func:`evaluate`). The order cases
are shown in (:func:`worst_first`, :func:`mean_dice`) is the report's, in
:mod:`m2cofs.reporting.ordering`.
"""

from m2cofs.evaluation.discovery import (PRED_SUFFIXES, PredictionFiles, PredictionSet, check_not_dataset_files,
                                         check_pred_and_data_apart, data_folder, find_predictions,
                                         resolve_modalities)
from m2cofs.evaluation.grids import check_prediction_grids
from m2cofs.evaluation.run import DEFAULT_MAX_PREVIEWS, OUTPUT_FILES, EvaluationResult, evaluate
from m2cofs.evaluation.scoring import CaseJob, CaseResult, evaluate_case, region_volumes_ml, run_jobs
from m2cofs.evaluation.selection import MASK_TEXT, MASKS, SCALING_TEXT, resolve_metric_names, resolve_modes
from m2cofs.evaluation.summary import (VOLUME_RATIO_FLAG, json_safe, metrics_csv_text, ordered_columns, summarize,
                                       volume_flag, volume_table)
from m2cofs.reporting.ordering import mean_dice, worst_first

__all__ = [
    "OUTPUT_FILES", "MASKS", "MASK_TEXT", "SCALING_TEXT", "DEFAULT_MAX_PREVIEWS", "VOLUME_RATIO_FLAG", "PRED_SUFFIXES",
    "PredictionFiles", "PredictionSet", "find_predictions", "check_pred_and_data_apart", "check_not_dataset_files",
    "data_folder", "resolve_modalities", "resolve_metric_names", "resolve_modes", "CaseJob", "CaseResult",
    "check_prediction_grids", "evaluate_case", "run_jobs", "region_volumes_ml", "volume_flag", "volume_table",
    "mean_dice", "worst_first", "summarize", "ordered_columns", "metrics_csv_text", "json_safe",
    "EvaluationResult", "evaluate",
]

# names the single-module m2cofs/evaluation.py also had (its private helpers and what it imported),
# resolved on first use
_OLD_NAMES = {
    "_find_file": ("m2cofs.evaluation.discovery", "_find_file"),
    "_data_folder": ("m2cofs.evaluation.discovery", "data_folder"),
    "_check_not_dataset_files": ("m2cofs.evaluation.discovery", "check_not_dataset_files"),
    "_resolve_modalities": ("m2cofs.evaluation.discovery", "resolve_modalities"),
    "_header_grid": ("m2cofs.evaluation.grids", "_header_grid"),
    "_check_grid": ("m2cofs.evaluation.grids", "_check_grid"),
    "_grid_text": ("m2cofs.data.loading", "grid_text"),
    "_read_prediction": ("m2cofs.evaluation.scoring", "_read_prediction"),
    "_read_seg": ("m2cofs.evaluation.scoring", "_read_seg"),
    "_run_jobs": ("m2cofs.evaluation.scoring", "run_jobs"),
    "_fmt_csv": ("m2cofs.evaluation.summary", "_fmt_csv"),
    "_json_safe": ("m2cofs.evaluation.summary", "json_safe"),
    "MODES": ("m2cofs.metrics.registry", "MODES"),
    "SEG_METRICS": ("m2cofs.metrics.registry", "SEG_METRICS"),
    "higher_is_better": ("m2cofs.metrics.registry", "higher_is_better"),
    "registry": ("m2cofs.metrics.registry", None),
    "region_metrics": ("m2cofs.metrics.segmentation", "region_metrics"),
    "spacing_from_affine": ("m2cofs.metrics.segmentation", "spacing_from_affine"),
}


def __getattr__(name: str):
    if name in _OLD_NAMES:
        import importlib

        module, attr = _OLD_NAMES[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
