"""A trust signal per case: does the case look like the model's training data, and does the model
agree with itself on it?

A segmentation model gives an answer for any input. On scans unlike its training data (another
disease, another modality in a channel, no brain at all) that answer can be confident nonsense:
the bundled glioma model calls 227–256 mL of "whole tumour" in multiple-sclerosis patients. So
each prediction carries measurable signals (:func:`trust_signals`, all on the model grid, from
what the prediction computes plus one left-right mirrored pass of the segmentation):

* ``wt_ml``, ``et_ml``: the predicted whole-tumour and enhancing-tumour volumes (mL, before
  post-processing); ``et_wt``: their ratio;
* ``lesion_prob``: the mean whole-tumour probability inside the predicted whole tumour (how sure
  the model is of what it calls tumour);
* ``mirror_dice``: the soft Dice of the whole-tumour probabilities predicted on the case and on
  its left-right mirror image (mirrored back): a model on familiar ground gives the same answer;
* ``median_<modality>``: each input's median intensity inside the brain after the model's
  intensity scaling (a swapped or unfamiliar modality moves it).

:func:`check_signals` compares them with the ranges a model's reference file holds
(``trust.json`` beside the model file, made by ``results/trust/measure.py`` from the model's
predictions on its training cases, :func:`reference_ranges`) and returns the reasons a case looks
out of domain; ``m2cofs predict`` prints them as a warning and records everything in
``predict.json`` (``cases.<id>.trust``). A model without a reference file gets the signals and no
verdict. The measurement (what is flagged, what is not) is in ``results/trust/RUN.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

TRUST_FILE = "trust.json"

#: the signals, in the order they are shown, and what each says
SIGNALS = {
    "wt_ml": "whole-tumour volume (mL)",
    "et_ml": "enhancing-tumour volume (mL)",
    "et_wt": "ET / WT volume ratio",
    "lesion_prob": "mean WT probability inside the predicted WT",
    "mirror_dice": "agreement with the left-right mirrored prediction (soft Dice)",
}
#: signals compared on a log scale (volumes); the others linearly
LOG_SIGNALS = ("wt_ml", "et_ml")
#: how far past the reference cases' range a signal may go, as a fraction of that range (log range for volumes)
MARGIN = 0.5


def predict_mirrored(model, image: np.ndarray, device="cpu", **window) -> np.ndarray:
    """The region probabilities of ``image`` (C, X, Y, Z) mirrored left-right (axis X of the
    canonical grid), mirrored back: the one extra pass of the segmentation the check costs."""
    from m2cofs import inference

    flipped = np.ascontiguousarray(image[:, ::-1])
    prob = inference.predict_array(model, flipped, device, tasks=["segmentation"], **window)["seg_prob"]
    return np.ascontiguousarray(prob[:, ::-1])


def _soft_dice(a: np.ndarray, b: np.ndarray) -> float:
    den = float(a.sum(dtype=np.float64) + b.sum(dtype=np.float64))
    return 1.0 if den < 1e-6 else 2.0 * float((a * b).sum(dtype=np.float64)) / den


def trust_signals(image: np.ndarray, mask: np.ndarray | None, prob: np.ndarray, mirrored: np.ndarray | None,
                  spacing: Sequence[float], regions: Sequence[str], modalities: Sequence[str] = ("t1ce", "flair"),
                  threshold: float = 0.5) -> dict[str, float | None]:
    """The signals of one case (see the module docstring) from its preprocessed ``image`` (C, X,
    Y, Z), its brain ``mask``, the region probabilities ``prob`` (R, X, Y, Z, ``regions`` in
    order) and those of the mirrored pass (or ``None``), on a grid of ``spacing`` mm."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    regions = list(regions)
    out: dict[str, float | None] = {}
    wt = prob[regions.index("WT")] if "WT" in regions else None
    et = prob[regions.index("ET")] if "ET" in regions else None
    if wt is not None:
        called = wt > threshold
        out["wt_ml"] = float(called.sum()) * voxel_ml
        out["lesion_prob"] = float(wt[called].mean()) if called.any() else None
        if et is not None:
            out["et_ml"] = float((et > threshold).sum()) * voxel_ml
            out["et_wt"] = out["et_ml"] / out["wt_ml"] if out["wt_ml"] > 0 else None
        if mirrored is not None:
            out["mirror_dice"] = _soft_dice(wt, mirrored[regions.index("WT")])
    inside = mask.astype(bool) if mask is not None and mask.any() else np.ones(image.shape[1:], bool)
    for m, channel in zip(modalities, image):
        out[f"median_{m}"] = float(np.median(channel[inside]))
    return out


