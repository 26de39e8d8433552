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
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from m2cofs.data.labels import LabelConvention
from m2cofs.data.layouts import CaseSpec, strip_nifti_suffix
from m2cofs.errors import M2CofsError
from m2cofs.io import is_inside
from m2cofs.metrics.segmentation import SEG_METRICS, region_metrics, spacing_from_affine
from m2cofs.metrics import registry
from m2cofs.metrics.registry import MODES, higher_is_better

OUTPUT_FILES = ("metrics.csv", "summary.json", "report.html")
MASKS = ("brain", "none")
MASK_TEXT = {
    "brain": "brain: the case's brain mask when present, else foreground_mask of the sources; fusion metrics "
             "inside it, background excluded (m2cofs's default; not the paper's Table 1 convention)",
    "none": "none: whole slices (slice mode) / the whole volume, background included, as in the MATLAB scripts "
            "behind the paper's Table 1 (comparable with the paper's numbers; not with --mask brain)",
}
SCALING_TEXT = {
    "brain": "scale_intensity(PreprocessConfig()) per volume inside the brain mask: "
             "[min(0, p0.5), p99.5] -> [0, 1], clipped, 0 outside the mask",
    "none": "scale_intensity(PreprocessConfig()) over the whole volume (background included): "
            "[min(0, p0.5), p99.5] -> [0, 1], clipped",
}
DEFAULT_MAX_PREVIEWS = 20
#: a predicted region volume more than this many times the true one (or less than its inverse) is flagged
VOLUME_RATIO_FLAG = 2.0
PRED_SUFFIXES = (".nii.gz", ".nii")


# ------------------------------------------------------------------------------ predictions
@dataclass
class PredictionFiles:
    """The prediction files of one case (either may be missing)."""

    id: str
    folder: Path
    fused: Path | None = None
    seg: Path | None = None


@dataclass
class PredictionSet:
    root: Path
    cases: dict[str, PredictionFiles]
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] | None = None  # OUT/predict.json


def _find_file(folder: Path, cid: str, kind: str) -> Path | None:
    for suf in PRED_SUFFIXES:
        p = folder / f"{cid}_{kind}{suf}"
        if p.is_file():
            return p
    return None


