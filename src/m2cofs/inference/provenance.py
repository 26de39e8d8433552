"""Which model made the predictions: what ``m2cofs predict`` records in ``OUT/predict.json``.

:func:`model_provenance` describes the model: its path, the SHA-256 of the model file (checked
against the sidecar when it was loaded), its kind and preset, the m2cofs version that wrote it,
the training data (folder and number of cases) and the git commit of the code, each where the
model's sidecar (or the ``run.json`` of the run folder it sits in) records it, else ``None``.
:mod:`m2cofs.reporting.provenance` reads the same :data:`FIELDS` back for the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

FIELDS = ("model_name", "model", "model_sha256", "model_kind", "preset", "model_version", "training_data", "training_cases",
          "git_commit")


def _run_json(model: Path, trained_on: list) -> dict[str, Any]:
    """The ``run.json`` beside the model, if it describes this model's training (same cases)."""
    path = model.parent / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(info, dict) or (trained_on and info.get("cases") != list(trained_on)):
        return {}
    return info


def model_provenance(path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The model's provenance for ``predict.json`` (see the module docstring)."""
    model = Path(path).resolve()
    trained_on = meta.get("trained_on") or []
    run = _run_json(model, trained_on)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return {
        "model": str(model),
        "model_sha256": meta.get("sha256"),
        "model_kind": meta.get("kind"),
        "preset": meta.get("preset") or config.get("preset"),
        "model_version": meta.get("version"),
        "training_data": meta.get("training_data") or run.get("data"),
        "training_cases": len(trained_on) if trained_on else (len(run["cases"]) if run.get("cases") else None),
        "git_commit": meta.get("git_commit") or run.get("git_commit"),
    }
