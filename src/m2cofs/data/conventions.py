"""Which label convention and which modalities a dataset's cases have: per dataset folder (or
per datalist entry), inferred from the label values present or given with ``--labels``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m2cofs.data.cases import CaseSpec, DatasetSpec
from m2cofs.data.labels import CONVENTIONS, LabelConvention, get_convention, infer_convention
from m2cofs.data.loading import read_volume
from m2cofs.data.modalities import CANONICAL
from m2cofs.errors import M2CofsError


def label_values(path: Path) -> set[int]:
    """The distinct values of a label file (checked to be integers)."""
    data, _, _ = read_volume(path, "label")
    vals = np.unique(data)
    if vals.dtype.kind == "f":
        if not np.allclose(vals, np.rint(vals), atol=1e-3):
            raise M2CofsError("label map has non-integer values", path)
        vals = np.rint(vals)
    return {int(v) for v in vals}


def _naming(fmt: str) -> str | None:
    return fmt if fmt in ("mrbrains", "msd", "brats2023", "brats2021") else None


def convention_groups(spec: DatasetSpec) -> dict[str, list[CaseSpec]]:
    """The cases of each dataset folder, the unit a label convention belongs to.

    A case folder's parent inside the dataset path is its dataset folder (``DATA/brats2013/<case>/``
    → ``brats2013``); a folder that holds the files of several cases is one itself. Cases directly
    in the path given, and those of a datalist or ``dataset.json``, form the group ``"."``.
    """
    groups: dict[str, list[CaseSpec]] = {}
    if spec.format in ("datalist", "msd") or not spec.root.is_dir():
        return {".": list(spec.cases)}
    folder_of = {}
    per_folder: dict[Path, int] = {}
    for c in spec.cases:
        ref = c.label or next((r.path for r in c.images.values()), None)
        folder_of[c.id] = ref.parent if ref is not None else spec.root
        per_folder[folder_of[c.id]] = per_folder.get(folder_of[c.id], 0) + 1
    for c in spec.cases:
        folder = folder_of[c.id]
        if per_folder[folder] == 1 and folder != spec.root:
            folder = folder.parent  # a case folder: its dataset folder is the one above
        try:
            key = folder.relative_to(spec.root).as_posix() or "."
        except ValueError:
            key = "."
        groups.setdefault(key, []).append(c)
    return groups


def _values_of(cases: list[CaseSpec], naming: str | None) -> set[int]:
    """The label values of ``cases``, read until the convention is certain (3 and 4 both seen)."""
    values: set[int] = set()
    for c in cases:
        if c.label is None:
            continue
        values |= label_values(c.label)
        if naming != "mrbrains" and {3, 4} <= values:
            break
    return values


def resolve_convention(spec: DatasetSpec, labels: str = "auto") -> tuple[LabelConvention, str]:
    """Pick the label convention of every case (set on each :class:`CaseSpec`) and of the dataset.

    With ``labels`` named, every case has that one. ``auto`` infers it per dataset folder
    (:func:`convention_groups`): :func:`~m2cofs.data.labels.infer_convention` on the values of the
    folder's label files together (read until the answer is certain); a folder that cannot tell
    on its own is decided by the whole dataset's values, and says so. So ``DATA/brats2013`` (2013
    labels) and ``DATA/brats2018`` (2017 labels) each keep their own.

    Returns the dataset's convention (the one all cases share; where folders differ, the one whose
    labels include the others', else the most common — their regions must be the same) and why.
    """
    if labels != "auto":
        try:
            conv = get_convention(labels)
        except ValueError as exc:
            raise M2CofsError(str(exc)) from None
        for c in spec.cases:
            c.convention, c.convention_reason = conv.name, "given with --labels"
        return conv, "given with --labels"
    for c in spec.cases:
        c.convention, c.convention_reason = None, ""
    declared = [c for c in spec.cases if c.declared_convention]
    for c in declared:
        c.convention, c.convention_reason = c.declared_convention, "given in the datalist"
    if declared and len(declared) == len(spec.cases):
        return _dataset_convention(spec, {".": declared})
    with_labels = [c for c in spec.cases if c.label is not None]
    if not with_labels:
        for c in spec.cases:
            c.convention, c.convention_reason = "none", "no label files found"
        return CONVENTIONS["none"], "no label files found"
    naming = _naming(spec.format)
    chosen: dict[str, tuple[str, str]] = {}
    undecided: dict[str, str] = {}
    groups = {k: [c for c in v if c.label is not None and not c.declared_convention]
              for k, v in convention_groups(spec).items()}
    groups = {k: v for k, v in groups.items() if v}
    for key, cases in groups.items():
        values = set() if naming == "msd" else _values_of(cases, naming)
        name, reason = infer_convention(values, naming)
        if name is None:
            undecided[key] = reason
        else:
            chosen[key] = (name, reason)
    if undecided:
        name, reason = infer_convention(_values_of(with_labels, naming), naming)
        if name is None:
            key, why = next(iter(undecided.items()))
            where = spec.root if key == "." else spec.root / key
            raise M2CofsError(
                f"cannot tell the label convention: {why}; pass --labels "
                "(brats2013, brats2017, brats2023, msd, mrbrains, mrbrains9 or none)",
                where,
            )
        for key, why in undecided.items():
            chosen[key] = (name, f"{why} in {key}/ alone; the whole dataset: {reason}" if key != "." else reason)
    for key, cases in groups.items():
        for c in cases:
            c.convention, c.convention_reason = chosen[key]
    if declared:
        groups["(datalist labels)"] = declared
    return _dataset_convention(spec, groups)


def _dataset_convention(spec: DatasetSpec, groups: dict[str, list[CaseSpec]]) -> tuple[LabelConvention, str]:
    """The dataset's convention from its cases' (set on each), and why; cases without labels get it."""
    names = [c.convention for k in groups for c in groups[k]]
    distinct = list(dict.fromkeys(names))
    if len(distinct) == 1:
        first = next(c for k in groups for c in groups[k])
        dataset_conv, dataset_reason = get_convention(distinct[0]), first.convention_reason
    else:
        convs = [get_convention(n) for n in distinct]
        if len({tuple(c.regions) for c in convs}) > 1:
            raise M2CofsError("the dataset folders hold labels with different regions ("
                              + "; ".join(f"{k}: {n} {list(get_convention(n).regions)}" for k in groups
                                          for n in dict.fromkeys(c.convention for c in groups[k]))
                              + "); use one kind at a time or pass --labels", spec.root)
        union = frozenset().union(*(c.values for c in convs))
        covering = [c for c in convs if c.values >= union]
        dataset_conv = covering[0] if covering else max(convs, key=lambda c: names.count(c.name))
        dataset_reason = "per dataset folder: " + "; ".join(
            f"{n} in {', '.join(k + '/' for k in groups if any(c.convention == n for c in groups[k]))} "
            f"({names.count(n)} case(s))" for n in distinct)
    for c in spec.cases:
        if c.convention is None:  # a case without a label file
            c.convention, c.convention_reason = dataset_conv.name, "no label file"
    return dataset_conv, dataset_reason


def case_convention(case: CaseSpec, default: LabelConvention) -> LabelConvention:
    """The label convention of one case (``default`` when it was not resolved per case)."""
    return get_convention(case.convention) if case.convention else default


def dataset_modalities(spec: DatasetSpec) -> list[str]:
    """The modalities every case has, in canonical order (see :func:`common_modalities`)."""
    return common_modalities(spec)[0]


def common_modalities(spec: DatasetSpec) -> tuple[list[str], str | None]:
    """The modalities every case has, in canonical order, and a note naming those left out
    (``None`` when every case has them all). Where the cases share fewer than two (too few to
    fuse), every modality found: a case lacking one is then an error when it is loaded. Pass an
    explicit modality list to choose."""
    def order(mods):
        return sorted(mods, key=lambda m: CANONICAL.index(m) if m in CANONICAL else 99)

    found: set[str] = set()
    for c in spec.cases:
        found |= set(c.images)
    common = set(found)
    for c in spec.cases:
        common &= set(c.images)
    if common == found or len(common) < 2:  # fusion needs two: rather report the cases that lack one
        return order(found), None
    dropped = order(found - common)
    lacking = [c.id for c in spec.cases if not set(dropped) <= set(c.images)]
    note = (f"using the modalities every case has ({', '.join(order(common))}); left out "
            f"{', '.join(dropped)}, which {len(lacking)} case(s) lack (e.g. {', '.join(lacking[:3])}); "
            "pass --modalities to choose")
    return order(common), note


def check_cases_have(modalities: list[str], cases: list[CaseSpec], who: str = "the model") -> None:
    """Every case has every one of ``modalities`` (checked on the file names found, nothing read)."""
    for spec in cases:
        missing = [m for m in modalities if m not in spec.images]
        if missing:
            where = next(iter(spec.images.values())).path.parent if spec.images else None
            raise M2CofsError(f"{who} needs modalities {', '.join(modalities)}; case {spec.id} has "
                              f"{', '.join(spec.images) or 'no image'} (no {', '.join(missing)} image)", where)