def find_predictions(root: str | os.PathLike, ignore: Sequence[str | os.PathLike] = ()) -> PredictionSet:
    """Scan a prediction folder (``OUT/<id>/<id>_{fused,seg}.nii.gz``) and read ``predict.json``."""
    root = Path(root)
    if not root.exists():
        raise M2CofsError("prediction folder not found", root)
    if not root.is_dir():
        raise M2CofsError("--pred must be a folder (OUT/<id>/<id>_fused.nii.gz, <id>_seg.nii.gz)", root)
    ignored = {os.path.realpath(p) for p in ignore}
    cases: dict[str, PredictionFiles] = {}
    notes: list[str] = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith(".") or os.path.realpath(d) in ignored:
            continue
        cid = d.name
        fused, seg = _find_file(d, cid, "fused"), _find_file(d, cid, "seg")
        if fused is None and seg is None:
            niftis = [f.name for f in d.iterdir() if strip_nifti_suffix(f.name) is not None]
            if niftis:
                notes.append(f"{d}: no {cid}_fused.nii.gz or {cid}_seg.nii.gz (found {', '.join(sorted(niftis)[:3])}"
                             f"{', ...' if len(niftis) > 3 else ''}): ignored")
            continue
        cases[cid] = PredictionFiles(cid, d, fused, seg)
    if not cases:
        looked = ", ".join(f"<id>/<id>_{k}{suf}" for k in ("fused", "seg") for suf in PRED_SUFFIXES)
        subdirs = [d.name for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        found = (f"{len(subdirs)} subfolder(s) ({', '.join(subdirs[:5])}{', ...' if len(subdirs) > 5 else ''}), "
                 "none holding such a file" if subdirs else "no case subfolder")
        raise M2CofsError(f"no prediction files: looked for {looked} (as 'm2cofs predict' writes them) and "
                          f"found {found}; is --pred the output folder of 'm2cofs predict'?", root)
    info = None
    pj = root / "predict.json"
    if pj.is_file():
        try:
            info = json.loads(pj.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise M2CofsError(f"unreadable predict.json ({exc})", pj) from None
        if not isinstance(info, dict):
            raise M2CofsError("predict.json is not a JSON object", pj)
    return PredictionSet(root, cases, notes, info)


# ----------------------------------------------------------------------------------- metrics
def resolve_metric_names(names: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Split a metric selection into (fusion metrics, segmentation metrics).

    ``None`` selects everything. Names are case-insensitive (``q_mi``, ``QMI``, ``dice``,
    ``hd95``); ``paper`` = the paper's six fusion metrics, ``fusion`` = all fusion metrics,
    ``seg`` = Dice and HD95. A group with nothing selected is not computed.
    """
    try:
        picked = registry.resolve_selection(names)
    except KeyError as e:
        raise M2CofsError(f"--metrics: unknown metric {e.args[0]!r}; choose from {', '.join(registry.FUSION_METRICS)}, "
                          f"{', '.join(SEG_METRICS)} (or paper, fusion, seg, all)") from None
    if picked is None:
        raise M2CofsError("--metrics: no metric named")
    return picked


def resolve_modes(mode: str | Sequence[str]) -> list[str]:
    """``"both"`` → ``["volume", "slice"]``; ``"slice"`` / ``"volume"`` → that one."""
    try:
        return registry.resolve_modes(mode)
    except KeyError as e:
        raise M2CofsError(f"--mode: unknown mode {e.args[0]}; choose slice, volume or both") from None


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


@dataclass
class CaseResult:
    """The metrics of one case (``values``: column → float) and its preview PNG."""

    id: str
    values: dict[str, float]
    penalised: list[str] = field(default_factory=list)  # regions with exactly one of pred / GT empty
    notes: list[str] = field(default_factory=list)
    preview: bytes | None = None
    has_fused: bool = False
    has_seg: bool = False
    has_gt: bool = False
    seconds: float = 0.0
    volumes: dict[str, dict[str, float]] = field(default_factory=dict)  # region → {"pred": mL, "true": mL}


def _header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:

    from m2cofs.data.loading import _open

    img = _open(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    return shape, np.asarray(img.affine, dtype=np.float64)


def _grid_text(shape, affine) -> str:
    from m2cofs.data.loading import _grid_text as gt

    return gt(shape, affine)


def _check_grid(pred: Path, shape, affine, case_id: str, ref_name: str) -> None:
    from m2cofs.data.loading import same_grid

    pshape, paff = _header_grid(pred)
    if len(pshape) != 3:
        raise M2CofsError(f"is {len(pshape)}-D with shape {pshape}, expected a 3-D volume on case {case_id}'s grid", pred)
    if not same_grid(pshape, paff, shape, affine):
        what = "shape" if tuple(pshape) != tuple(shape) else "affine"
        raise M2CofsError(
            f"prediction {what} differs from case {case_id}: prediction on {_grid_text(pshape, paff)}, "
            f"case ({ref_name}) on {_grid_text(shape, affine)}; predictions must be on the input's original grid",
            pred,
        )


def check_prediction_grids(jobs: Sequence[CaseJob]) -> None:
    """Compare every prediction's header grid with its case's reference image (fast, no data read)."""
    for job in jobs:
        ref_mod = job.resample_to or job.modalities[0]
        ref = job.spec.images.get(ref_mod)
        if ref is None:
            raise M2CofsError(f"case {job.spec.id!r} has no {ref_mod} image (found: {', '.join(job.spec.images) or 'none'})")
        shape, aff = _header_grid(ref.path)
        shape = shape[:3]
        for p in (job.fused, job.seg):
            if p is not None:
                _check_grid(p, shape, aff, job.spec.id, ref.path.name)


def _read_prediction(path: Path, case, what: str) -> np.ndarray:
    from m2cofs.data.loading import read_volume, same_grid

    data, aff, _ = read_volume(path, what)
    if not same_grid(data.shape, aff, case.shape, case.affine):
        raise M2CofsError(f"prediction grid {_grid_text(data.shape, aff)} differs from case {case.id}'s grid "
                          f"{_grid_text(case.shape, case.affine)}", path)
    return data


def _read_seg(path: Path, case, convention: LabelConvention) -> np.ndarray:
    from m2cofs.data.labels import check_label_values

    data = _read_prediction(path, case, "label")
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        if not np.allclose(data, rounded, atol=1e-3):
            raise M2CofsError("segmentation has non-integer values", path)
        data = rounded
    data = data.astype(np.int32)
    bad = check_label_values(set(np.unique(data).tolist()), convention)
    if bad:
        raise M2CofsError(f"segmentation label values {bad} are not in the dataset's {convention.name} convention "
                          f"(allowed {sorted(convention.values)})", path)
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
    seg = None
    if job.seg is not None:
        seg = _read_seg(job.seg, case, job.convention)
        if job.seg_metrics:
            if not job.convention.regions:
                res.notes.append(f"label convention {job.convention.name!r} has no regions: segmentation not scored")
            elif case.label is None:
                res.notes.append("no ground-truth label: segmentation not scored")
            else:
                scores = region_metrics(seg, case.label, job.convention, spacing_from_affine(case.affine),
                                        job.seg_metrics)
                res.values.update(scores.as_row(job.seg_metrics))
                res.volumes = region_volumes_ml(seg, case.label, job.convention, case.affine)
                res.penalised = list(scores.penalised)
                if scores.penalised:
                    res.notes.append(f"HD95 penalty {scores.penalty:.2f} mm (one side empty) for "
                                     f"{', '.join(scores.penalised)}")
    # segmentation columns first, then fusion (the order of metrics.csv)
    res.values = dict(sorted(res.values.items(), key=lambda kv: not kv[0].startswith(("Dice/", "HD95/"))))
    if job.preview:
        from m2cofs.reporting.previews import render_case_preview_png

        res.preview = render_case_preview_png(sources, fused, seg, job.convention, gt=case.label,
                                              title=case.id, affine=case.affine)
    res.seconds = time.perf_counter() - t0
    return res


def _run_jobs(jobs: Sequence[CaseJob], workers: int, progress: bool, desc: str) -> list[CaseResult]:
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


# ---------------------------------------------------------------------------------- summary
def region_volumes_ml(pred: np.ndarray, true: np.ndarray, convention: LabelConvention,
                      affine: np.ndarray) -> dict[str, dict[str, float]]:
    """Predicted and true volume (mL) of each of the convention's regions."""
    from m2cofs.data.labels import labels_to_regions

    voxel_ml = float(np.prod(spacing_from_affine(affine))) / 1000.0
    p, t = labels_to_regions(pred, convention), labels_to_regions(true, convention)
    return {r: {"pred": float(p[i].sum()) * voxel_ml, "true": float(t[i].sum()) * voxel_ml}
            for i, r in enumerate(convention.region_names)}


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


def mean_dice(result: CaseResult) -> float | None:
    """Mean of a case's finite Dice values over the regions (``None`` without any)."""
    vals = [v for k, v in result.values.items() if k.startswith("Dice/") and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def worst_first(results: Sequence[CaseResult]) -> list[CaseResult]:
    """Cases by mean Dice, lowest first; cases without a Dice after them, in their order."""
    scored = sorted((r for r in results if mean_dice(r) is not None), key=lambda r: (mean_dice(r), r.id))
    return scored + [r for r in results if mean_dice(r) is None]


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
    """The metric columns present in any result, in a fixed order (segmentation, then fusion)."""
    present = set().union(*(r.values for r in results)) if results else set()
    cols = [f"{m}/{r}" for m in seg for r in regions]
    cols += [f"{mode}/{m}" for mode in modes for m in fusion]
    return [c for c in cols if c in present]


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


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------ driver
@dataclass
class EvaluationResult:
    results: list[CaseResult]
    columns: list[str]
    summary: dict[str, Any]
    notes: list[str]
    written: list[Path]


def _data_folder(data: Path) -> Path | None:
    """The folder REPORT must stay out of: DATA itself, or a Decathlon dataset.json's folder
    (a datalist JSON may sit anywhere, next to unrelated folders)."""
    if data.is_dir():
        return data
    return data.parent if data.name == "dataset.json" else None


def check_pred_and_data_apart(pred: Path, data: Path) -> None:
    """Refuse a prediction folder that is the dataset folder, inside it or around it (links
    resolved): its ``<id>/<id>_seg.nii.gz`` files would be the ground truth scored against itself."""
    folder = _data_folder(data)
    if folder is None or not pred.exists():  # a datalist JSON: its files are checked one by one
        return
    p, d = pred.resolve(), folder.resolve()
    if p == d:
        raise M2CofsError(f"--pred and --data are the same folder ({d}): the ground truth would be scored against "
                          "itself; --pred must be the output folder of 'm2cofs predict'", pred)
    if d in p.parents:
        raise M2CofsError(f"--pred is inside the dataset folder {d} (--data); predictions must be kept apart from "
                          "the dataset, whose <id>_seg files are the ground truth", pred)
    if p in d.parents:
        raise M2CofsError(f"--pred contains the dataset folder {d} (--data); its <id>_seg files (the ground truth) "
                          "would be read as predictions; pass the output folder of 'm2cofs predict'", pred)


def _check_not_dataset_files(preds: "PredictionSet", spec, matched: Sequence[str]) -> None:
    """A prediction file that is one of the case's own files (a datalist pointing into --pred)."""
    by_id = {c.id: c for c in spec.cases}
    for cid in matched:
        case = by_id[cid]
        own = [r.path for r in case.images.values()] + [q for q in (case.label, case.mask) if q is not None]
        for f in (preds.cases[cid].fused, preds.cases[cid].seg):
            if f is None:
                continue
            for o in own:
                try:
                    same = os.path.samefile(f, o)
                except OSError:
                    same = False
                if same:
                    raise M2CofsError(f"this prediction is case {cid}'s own file {o} in --data: the dataset would be "
                                      "scored against itself", f)


def _resolve_modalities(modalities, pred: PredictionSet, spec) -> tuple[list[str], str]:
    from m2cofs.data.dataset import dataset_modalities
    from m2cofs.data.modalities import parse_modality_list

    if modalities:
        return list(modalities), "given with --modalities"
    if pred.info and pred.info.get("modalities"):
        where = pred.root / "predict.json"
        try:
            mods = parse_modality_list(list(pred.info["modalities"]))
        except (ValueError, TypeError) as exc:
            raise M2CofsError(f"modalities: {exc}", where) from None
        if mods:
            return mods, f"fused by the predict run ({where.name})"
    mods = dataset_modalities(spec)
    if not mods:
        raise M2CofsError("the cases have no images", spec.root)
    return mods, "the modalities every case of the dataset has"


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
    log=None,
) -> EvaluationResult:
    """Evaluate the predictions in ``pred`` against the dataset ``data``; write into ``out``.

    See the module docstring. Raises :class:`M2CofsError` for every user-facing problem; in
    that case nothing is written to ``out``.
    """
    from m2cofs.data.dataset import case_convention, resolve_convention
    from m2cofs.data.layouts import discover

    log = log or (lambda msg: print(msg, file=sys.stderr))
    pred, data, out = Path(pred), Path(data), Path(out)
    modes = resolve_modes(mode)
    fusion_names, seg_names = resolve_metric_names(metrics)
    if workers < 1:
        raise M2CofsError("--workers must be at least 1")
    if mask not in MASKS:
        raise M2CofsError(f"--mask: unknown mask {mask!r}; choose {' or '.join(MASKS)}")

    # where the report goes: never into the dataset, never over old results without --overwrite
    if not data.exists():
        raise M2CofsError("no such file or folder", data)
    folder = _data_folder(data)
    if folder is not None and is_inside(out, folder):
        raise M2CofsError("the report folder must not be the dataset folder or inside it (--out)", out)
    if out.exists() and not out.is_dir():
        raise M2CofsError("--out exists and is not a folder", out)
    existing = [t for t in (out / f for f in OUTPUT_FILES) if t.exists()]
    if existing and not overwrite:
        raise M2CofsError(f"{', '.join(t.name for t in existing)} already exist(s); pass --overwrite to replace", out)

    check_pred_and_data_apart(pred, data)
    preds = find_predictions(pred, ignore=[out])
    spec = discover(data, format)
    convention, conv_reason = resolve_convention(spec, labels)
    mods, mods_reason = _resolve_modalities(modalities, preds, spec)
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
    _check_not_dataset_files(preds, spec, matched)
    if resample_to is not None and resample_to not in mods:
        raise M2CofsError(f"--resample-to {resample_to}: not among the evaluated modalities {', '.join(mods)}")

    n_prev = len(matched) if max_previews is None else min(len(matched), max(0, max_previews))
    # every case previewed: with its metrics; only some: the worst ones, rendered once the metrics are known
    inline = report and n_prev == len(matched)
    jobs = [CaseJob(by_id[cid], mods, case_convention(by_id[cid], convention), resample_to, preds.cases[cid].fused, preds.cases[cid].seg,
                    modes, fusion_names, seg_names, preview=inline, mask=mask)
            for cid in matched]
    check_prediction_grids(jobs)
    log(f"evaluating {len(jobs)} case(s): labels {convention.name} ({conv_reason}); sources "
        f"{', '.join(mods)} ({mods_reason}); modes {', '.join(modes)}; mask {mask}")

    t0 = time.perf_counter()
    results = _run_jobs(jobs, workers, progress, "evaluate")
    if report and not inline and n_prev:
        from dataclasses import replace

        worst = [r.id for r in worst_first(results)[:n_prev]]
        by_job = {j.spec.id: j for j in jobs}
        shots = _run_jobs([replace(by_job[cid], fusion_metrics=[], seg_metrics=[], preview=True) for cid in worst],
                          workers, progress, "previews")
        for r in results:
            for shot in shots:
                if shot.id == r.id:
                    r.preview = shot.preview
    elapsed = time.perf_counter() - t0

    for r in results:
        notes += [f"{r.id}: {n}" for n in r.notes]
    columns = ordered_columns(results, modes, fusion_names, seg_names, convention.region_names)
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
        "mask": mask,
        "mask_description": MASK_TEXT[mask],
        "scaling": SCALING_TEXT[mask],
        "empty_regions": {"both_empty": {"Dice": 1.0, "HD95": 0.0},
                          "one_empty": {"Dice": 0.0, "HD95": "volume diagonal in mm (penalty)"}},
        "std": "sample standard deviation (ddof=1); 0 for a single case",
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
    atomic_write_text(out / "summary.json", json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
    written.append(out / "summary.json")
    if html_text is not None:
        atomic_write_text(out / "report.html", html_text)
        written.append(out / "report.html")
    elif (out / "report.html").exists():  # --overwrite --no-report: an old report would be stale
        (out / "report.html").unlink()
        notes.append("removed the stale report.html of an earlier run (--no-report)")
    return EvaluationResult(results, columns, summary, notes, written)
