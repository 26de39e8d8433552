"""Finding the cases of a dataset on disk, in any of the layouts medical-imaging users have.

Supported layouts (``--format``):

``brats2021``  BraTS 2018–2021: ``<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz`` (any subset of
               modalities; ``<id>_brainmask`` is the brain mask).
``brats2023``  BraTS 2023+: ``<id>/<id>-{t1n,t1c,t2w,t2f,seg}.nii.gz``.
``msd``        Medical Segmentation Decathlon Task01: ``dataset.json`` + 4-D ``imagesTr/*.nii.gz``
               (channels named by ``dataset.json["modality"]``) + ``labelsTr``.
``mrbrains``   MRBrainS13: ``<case>/{T1,T1_IR,T2_FLAIR}.nii[.gz]`` + ``LabelsForTesting`` (or
               ``LabelsForTraining``); the case id is the folder name.
``plain``      one folder per case holding files named by modality alone:
               ``<case>/{t1,t1c,t2,flair,seg}.nii.gz`` (any alias of :mod:`m2cofs.data.modalities`:
               ``t1ce``, ``t2f``, ``T1w``...; ``seg``/``label``, ``mask``/``brainmask``); the case
               id is the folder name.
``datalist``   a MONAI-style JSON list of ``{"id": ..., <modality>: path, ..., "label": path,
               "mask": path, "labels": convention}`` (relative paths from the JSON file's folder;
               ``labels``, optional, is that case's label convention), which covers any naming.
``auto``       the layout whose file patterns match most files under the given path.

Discovery only looks at names; :mod:`m2cofs.data.loading` reads and checks the files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# the records and the JSON layouts have their own modules; their names stay importable from here
from m2cofs.data.cases import FORMATS, MAX_DEPTH, NIFTI_SUFFIXES, CaseSpec, DatasetSpec, ImageRef, strip_nifti_suffix
from m2cofs.data.datalist import discover_datalist, discover_msd, read_json
from m2cofs.errors import M2CofsError

# --- per-layout file-name parsers: name stem → (case id, role) where role is a canonical modality,
# "label" or "mask"; None when the name does not belong to the layout.
_BRATS2021_KEYS = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "label",
                   "brainmask": "mask", "mask": "mask"}
_BRATS2023_KEYS = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "label",
                   "brainmask": "mask", "mask": "mask"}
_MRBRAINS_KEYS = {"t1": "t1", "t1_ir": "t1_ir", "t2_flair": "flair", "labelsfortesting": "label",
                  "labelsfortraining": "label9", "brainmask": "mask"}
_RE_2021 = re.compile(r"^(?P<id>.+)_(?P<key>t1|t1ce|t2|flair|seg|brainmask|mask)$", re.IGNORECASE)
_RE_2023 = re.compile(r"^(?P<id>.+)-(?P<key>t1n|t1c|t2w|t2f|seg|brainmask|mask)$", re.IGNORECASE)


def _parse_brats2021(path: Path, stem: str) -> tuple[str, str] | None:
    m = _RE_2021.match(stem)
    return (m["id"], _BRATS2021_KEYS[m["key"].lower()]) if m else None


def _parse_brats2023(path: Path, stem: str) -> tuple[str, str] | None:
    m = _RE_2023.match(stem)
    return (m["id"], _BRATS2023_KEYS[m["key"].lower()]) if m else None


def _parse_mrbrains(path: Path, stem: str) -> tuple[str, str] | None:
    role = _MRBRAINS_KEYS.get(stem.lower())
    return (path.parent.name, role) if role else None


_PLAIN_ROLES = {"seg": "label", "label": "label", "labels": "label", "mask": "mask", "brainmask": "mask"}
# names only MRBrainS13 uses: a folder holding one of them is MRBrainS, not the plain layout
_MRBRAINS_ONLY = {"t1_ir", "t2_flair", "labelsfortesting", "labelsfortraining"}


def _parse_plain(path: Path, stem: str) -> tuple[str, str] | None:
    from m2cofs.data.modalities import normalize_modality

    role = _PLAIN_ROLES.get(stem.lower()) or normalize_modality(stem)
    return (path.parent.name, role) if role else None


_PARSERS = {"brats2021": _parse_brats2021, "brats2023": _parse_brats2023, "mrbrains": _parse_mrbrains,
            "plain": _parse_plain}


def _walk_nifti(root: Path, skipped: list[str] | None = None) -> list[Path]:
    """NIfTI files under ``root`` (at most ``MAX_DEPTH`` folders down), in sorted order.

    Symbolic links to folders are followed (case folders linked in from elsewhere, as nnU-Net
    users assemble datasets), each real folder once, so a link loop ends. What is passed over —
    hidden entries, folders too deep, link loops, broken links — is described in ``skipped``.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    base_depth = len(root.parts)

    def onerror(exc: OSError) -> None:
        if skipped is not None:
            skipped.append(f"unreadable folder {exc.filename} ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
            key = (st.st_dev, st.st_ino)
        except OSError:
            continue
        if key in seen:  # a link back to a folder already walked: a loop or a duplicate
            if skipped is not None:
                skipped.append(f"{dirpath} (a link to a folder already searched)")
            dirnames[:] = []
            continue
        seen.add(key)
        depth = len(Path(dirpath).parts) - base_depth
        hidden = [d for d in dirnames if d.startswith(".")] + [f for f in filenames if f.startswith(".")]
        if skipped is not None and hidden:
            skipped.append(f"{len(hidden)} hidden entr{'y' if len(hidden) == 1 else 'ies'} in {dirpath} "
                           f"(e.g. {hidden[0]})")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if depth >= MAX_DEPTH:
            if skipped is not None and dirnames:
                skipped.append(f"{len(dirnames)} folder(s) in {dirpath}, deeper than {MAX_DEPTH} levels")
            dirnames[:] = []
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if strip_nifti_suffix(f) is not None:
                found.append(Path(dirpath) / f)
            elif skipped is not None:
                p = Path(dirpath) / f
                if p.is_symlink() and not p.exists():
                    skipped.append(f"broken link {p}")
    return found


def _nothing_found(path: Path, skipped: list[str]) -> M2CofsError:
    """The error for a folder without NIfTI files: empty only when it really holds nothing."""
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        return M2CofsError(f"cannot be listed ({exc.strerror})", path)
    if not entries:
        return M2CofsError("no NIfTI files (.nii or .nii.gz) found: the dataset folder is empty", path)
    others = [e for e in entries if not e.startswith(".")]
    what = [f"it holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
            + (f" (e.g. {', '.join(others[:3])})" if others else "")]
    if skipped:
        what.append("skipped: " + "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else ""))
    return M2CofsError("no NIfTI files (.nii or .nii.gz) found; " + "; ".join(what), path)


def detect_format(path: str | os.PathLike) -> str:
    """Say which layout ``path`` is in (never ``auto``); :class:`M2CofsError` if none fits."""
    path = Path(path)
    if not path.exists():
        raise M2CofsError("no such file or folder", path)
    if path.is_file():
        if path.suffix.lower() != ".json":
            if strip_nifti_suffix(path.name) is not None:
                raise M2CofsError("is a single NIfTI file; give the case folder or a datalist JSON", path)
            raise M2CofsError("is not a dataset folder or a datalist JSON file", path)
        obj = read_json(path)
        return "msd" if isinstance(obj, dict) and "modality" in obj and "training" in obj else "datalist"
    if (path / "dataset.json").is_file() and ((path / "imagesTr").is_dir() or (path / "imagesTs").is_dir()):
        return "msd"
    skipped: list[str] = []
    files = _walk_nifti(path, skipped)
    if not files:
        for name in ("datalist.json", "dataset.json"):
            if (path / name).is_file():
                return detect_format(path / name)
        raise _nothing_found(path, skipped)
    scores = {}
    for fmt, parser in _PARSERS.items():
        scores[fmt] = sum(parser(f, strip_nifti_suffix(f.name)) is not None for f in files)
    # BraTS-2021 stems like "x_t1" also match nothing else. "T1.nii" is both MRBrainS and plain: a
    # folder with one of MRBrainS's own names (T1_IR, T2_FLAIR, LabelsFor...) is MRBrainS.
    if any(strip_nifti_suffix(f.name).lower() in _MRBRAINS_ONLY for f in files):
        scores["plain"] = 0
    best = max(scores, key=lambda k: (scores[k], k == "brats2021", k == "mrbrains"))
    if scores[best] == 0:
        for name in ("datalist.json",):
            if (path / name).is_file():
                return "datalist"
        raise M2CofsError(
            "no file names match a known layout (BraTS 2018-2021 <id>_t1ce.nii.gz, BraTS 2023 <id>-t1c.nii.gz, "
            "Decathlon dataset.json, MRBrainS13 T1.nii, <case>/t1c.nii.gz); describe the cases in a datalist JSON",
            path,
        )
    return best


def discover(path: str | os.PathLike, format: str = "auto") -> DatasetSpec:
    """Find the cases under ``path`` (a dataset folder, one case folder, or a JSON file)."""
    path = Path(path)
    if format not in FORMATS:
        raise M2CofsError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if not path.exists():
        raise M2CofsError("no such file or folder", path)
    if fmt == "datalist":
        json_path = path if path.is_file() else path / "datalist.json"
        spec = discover_datalist(json_path)
    elif fmt == "msd":
        json_path = path if path.is_file() else path / "dataset.json"
        spec = discover_msd(json_path)
    else:
        if path.is_file():
            raise M2CofsError(f"the {fmt} layout needs a folder, not a file", path)
        spec = _discover_by_name(path, fmt)
    if not spec.cases:
        raise M2CofsError(f"no cases found in the {fmt} layout", path)
    _check_unique_ids(spec)
    return spec


def _check_unique_ids(spec: DatasetSpec) -> None:
    seen: dict[str, CaseSpec] = {}
    for case in spec.cases:
        if case.id in seen:
            a = next(iter(seen[case.id].images.values()), None)
            b = next(iter(case.images.values()), None)
            raise M2CofsError(f"duplicate case id {case.id!r} ({a} and {b})", spec.root)
        seen[case.id] = case


def _discover_by_name(root: Path, fmt: str) -> DatasetSpec:
    parser = _PARSERS[fmt]
    groups: dict[tuple[Path, str], dict[str, list[Path]]] = {}
    unmatched: dict[Path, list[Path]] = {}
    skipped: list[str] = []
    for f in _walk_nifti(root, skipped):
        parsed = parser(f, strip_nifti_suffix(f.name))
        if parsed is None:
            unmatched.setdefault(f.parent, []).append(f)
            continue
        cid, role = parsed
        groups.setdefault((f.parent, cid), {}).setdefault(role, []).append(f)
    cases: list[CaseSpec] = []
    for (folder, cid), roles in sorted(groups.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        notes: list[str] = []
        images: dict[str, ImageRef] = {}
        label = mask = None
        for role, files in sorted(roles.items()):
            if len(files) > 1:  # x_flair.nii beside x_flair.nii.gz too: which one is meant is not ours to guess
                raise M2CofsError(f"case {cid!r} has {len(files)} files for {role}: "
                                  + ", ".join(f.name for f in files), folder)
            f = files[0]
            if role == "label":
                label = f
            elif role == "label9":
                continue
            elif role == "mask":
                mask = f
            else:
                images[role] = ImageRef(f)
        if label is None and "label9" in roles:
            if len(roles["label9"]) > 1:
                raise M2CofsError(f"case {cid!r} has {len(roles['label9'])} files for label9: "
                                  + ", ".join(f.name for f in roles["label9"]), folder)
            label = roles["label9"][0]
        if fmt == "mrbrains" and "label" in roles and "label9" in roles:
            notes.append(f"ignored {roles['label9'][0].name} (using {label.name})")
        for extra in unmatched.pop(folder, []):
            notes.append(f"ignored extra file {extra.name}")
        if not images:
            notes.append("no image files")
        cases.append(CaseSpec(cid, images, label, mask, notes, fmt))
    ds_notes = [f"ignored {len(v)} file(s) in {k} that match no case" for k, v in unmatched.items()]
    ds_notes += [f"skipped {s}" for s in skipped if "hidden entr" not in s]
    return DatasetSpec(root, fmt, cases, ds_notes)