def reference_ranges(cases: Sequence[Mapping[str, float | None]], margin: float = MARGIN) -> dict[str, Any]:
    """Per signal the reference cases' min and max and the range allowed: widened by ``margin``
    of that range on each side (of the log range for :data:`LOG_SIGNALS`)."""
    ranges = {}
    names = [k for k in cases[0]] if cases else []
    for name in names:
        vals = np.array([c[name] for c in cases if c.get(name) is not None], dtype=np.float64)
        if not vals.size:
            continue
        lo, hi = float(vals.min()), float(vals.max())
        if name in LOG_SIGNALS and lo > 0:
            span = math.log(hi / lo)
            allowed = [lo * math.exp(-margin * span), hi * math.exp(margin * span)]
        else:
            span = hi - lo
            allowed = [lo - margin * span, hi + margin * span]
            if name in ("et_wt", "lesion_prob", "mirror_dice") or name.startswith("median_"):
                allowed = [max(0.0, allowed[0]), min(1.0, allowed[1])]
        ranges[name] = {"min": lo, "max": hi, "allowed": allowed}
    return {"margin": margin, "log_signals": list(LOG_SIGNALS), "ranges": ranges, "n_cases": len(cases)}


def _describe(name: str) -> str:
    if name.startswith("median_"):
        return f"median {name[7:]} intensity in the brain (scaled)"
    return SIGNALS.get(name, name)


def check_signals(signals: Mapping[str, float | None], reference: Mapping[str, Any] | None) -> list[str]:
    """The reasons a case looks out of domain: each signal outside the reference's allowed range
    (empty: nothing unusual, or no reference)."""
    if not reference:
        return []
    reasons = []
    for name, r in reference.get("ranges", {}).items():
        v = signals.get(name)
        if v is None:
            if name == "lesion_prob" and signals.get("wt_ml") == 0:
                continue  # no tumour called: the volume says so
            continue
        lo, hi = r["allowed"]
        if not lo <= v <= hi:
            where = "below" if v < lo else "above"
            reasons.append(f"{_describe(name)} {v:.3g} is {where} the training cases' {r['min']:.3g}–{r['max']:.3g}")
    return reasons


def load_reference(model) -> dict[str, Any] | None:
    """The reference ranges of a loaded model: ``trust.json`` beside its file, when it names the
    model file's SHA-256 (the model's sidecar records it) or the model records none."""
    if getattr(model, "path", None) is None:
        return None
    path = Path(model.path).parent / TRUST_FILE
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    sha = model.meta.get("sha256")
    if not isinstance(ref, dict) or (sha and ref.get("model_sha256") and ref["model_sha256"] != sha):
        return None
    return ref


def case_trust(model, case, prob: np.ndarray, device="cpu", threshold: float = 0.5, mirrored: np.ndarray | None = None,
               **window) -> dict[str, Any]:
    """``predict.json``'s ``trust`` of one case: the signals, the reasons it looks out of domain
    (``flags``), ``ok`` (``None`` where the model has no reference ranges) and the reference used.
    ``mirrored``: the left-right mirrored pass where mirror TTA already made it (else it is run here)."""
    if mirrored is None:
        mirrored = predict_mirrored(model, case.image, device, **window)
    regions = list(model.meta.get("regions", []))
    signals = trust_signals(case.image, case.mask, prob, mirrored, case.meta.spacing or [1.0, 1.0, 1.0], regions,
                            list(case.meta.modalities) or model.modalities, threshold)
    ref = load_reference(model)
    flags = check_signals(signals, ref)
    return {"ok": None if ref is None else not flags, "flags": flags,
            "signals": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in signals.items()},
            "reference": str(Path(model.path).parent / TRUST_FILE) if ref is not None else None}


def warning_line(case_id: str, trust: Mapping[str, Any]) -> str | None:
    """The warning ``m2cofs predict`` prints for a case that looks out of domain (else ``None``)."""
    if not trust.get("flags"):
        return None
    return (f"warning: case {case_id} looks unlike the model's training data, do not trust its segmentation: "
            + "; ".join(trust["flags"]))
