"""Which model made the predictions, as the report shows it.

``m2cofs predict`` records the model's provenance in ``predict.json``
(:func:`m2cofs.inference.provenance.model_provenance`); :func:`provenance_from_predict` reads
those fields back for ``summary.json`` and the report's Provenance section, and :data:`LABELS`
names them there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from m2cofs.inference.provenance import FIELDS

LABELS = {
    "model_name": "Bundled model", "model": "Model file", "model_sha256": "SHA-256 of the model file", "model_kind": "Model kind",
    "preset": "Preset", "model_version": "m2cofs version that wrote the model",
    "training_data": "Training data (folder)", "training_cases": "Training cases", "git_commit": "Git commit",
}

__all__ = ["FIELDS", "LABELS", "provenance_from_predict"]


def provenance_from_predict(info: Mapping[str, Any] | None, where: Path) -> dict[str, Any]:
    """``summary.json``'s ``provenance``: the model fields of ``predict.json`` (``None`` where not
    recorded), and where they come from."""
    if not info:
        return {"source": None, "note": f"no {where.name} in the prediction folder: the model is not known",
                **{k: None for k in FIELDS}}
    out: dict[str, Any] = {"source": str(where)}
    for k in FIELDS:
        v = info.get(k)
        if k == "model" and v is None:
            v = info.get("checkpoint")  # predictions written by other tools
        out[k] = v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else None
    return out
