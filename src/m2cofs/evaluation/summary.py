"""From per-case results to tables: the metric columns in order, their statistics
(``summary.json``'s ``metrics``), region volumes and their flags, ``metrics.csv``'s text."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

import numpy as np

from m2cofs.evaluation.scoring import CaseResult
from m2cofs.metrics.registry import higher_is_better

#: a predicted region volume more than this many times the true one (or less than its inverse) is flagged
VOLUME_RATIO_FLAG = 2.0


def volume_flag(pred_ml: float, true_ml: float, ratio: float = VOLUME_RATIO_FLAG) -> bool:
    """Whether a predicted volume differs wildly from the true one (ratio > 2 or < 1/2; one empty)."""
    if pred_ml == true_ml:
        return False
    if pred_ml == 0 or true_ml == 0:
        return True
    r = pred_ml / true_ml
    return r > ratio or r < 1.0 / ratio


def volume_table(results: Sequence[CaseResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary.json``'s ``volumes_ml``: case → region → pred, true (mL), ratio, flag."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        if r.volumes:
            out[r.id] = {reg: {"pred": v["pred"], "true": v["true"],
                               "ratio": v["pred"] / v["true"] if v["true"] > 0 else None,
                               "flag": volume_flag(v["pred"], v["true"])} for reg, v in r.volumes.items()}
    return out



def summarize(results: Sequence[CaseResult], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per column: n, mean, std (sample, ddof=1; 0 for one case), median, min, max.

    Statistics are over the cases that have the column; non-finite values (a metric that came
    out NaN or ±inf for a case) are counted in ``n_nonfinite`` and left out of the statistics,
    never dropped silently. HD95 columns also count ``n_penalised`` (the penalty applied).
    """
    out: dict[str, dict[str, Any]] = {}
    for col in columns:
        vals = np.array([r.values[col] for r in results if col in r.values], dtype=np.float64)
        fin = vals[np.isfinite(vals)]
        entry: dict[str, Any] = {"n": int(vals.size), "n_nonfinite": int(vals.size - fin.size)}
        if fin.size:
            entry.update(mean=float(fin.mean()), std=float(fin.std(ddof=1)) if fin.size > 1 else 0.0,
                         median=float(np.median(fin)), min=float(fin.min()), max=float(fin.max()))
        else:
            entry.update(mean=None, std=None, median=None, min=None, max=None)
        if col.startswith("HD95/"):
            region = col.split("/", 1)[1]
            entry["n_penalised"] = sum(1 for r in results if col in r.values and region in r.penalised)
        entry["higher_is_better"] = higher_is_better(col)
        out[col] = entry
    return out


def ordered_columns(results: Sequence[CaseResult], modes: Sequence[str], fusion: Sequence[str],
                    seg: Sequence[str], regions: Sequence[str]) -> list[str]:
    """The metric columns present in any result, in a fixed order (segmentation, then fusion,
    then lesion contrast retention)."""
    from m2cofs.metrics.retention import retention_columns

    present = set().union(*(r.values for r in results)) if results else set()
    cols = [f"{m}/{r}" for m in seg for r in regions]
    cols += [f"{mode}/{m}" for mode in modes for m in fusion]
    return [c for c in cols if c in present] + retention_columns(present, ("t1ce", "flair", "t2"))


def _fmt_csv(v: float | None) -> str:
    if v is None:
        return ""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(float(v))


def metrics_csv_text(results: Sequence[CaseResult], columns: Sequence[str]) -> str:
    """``metrics.csv``: ``id``, the metric columns (empty where not computed), ``hd95_penalised``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", *columns, "hd95_penalised"])
    for r in results:
        w.writerow([r.id, *(_fmt_csv(r.values.get(c)) for c in columns), ";".join(r.penalised)])
    return buf.getvalue()


def json_safe(obj):
    """``obj`` with every non-finite float replaced by ``None`` (``summary.json`` is strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj

