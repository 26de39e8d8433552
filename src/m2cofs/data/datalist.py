"""The JSON layouts: a MONAI-style datalist and the Medical Segmentation Decathlon's
``dataset.json`` (see :mod:`m2cofs.data.layouts` for all layouts)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from m2cofs.data.cases import CaseSpec, DatasetSpec, ImageRef, strip_nifti_suffix
from m2cofs.data.modalities import normalize_modality
from m2cofs.errors import M2CofsError


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise M2CofsError("is not a UTF-8 text (JSON) file", path) from None
    except json.JSONDecodeError as exc:
        raise M2CofsError(f"is not valid JSON ({exc.msg} at line {exc.lineno})", path) from None
    except OSError as exc:
        raise M2CofsError(f"cannot be read ({exc.strerror})", path) from None


def _resolve_inside(base: Path, rel: str, json_path: Path, what: str) -> Path:
    """Resolve ``rel`` against ``base``; refuse paths that escape ``base`` (e.g. ``../``)."""
    if not isinstance(rel, str) or not rel:
        raise M2CofsError(f"{what}: expected a file path, got {rel!r}", json_path)
    p = Path(rel)
    if p.is_absolute():
        raise M2CofsError(f"{what}: absolute path {rel!r} is not allowed; use a path relative to the JSON file", json_path)
    # Lexical check: a path may not climb out of the folder with "..". (Symbolic links inside the
    # folder are the user's own choice and are followed.)
    if os.path.normpath(p).split(os.sep)[0] == os.pardir:
        raise M2CofsError(f"{what}: path {rel!r} escapes the datalist's folder", json_path)
    return base / p


def _resolve_listed(base: Path, rel: str, json_path: Path, what: str) -> Path:
    """A datalist entry's file: an absolute path, or one relative to the JSON file's folder
    (``../`` included: the datalist is how files kept elsewhere are described); it must exist."""
    if not isinstance(rel, str) or not rel:
        raise M2CofsError(f"{what}: expected a file path, got {rel!r}", json_path)
    p = Path(rel).expanduser()
    p = p if p.is_absolute() else Path(os.path.normpath(base / p))
    if not p.exists():
        raise M2CofsError(f"{what}: file not found: {p}", json_path)
    return p


def _plain_id(cid: str) -> bool:
    """A case id usable as one folder name: no path separators, not hidden, printable."""
    return (cid not in (".", "..") and not cid.startswith(".") and "/" not in cid and "\\" not in cid
            and cid.isprintable() and len(cid) <= 200)


def discover_datalist(json_path: Path) -> DatasetSpec:
    obj = read_json(json_path)
    if isinstance(obj, dict):
        for key in ("data", "training", "cases"):
            if isinstance(obj.get(key), list):
                obj = obj[key]
                break
    if not isinstance(obj, list):
        raise M2CofsError('a datalist must be a JSON list of {"id": ..., <modality>: path, "label": path}', json_path)
    base = json_path.parent
    cases = []
    for i, entry in enumerate(obj):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            raise M2CofsError(f"{where} is not an object", json_path)
        cid = entry.get("id")
        if not isinstance(cid, str) or not cid.strip():
            raise M2CofsError(f'{where} has no "id" string', json_path)
        if not _plain_id(cid.strip()):
            raise M2CofsError(f"{where}: id {cid!r} must be a plain name (no '/', '\\', leading '.' or control "
                              "characters): outputs are written to OUT/<id>/", json_path)
        images: dict[str, ImageRef] = {}
        label = mask = declared = None
        notes = []
        for key, value in entry.items():
            k = key.lower()
            if k == "id":
                continue
            if k in ("labels", "convention"):
                from m2cofs.data.labels import CONVENTIONS

                if value not in CONVENTIONS:
                    raise M2CofsError(f"{cid} {key}: unknown label convention {value!r}; choose one of "
                                      f"{', '.join(CONVENTIONS)}", json_path)
                declared = value
            elif k in ("label", "seg"):
                label = _resolve_listed(base, value, json_path, f"{cid} {key}")
            elif k in ("mask", "brainmask"):
                mask = _resolve_listed(base, value, json_path, f"{cid} {key}")
            else:
                canon = normalize_modality(key)
                if canon is None:
                    notes.append(f"ignored unknown key {key!r}")
                    continue
                if canon in images:
                    raise M2CofsError(f"{cid}: modality {canon} given twice ({key!r})", json_path)
                images[canon] = ImageRef(_resolve_listed(base, value, json_path, f"{cid} {key}"))
        cases.append(CaseSpec(cid.strip(), images, label, mask, notes, "datalist", declared_convention=declared))
    return DatasetSpec(json_path, "datalist", cases)


def discover_msd(json_path: Path) -> DatasetSpec:
    obj = read_json(json_path)
    if not isinstance(obj, dict) or not isinstance(obj.get("modality"), dict):
        raise M2CofsError('not a Decathlon dataset.json (no "modality" mapping)', json_path)
    channels: dict[str, int] = {}
    for idx, name in obj["modality"].items():
        canon = normalize_modality(str(name))
        if canon is None:
            raise M2CofsError(f"unknown modality {name!r} in dataset.json", json_path)
        channels[canon] = int(idx)
    base = json_path.parent
    cases = []
    entries = [(e, True) for e in obj.get("training", [])]
    entries += [({"image": e} if isinstance(e, str) else e, False) for e in obj.get("test", [])]
    for entry, has_label in entries:
        if not isinstance(entry, dict) or "image" not in entry:
            raise M2CofsError("a training/test entry has no image", json_path)
        img = _resolve_inside(base, entry["image"], json_path, "image")
        stem = strip_nifti_suffix(img.name) or img.stem
        label = _resolve_inside(base, entry["label"], json_path, "label") if has_label and entry.get("label") else None
        images = {m: ImageRef(img, c) for m, c in sorted(channels.items(), key=lambda kv: kv[1])}
        cases.append(CaseSpec(stem, images, label, None, [], "msd"))
    return DatasetSpec(json_path, "msd", cases)
