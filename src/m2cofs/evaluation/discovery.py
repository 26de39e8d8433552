"""Finding predictions and keeping them apart from the dataset.

:func:`find_predictions` scans the layout ``m2cofs predict`` writes (``OUT/<id>/<id>_fused.nii.gz``,
``OUT/<id>/<id>_seg.nii.gz``, ``OUT/predict.json``); :func:`check_pred_and_data_apart` and
:func:`check_not_dataset_files` refuse predictions that are the dataset's own files (its
``<id>_seg`` would be scored against itself); :func:`resolve_modalities` says which sources were
fused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from m2cofs.data.layouts import strip_nifti_suffix
from m2cofs.errors import M2CofsError

PRED_SUFFIXES = (".nii.gz", ".nii")


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


def data_folder(data: Path) -> Path | None:
    """The folder REPORT must stay out of: DATA itself, or a Decathlon dataset.json's folder
    (a datalist JSON may sit anywhere, next to unrelated folders)."""
    if data.is_dir():
        return data
    return data.parent if data.name == "dataset.json" else None


def check_pred_and_data_apart(pred: Path, data: Path) -> None:
    """Refuse a prediction folder that is the dataset folder, inside it or around it (links
    resolved): its ``<id>/<id>_seg.nii.gz`` files would be the ground truth scored against itself."""
    folder = data_folder(data)
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


def check_not_dataset_files(preds: PredictionSet, spec, matched: Sequence[str]) -> None:
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


def resolve_modalities(modalities, pred: PredictionSet, spec) -> tuple[list[str], str]:
    """The source modalities to score against and why: ``--modalities``, else those the predict
    run fused (``predict.json``), else those every case of the dataset has."""
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



def check_writable(out: Path) -> None:
    """The report folder (or, where it does not exist yet, the nearest folder above it) can be
    written: tried with a temporary file, so a read-only folder is found before any metric is computed."""
    import tempfile

    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise M2CofsError(f"cannot write the report here ({exc.strerror or exc}): {probe} is not writable", out) from None


def prediction_convention(preds: PredictionSet, cid: str, dataset):
    """The label convention case ``cid``'s segmentation was written in (``predict.json``: the
    case's own record, else the run's), else ``dataset``'s. Region names must agree: predictions
    in one convention are scored against ground truth in another by their regions."""
    from m2cofs.data.labels import get_convention

    info = preds.info or {}
    entry = info.get("cases", {}).get(cid) if isinstance(info.get("cases"), dict) else None
    name = (entry or {}).get("label_convention") if isinstance(entry, dict) else None
    name = name or info.get("label_convention")
    if not name or name == dataset.name or not dataset.regions:  # (no labels: the segmentation is not scored)
        return dataset
    where = preds.root / "predict.json"
    try:
        conv = get_convention(str(name))
    except (KeyError, ValueError):
        raise M2CofsError(f"case {cid}: unknown label_convention {name!r}", where) from None
    if sorted(conv.regions) != sorted(dataset.regions):
        raise M2CofsError(f"case {cid}: the prediction was written in the {conv.name} convention (regions "
                          f"{', '.join(conv.regions)}), the dataset's is {dataset.name} ({', '.join(dataset.regions)}): "
                          "they cannot be compared; pass the right --labels", where)
    return conv
