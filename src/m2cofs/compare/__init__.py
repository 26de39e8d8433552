"""``m2cofs compare``: M²-CoFS against its baselines and ablations, cross-validated over cases.

For each fold the held-out cases are predicted by every method and scored with
:func:`m2cofs.evaluation.evaluate`; then the tables, a paired test per metric against M²-CoFS,
the weight-space plot and an HTML page are written::

    DIR/
      folds.json                       which cases each fold holds out
      fold<k>/m2cofs/                  the M²-CoFS run (stages 0-3), reused by many methods (--model: set-up only)
      fold<k>/methods/<method>/        a method's own training / model file (when it has one)
      fold<k>/pred/<method>/           predictions of the held-out cases (m2cofs predict layout)
      fold<k>/eval/<method>/           metrics.csv, summary.json of those predictions
      table_fusion.md/.csv             methods × the paper's fusion metrics (mean ± std over cases)
      table_segmentation.md/.csv       methods × Dice and HD95 per region
      table_ablation.md                M²-CoFS and its ablations
      table_plugin.md                  segmentation heads with and without M²-CoFS (if run)
      weight_space.png                 2-D embeddings of F's weight sets (PCA and t-SNE)
      index.html                       all of it on one self-contained page
      results.json                     every number above, and the paired tests

Nothing is trained twice: the methods reuse the fold's Stage I/II results, and every step
whose outputs exist is skipped, so an interrupted compare continues where it stopped.

The modules: :mod:`.methods` (the method registry, ``--methods``; torch-free), :mod:`.options`,
:mod:`.folds` (folds and a fold's M²-CoFS run), :mod:`.makers` (the weight-based methods' model
files), :mod:`.predict` (how each kind of method predicts), :mod:`.stats`, :mod:`.tables`,
:mod:`.weight_space`, :mod:`.page` (``index.html``, through :mod:`m2cofs.reporting`) and
:mod:`.run` (:func:`compare`). Importing this package imports neither torch nor MONAI: the
names below that need them are loaded when first used.
"""

from __future__ import annotations

import importlib

from m2cofs.compare.methods import (ABLATIONS, ALL_METHODS, DEFAULT_METHODS, GROUPS, MethodSpec, label, method,
                                    parse_methods, register, register_method)

_LAZY = {
    "CompareOptions": "options",
    "Fold": "folds", "FoldContext": "folds", "make_folds": "folds", "select_folds": "folds",
    "read_metrics": "stats", "paired_test": "stats", "aggregate": "stats",
    "table": "tables", "build_table": "tables", "method_tables": "tables", "mean_std": "tables",
    "PeerNet": "predict", "weight_sets": "weight_space", "plot_weight_space": "weight_space",
    "compare": "run", "run_fold": "run",
}

__all__ = ["ABLATIONS", "ALL_METHODS", "DEFAULT_METHODS", "GROUPS", "MethodSpec", "label", "method", "parse_methods",
           "register", "register_method", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
