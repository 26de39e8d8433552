"""Scoring one case: load it and its predictions, compute fusion metrics, lesion contrast
retention (with a label), Dice / HD95, region volumes and (when asked) the preview and the
tumour panel; :func:`run_jobs` does it for every case, in worker
processes when asked."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from m2cofs.data.labels import LabelConvention
from m2cofs.data.layouts import CaseSpec
from m2cofs.errors import M2CofsError
from m2cofs.metrics.segmentation import region_metrics, spacing_from_affine


@dataclass
class CaseJob:
    """Everything needed to evaluate one case (picklable, for worker processes)."""

    spec: CaseSpec
    modalities: list[str]
    convention: LabelConvention
    resample_to: str | None
    fused: Path | None
    seg: Path | None
    modes: list[str]
    fusion_metrics: list[str]
    seg_metrics: list[str]
    preview: bool = False
    mask: str = "brain"  # where fusion metrics are computed: "brain" or "none" (whole slices / volume)
    pred_convention: LabelConvention | None = None  # the segmentation's (predict.json's), when not the dataset's
    brats_official: bool = False  # add BraTS's lesion-wise Dice / HD95 (the brats-evaluation package)


@dataclass
class CaseResult:
    """The metrics of one case (``values``: column → float) and its preview PNG."""

    id: str
    values: dict[str, float]
    penalised: list[str] = field(default_factory=list)  # regions with exactly one of pred / GT empty
    notes: list[str] = field(default_factory=list)
    preview: bytes | None = None
    panel: bytes | None = None  # the tumour panel (sources, fused, mean fusion on the tumour's slice)
    has_fused: bool = False
    has_seg: bool = False
    has_gt: bool = False
    seconds: float = 0.0
    volumes: dict[str, dict[str, float]] = field(default_factory=dict)  # region → {"pred": mL, "true": mL}


def _read_prediction(path: Path, case, what: str) -> np.ndarray:
    from m2cofs.data.loading import grid_text, read_volume, same_grid

    data, aff, _ = read_volume(path, what)
    if not same_grid(data.shape, aff, case.shape, case.affine):
        raise M2CofsError(f"prediction grid {grid_text(data.shape, aff)} differs from case {case.id}'s grid "
                          f"{grid_text(case.shape, case.affine)}", path)
    return data


def _read_seg(path: Path, case, convention: LabelConvention) -> np.ndarray:
    from m2cofs.data.labels import check_label_values

    data = _read_prediction(path, case, "label")
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        if not np.allclose(data, rounded, atol=1e-3):
            raise M2CofsError("segmentation has non-integer values", path)
        data = rounded
    # the values as stored, before any narrowing cast (2**32 + 1 must not become 1)
    bad = check_label_values(set(np.unique(data).tolist()), convention)
    if bad:
        raise M2CofsError(f"segmentation label values {bad} are not in the {convention.name} convention "
                          f"(allowed {sorted(convention.values)}): it was written in another one; run "
                          f"'m2cofs predict --labels {convention.name}' again, or pass evaluate --labels if "
                          f"{convention.name} is not the dataset's", path)
    return data.astype(np.int16)


def evaluate_case(job: CaseJob) -> CaseResult:
    """Load one case and its predictions, compute its metrics and (if asked) its preview."""
    from m2cofs.data.loading import foreground_mask, load_case
    from m2cofs.data.preprocess import PreprocessConfig, scale_intensity

    t0 = time.perf_counter()
    case = load_case(job.spec, job.modalities, job.convention, job.resample_to)
    res = CaseResult(case.id, {}, has_fused=job.fused is not None, has_seg=job.seg is not None,
                     has_gt=case.label is not None)
    res.notes += [n for n in case.notes if n.startswith("resampled")]
    if job.mask == "none":  # the paper's convention: whole slices, scaled over the whole volume
        fg = np.ones(case.shape, dtype=bool)
        metric_mask = None
    else:
        fg = foreground_mask(case.images, case.mask)
        metric_mask = fg
    cfg = PreprocessConfig()
    sources = {m: scale_intensity(v, fg, cfg)[0] for m, v in zip(case.modalities, case.images)}
    seg = None
    if job.seg is not None and not job.convention.regions:  # no labels (none): nothing to check it against
        res.notes.append(f"label convention {job.convention.name!r} has no regions (no label files): "
                         "segmentation not scored")
    elif job.seg is not None:  # before the fusion metrics: a mismatch fails fast
        own = job.pred_convention or job.convention
        seg = _read_seg(job.seg, case, own)
        if own.name != job.convention.name:  # the same regions in the dataset's values
            from m2cofs.data.labels import labels_to_regions, regions_to_labels

            regions = labels_to_regions(seg, own)
            order = [own.region_names.index(r) for r in job.convention.region_names]
            seg = regions_to_labels(regions[order], job.convention).astype(np.int16)
            res.notes.append(f"segmentation read in its {own.name} convention (predict.json), scored as "
                             f"{job.convention.name}")
    fused = None
    if job.fused is not None:
        raw = _read_prediction(job.fused, case, "fused").astype(np.float32)
        fused = scale_intensity(raw, fg, cfg)[0]
        del raw
        if job.fusion_metrics:
            if len(sources) < 2:
                res.notes.append(f"only {len(sources)} source modality: fusion metrics need two or more")
            else:
                from m2cofs.metrics.fusion import fusion_metrics

                for mode in job.modes:
                    try:
                        vals = fusion_metrics(list(sources.values()), fused, metric_mask, mode, job.fusion_metrics)
                    except ValueError as exc:
                        raise M2CofsError(f"fusion metrics ({mode} mode) failed: {exc}", job.fused) from None
                    for k in job.fusion_metrics:
                        res.values[f"{mode}/{k}"] = float(vals[k])
    if fused is not None and case.label is not None:
        from m2cofs.metrics.retention import defined_for, lesion_retention

        if defined_for(job.convention):  # the run's summary notes a convention without ET / WT once
            brain = fg if job.mask != "none" else foreground_mask(case.images, case.mask)
            ret = lesion_retention(sources, fused, case.label, job.convention, brain)
            res.values.update(ret.as_row())
            res.notes += ret.notes
    if seg is not None:
        if job.seg_metrics:
            if case.label is None:
                res.notes.append("no ground-truth label: segmentation not scored")
            else:
                scores = region_metrics(seg, case.label, job.convention, spacing_from_affine(case.affine),
                                        job.seg_metrics)
                res.values.update(scores.as_row(job.seg_metrics))
                res.volumes = region_volumes_ml(seg, case.label, job.convention, case.affine)
                res.penalised = list(scores.penalised)
                if job.brats_official:
                    from m2cofs.evaluation.brats_official import brats_official_metrics

                    res.values.update(brats_official_metrics(seg, case.label, job.convention,
                                                             spacing_from_affine(case.affine)))
                if scores.penalised:
                    res.notes.append(f"HD95 penalty {scores.penalty:.2f} mm (one side empty) for "
                                     f"{', '.join(scores.penalised)}")
    # segmentation columns first, then fusion (the order of metrics.csv)
    res.values = dict(sorted(res.values.items(), key=lambda kv: not kv[0].startswith(("Dice/", "HD95/", "Lesion"))))
    if job.preview:
        from m2cofs.previews import render_case_preview_png

        res.preview = render_case_preview_png(sources, fused, seg, job.convention, gt=case.label,
                                              title=case.id, affine=case.affine)
        if case.label is not None:
            res.panel = tumour_panel(sources, fused, case.label, job.convention, case.affine, fg)
    res.seconds = time.perf_counter() - t0
    return res


def tumour_panel(sources: dict[str, np.ndarray], fused: np.ndarray | None, label: np.ndarray,
                 convention: LabelConvention, affine: np.ndarray, brain: np.ndarray) -> bytes | None:
    """The tumour panel (:func:`~m2cofs.previews.render_tumour_panel_png`): the sources with a
    lesion contrast (T1ce, FLAIR, T2; else all), the fused volume and mean fusion, captioned
    with their lesion contrast retention."""
    from m2cofs.metrics.retention import contrast_kind, defined_for, lesion_retention
    from m2cofs.previews import render_tumour_panel_png

    shown = {m: v for m, v in sources.items() if contrast_kind(m)} or dict(sources)
    volumes = dict(shown)
    if fused is not None:
        volumes["fused"] = fused
    if len(sources) >= 2:
        from m2cofs.data.preprocess import PreprocessConfig, scale_intensity

        # scaled as evaluate scales a mean-fusion prediction, so its caption is the score it would get
        mean = np.where(brain, np.mean(list(sources.values()), axis=0), 0).astype(np.float32)
        volumes["mean fusion"] = scale_intensity(mean, brain, PreprocessConfig())[0]
    captions = {}
    if defined_for(convention):
        for name in ("fused", "mean fusion"):
            if name in volumes:
                vals = lesion_retention(sources, volumes[name], label, convention, brain).values
                captions[name] = " · ".join(f"{k} {v:.2f}" for k, v in vals.items()) if vals else ""
    return render_tumour_panel_png(volumes, label, convention, affine=affine, captions=captions)


def run_jobs(jobs: Sequence[CaseJob], workers: int, progress: bool, desc: str) -> list[CaseResult]:
    """:func:`evaluate_case` of every job, in order (in ``workers`` processes when more than one)."""
    from tqdm.auto import tqdm

    results: list[CaseResult] = []
    bar = tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress, file=sys.stderr)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                bar.set_postfix_str(job.spec.id, refresh=False)
                results.append(evaluate_case(job))
                bar.update()
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                for res in pool.map(evaluate_case, jobs):
                    results.append(res)
                    bar.update()
    finally:
        bar.close()
    return results


def region_volumes_ml(pred: np.ndarray, true: np.ndarray, convention: LabelConvention,
                      affine: np.ndarray) -> dict[str, dict[str, float]]:
    """Predicted and true volume (mL) of each of the convention's regions."""
    from m2cofs.data.labels import labels_to_regions

    voxel_ml = float(np.prod(spacing_from_affine(affine))) / 1000.0
    p, t = labels_to_regions(pred, convention), labels_to_regions(true, convention)
    return {r: {"pred": float(p[i].sum()) * voxel_ml, "true": float(t[i].sum()) * voxel_ml}
            for i, r in enumerate(convention.region_names)}

