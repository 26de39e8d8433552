"""The evaluation run: :func:`evaluate` (``m2cofs evaluate``) checks everything, scores every
case, then writes ``metrics.csv``, ``summary.json`` and ``report.html``, each atomically."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from m2cofs.errors import M2CofsError
from m2cofs.evaluation.discovery import (check_not_dataset_files, check_pred_and_data_apart, check_writable,
                                         data_folder, find_predictions, prediction_convention, resolve_modalities)
from m2cofs.evaluation.grids import check_prediction_grids
from m2cofs.evaluation.scoring import CaseJob, CaseResult, run_jobs
from m2cofs.evaluation.selection import MASK_TEXT, MASKS, SCALING_TEXT, resolve_metric_names, resolve_modes
from m2cofs.evaluation.summary import (VOLUME_RATIO_FLAG, json_safe, metrics_csv_text, ordered_columns, summarize,
                                      volume_table)
from m2cofs.io import is_inside
from m2cofs.reporting.ordering import worst_first

OUTPUT_FILES = ("metrics.csv", "summary.json", "report.html")
DEFAULT_MAX_PREVIEWS = 20


def retention_text(convention) -> dict[str, Any]:
    """``summary.json``'s ``retention``: the definition of lesion contrast retention, its regions
    in this label convention, its thresholds (a note where the convention defines none)."""
    from m2cofs.metrics.retention import CONTRAST_OF, CONTRASTS, MIN_REGION_VOXELS, MIN_SOURCE_CONTRAST, defined_for

    out: dict[str, Any] = {
        "definition": "d_X(R, B) = (mean_X(R) - mean_X(B)) / std_X(brain); retention of a source = "
                      "d_fused / d_source on that source's contrast; both = the smallest over the sources "
                      "(ours, not the paper's; on the volumes as scaled for the fusion metrics, inside the brain mask)",
        "contrasts": {m: f"{CONTRASTS[k][0]} vs {CONTRASTS[k][1]} ({k})" for m, k in CONTRAST_OF.items()},
        "min_region_voxels": MIN_REGION_VOXELS,
        "min_source_contrast": MIN_SOURCE_CONTRAST,
    }
    if defined_for(convention):
        out["regions"] = {r: sorted(convention.regions[r]) for r in ("ET", "WT")}
    else:
        out["note"] = (f"lesion contrast retention not computed: label convention {convention.name!r} has no "
                       "ET / WT regions")
    return out


@dataclass
class EvaluationResult:
    results: list[CaseResult]
    columns: list[str]
    summary: dict[str, Any]
    notes: list[str]
    written: list[Path]


def evaluate(
    pred: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str = "auto",
    labels: str = "auto",
    modalities: Sequence[str] | None = None,
    resample_to: str | None = None,
    mode: str | Sequence[str] = "both",
    metrics: str | Sequence[str] | None = None,
    mask: str = "brain",
    report: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
    max_previews: int | None = DEFAULT_MAX_PREVIEWS,
    brats_official: bool = False,
    log=None,
) -> EvaluationResult:
    """Evaluate the predictions in ``pred`` against the dataset ``data``; write into ``out``.

    See :mod:`m2cofs.evaluation`. Raises :class:`M2CofsError` for every user-facing problem; in
    that case nothing is written to ``out``. ``brats_official``: add BraTS's lesion-wise Dice and
    HD95 per region (:mod:`m2cofs.evaluation.brats_official`; needs ``pip install 'm2cofs[brats]'``).
    """
    from m2cofs.data.dataset import case_convention, resolve_convention
    from m2cofs.data.layouts import discover

    log = log or (lambda msg: print(msg, file=sys.stderr))
    pred, data, out = Path(pred), Path(data), Path(out)
    modes = resolve_modes(mode)
    fusion_names, seg_names = resolve_metric_names(metrics)
    if workers < 1:
        raise M2CofsError("--workers must be at least 1")
    if brats_official:  # before any work: the optional package is there
        from m2cofs.evaluation.brats_official import require

        require()
    if mask not in MASKS:
        raise M2CofsError(f"--mask: unknown mask {mask!r}; choose {' or '.join(MASKS)}")

    # where the report goes: never into the dataset, never over old results without --overwrite
    if not data.exists():
        raise M2CofsError("no such file or folder", data)
    folder = data_folder(data)
    if folder is not None and is_inside(out, folder):
        raise M2CofsError("the report folder must not be the dataset folder or inside it (--out)", out)
    if out.is_symlink() and not out.exists():
        raise M2CofsError(f"--out is a symbolic link to {os.readlink(out)}, which does not exist", out)
    if out.exists() and not out.is_dir():
        raise M2CofsError("--out exists and is not a folder", out)
    check_writable(out)  # before every metric is computed
    existing = [t for t in (out / f for f in OUTPUT_FILES) if t.exists()]
    if existing and not overwrite:
        raise M2CofsError(f"{', '.join(t.name for t in existing)} already exist(s); pass --overwrite to replace", out)

    check_pred_and_data_apart(pred, data)
    preds = find_predictions(pred, ignore=[out])
    spec = discover(data, format)
    convention, conv_reason = resolve_convention(spec, labels)
    if brats_official:
        from m2cofs.evaluation.brats_official import check_convention

        check_convention(convention)
    mods, mods_reason = resolve_modalities(modalities, preds, spec)
    notes = list(preds.notes)

    by_id = {c.id: c for c in spec.cases}
    matched = [cid for cid in by_id if cid in preds.cases]
    orphans = sorted(cid for cid in preds.cases if cid not in by_id)
    missing = [cid for cid in by_id if cid not in preds.cases]
    if orphans:
        notes.append(f"{len(orphans)} prediction(s) with no matching case in {data}: {', '.join(orphans[:10])}"
                     f"{', ...' if len(orphans) > 10 else ''}")
    if missing:
        notes.append(f"{len(missing)} case(s) with no prediction: {', '.join(missing[:10])}"
                     f"{', ...' if len(missing) > 10 else ''}")
    if not matched:
        raise M2CofsError(
            f"no prediction matches a case of {data} ({len(preds.cases)} prediction folder(s), "
            f"{len(by_id)} case(s)); expected OUT/<id>/<id>_fused.nii.gz or <id>_seg.nii.gz with the dataset's ids",
            pred,
        )
    check_not_dataset_files(preds, spec, matched)
    if not convention.regions and any(preds.cases[cid].seg is not None for cid in matched):
        notes.append(f"the dataset has no labels ({conv_reason}): segmentation metrics skipped, fusion metrics only")
    if resample_to is not None and resample_to not in mods:
        raise M2CofsError(f"--resample-to {resample_to}: not among the evaluated modalities {', '.join(mods)}")

    n_prev = len(matched) if max_previews is None else min(len(matched), max(0, max_previews))
    # every case previewed: with its metrics; only some: the worst ones, rendered once the metrics are known
    inline = report and n_prev == len(matched)
    jobs = [CaseJob(by_id[cid], mods, case_convention(by_id[cid], convention), resample_to, preds.cases[cid].fused, preds.cases[cid].seg,
                    modes, fusion_names, seg_names, preview=inline, mask=mask,
                    pred_convention=prediction_convention(preds, cid, case_convention(by_id[cid], convention)),
                    brats_official=brats_official)
            for cid in matched]
    check_prediction_grids(jobs)
    log(f"evaluating {len(jobs)} case(s): labels {convention.name} ({conv_reason}); sources "
        f"{', '.join(mods)} ({mods_reason}); modes {', '.join(modes)}; mask {mask}")

    t0 = time.perf_counter()
    results = run_jobs(jobs, workers, progress, "evaluate")
    if report and not inline and n_prev:
        from dataclasses import replace

        worst = [r.id for r in worst_first(results)[:n_prev]]
        by_job = {j.spec.id: j for j in jobs}
        shots = run_jobs([replace(by_job[cid], fusion_metrics=[], seg_metrics=[], preview=True, brats_official=False) for cid in worst],
                          workers, progress, "previews")
        for r in results:
            for shot in shots:
                if shot.id == r.id:
                    r.preview, r.panel = shot.preview, shot.panel
    elapsed = time.perf_counter() - t0

    for r in results:
        notes += [f"{r.id}: {n}" for n in r.notes]
    if any(r.has_fused and r.has_gt for r in results) and "note" in retention_text(convention):
        notes.append(retention_text(convention)["note"])
    from m2cofs.evaluation.brats_official import METRICS as BRATS_METRICS

    columns = ordered_columns(results, modes, fusion_names, seg_names + list(BRATS_METRICS if brats_official else ()),
                              convention.region_names)
    stats = summarize(results, columns)
    if n_prev < len(matched) and report:
        notes.append(f"report previews of {n_prev} of {len(matched)} cases, the worst by mean Dice (--max-previews)")
    summary = {
        "pred": str(pred),
        "data": str(data),
        "format": spec.format,
        "labels": convention.name,
        "labels_reason": conv_reason,
        "regions": {r: sorted(m) for r, m in convention.regions.items()},
        "modalities": mods,
        "modalities_reason": mods_reason,
        "modes": modes,
        "fusion_metrics": fusion_names,
        "segmentation_metrics": seg_names,
        "brats_official": ({"package": "brats-evaluation (panoptica), glioma configuration 'gli'",
                            "columns": "LesionDice/<region>, LesionHD95/<region> (mm; infinite -> 373)"}
                           if brats_official else None),
        "mask": mask,
        "mask_description": MASK_TEXT[mask],
        "scaling": SCALING_TEXT[mask],
        "empty_regions": {"both_empty": {"Dice": 1.0, "HD95": 0.0},
                          "one_empty": {"Dice": 0.0, "HD95": "volume diagonal in mm (penalty)"}},
        "std": "sample standard deviation (ddof=1); 0 for a single case",
        "retention": retention_text(convention),
        "cases": {
            "evaluated": len(results),
            "ids": [r.id for r in results],
            "with_fused": sum(r.has_fused for r in results),
            "with_seg": sum(r.has_seg for r in results),
            "with_ground_truth": sum(r.has_gt for r in results),
            "predictions_without_case": orphans,
            "cases_without_prediction": missing,
        },
        "metrics": stats,
        "notes": notes,
        "seconds": round(elapsed, 2),
    }
    if preds.info:
        notes.extend(str(n) for n in preds.info.get("report_notes", []) if isinstance(n, str))
        summary["predict"] = {k: v for k, v in preds.info.items() if isinstance(v, (str, int, float, bool, list))}
    from m2cofs.reporting.provenance import provenance_from_predict

    summary["provenance"] = provenance_from_predict(preds.info, preds.root / "predict.json")
    recorded = preds.info.get("cases") if isinstance(preds.info, dict) else None
    trust = {cid: c["trust"] for cid, c in (recorded if isinstance(recorded, dict) else {}).items()
             if cid in matched and isinstance(c, dict) and isinstance(c.get("trust"), dict)}
    if trust:  # m2cofs predict's trust check (m2cofs.inference.trust)
        summary["trust"] = trust
        flagged = [cid for cid, t in trust.items() if t.get("flags")]
        if flagged:
            notes.append(f"{len(flagged)} case(s) looked out of domain to m2cofs predict's trust check (do not trust "
                         f"their segmentation): {', '.join(flagged[:10])}{', ...' if len(flagged) > 10 else ''}")
    volumes = volume_table(results)
    if volumes:
        summary["volumes_ml"] = volumes
        flagged = [f"{cid} {reg}" for cid, regs in volumes.items() for reg, v in regs.items() if v["flag"]]
        summary["volume_flags"] = flagged
        if flagged:
            notes.append(f"{len(flagged)} predicted region volume(s) differ from the ground truth by more than "
                         f"{VOLUME_RATIO_FLAG:g}x (or one is empty): {', '.join(flagged[:10])}"
                         f"{', ...' if len(flagged) > 10 else ''}")
    summary["case_order"] = {"report": "worst first: by mean Dice over the regions, lowest first",
                             "ids": [r.id for r in worst_first(results)]}
    csv_text = metrics_csv_text(results, columns)
    html_text = None
    if report:
        from m2cofs.reporting.html import render_evaluation_report

        html_text = render_evaluation_report(summary, results, columns, convention)

    from m2cofs.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    written = []
    atomic_write_text(out / "metrics.csv", csv_text)
    written.append(out / "metrics.csv")
    atomic_write_text(out / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    written.append(out / "summary.json")
    if html_text is not None:
        atomic_write_text(out / "report.html", html_text)
        written.append(out / "report.html")
    elif (out / "report.html").exists():  # --overwrite --no-report: an old report would be stale
        (out / "report.html").unlink()
        notes.append("removed the stale report.html of an earlier run (--no-report)")
    return EvaluationResult(results, columns, summary, notes, written)
