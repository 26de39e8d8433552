"""The dataset object: discovery + label convention + loading + cached preprocessing.

>>> ds = MultiModalDataset("BraTS2021_Training", modalities=["t1ce", "flair"])  # doctest: +SKIP
>>> item = ds[0]   # {"id", "image" (C,X,Y,Z) float32 in [0,1], "mask", "label", "modalities", "meta"}
>>> ds.convention.name, ds.convention_reason  # doctest: +SKIP
('brats2017', 'label 4 present without label 3')
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from m2cofs.data.labels import CONVENTIONS, LabelConvention, get_convention, infer_convention
from m2cofs.data.layouts import CaseSpec, DatasetSpec, discover
from m2cofs.data.loading import Case, load_case, read_volume
from m2cofs.data.modalities import CANONICAL
from m2cofs.data.preprocess import (
    PreparedCase,
    PreprocessConfig,
    cache_key,
    load_prepared,
    preprocess_case,
    save_prepared,
)
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


def _prepare_one(args) -> PreparedCase:
    spec, modalities, convention, resample_to, cfg, cache_path, load_labels = args
    if cache_path is not None and cache_path.exists():
        try:
            return load_prepared(cache_path)
        except M2CofsError:
            pass  # stale or broken entry: rebuild it
    case = load_case(spec, modalities, convention, resample_to, load_label=load_labels)
    prepared = preprocess_case(case, cfg)
    if cache_path is not None:
        save_prepared(cache_path, prepared)
    return prepared


class MultiModalDataset:
    """Cases of one dataset, loaded, checked and preprocessed on demand (cached when asked).

    Args:
        root: dataset folder, case folder, or datalist / ``dataset.json`` file.
        format: layout (``auto``, ``brats2021``, ``brats2023``, ``msd``, ``mrbrains``, ``datalist``).
        labels: label convention or ``auto``.
        modalities: channels to load, in order (default: those every case has).
        resample_to: modality whose grid the others are resampled onto, if grids differ.
        preprocess: preprocessing settings; ``None`` yields the raw arrays (original grid).
        cache_dir: where preprocessed cases are cached (``None``: no cache).
        ids: keep only these case ids (in this order).
        load_labels: ``False`` ignores label files (e.g. for prediction).

    Items are dicts: ``id``, ``image`` (C, X, Y, Z) float32, ``mask`` (X, Y, Z) bool, ``label``
    (X, Y, Z) int16 in the dataset's own values or ``None``, ``modalities``, ``meta``
    (:class:`~m2cofs.data.preprocess.CaseMeta`: original affine, header, shape, crop box).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        format: str = "auto",
        labels: str = "auto",
        modalities: Sequence[str] | None = None,
        resample_to: str | None = None,
        preprocess: PreprocessConfig | None = PreprocessConfig(),
        cache_dir: str | os.PathLike | None = None,
        ids: Sequence[str] | None = None,
        load_labels: bool = True,
    ):
        self.spec = discover(root, format)
        self.load_labels = load_labels
        if ids is not None:
            by_id = {c.id: c for c in self.spec.cases}
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise M2CofsError(f"no case with id {', '.join(unknown)}", root)
            self.spec = DatasetSpec(self.spec.root, self.spec.format, [by_id[i] for i in ids], self.spec.notes)
        if load_labels:
            self.convention, self.convention_reason = resolve_convention(self.spec, labels)
        else:
            self.convention, self.convention_reason = CONVENTIONS["none"], "labels not used"
            for c in self.spec.cases:
                c.convention, c.convention_reason = "none", "labels not used"
        self.notes: list[str] = []
        if modalities is None:
            modalities, note = common_modalities(self.spec)
            if not modalities:
                raise M2CofsError("the cases have no images", root)
            if note:
                self.notes.append(note)
        self.modalities = list(modalities)
        self.resample_to = resample_to
        self.preprocess = preprocess
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    @property
    def format(self) -> str:
        return self.spec.format

    @property
    def cases(self) -> list[CaseSpec]:
        return self.spec.cases

    @property
    def ids(self) -> list[str]:
        return self.spec.ids

    def __len__(self) -> int:
        return len(self.spec.cases)

    def case_convention(self, index: int) -> LabelConvention:
        """The label convention of case ``index`` (its dataset folder's; see :func:`resolve_convention`)."""
        return case_convention(self.spec.cases[index], self.convention)

    def load_raw(self, index: int) -> Case:
        """The case on its original grid, checked, without preprocessing."""
        return load_case(self.spec.cases[index], self.modalities, self.case_convention(index), self.resample_to,
                         load_label=self.load_labels)

    def _cache_path(self, spec: CaseSpec) -> Path | None:
        if self.cache_dir is None or self.preprocess is None:
            return None
        files = {m: str(spec.images[m]) for m in self.modalities if m in spec.images}
        if spec.label is not None and self.load_labels:
            files["label"] = str(spec.label)
        if spec.mask is not None:
            files["mask"] = str(spec.mask)
        key = cache_key(files, self.modalities, self.preprocess,
                        f"{self.resample_to}|{case_convention(spec, self.convention).name}")
        safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in spec.id)
        return self.cache_dir / f"{safe_id}-{key}.npz"

    def prepared(self, index: int) -> PreparedCase:
        """The preprocessed case (from the cache when present)."""
        if self.preprocess is None:
            raise ValueError("this dataset was made with preprocess=None; use load_raw()")
        spec = self.spec.cases[index]
        return _prepare_one((spec, self.modalities, case_convention(spec, self.convention), self.resample_to,
                             self.preprocess, self._cache_path(spec), self.load_labels))

    def prepared_with_source(self, index: int) -> tuple[PreparedCase, Case]:
        """The preprocessed case and the loaded case it comes from, the files read once (for
        work that needs both grids, e.g. detail transfer at prediction; the cache is not used)."""
        if self.preprocess is None:
            raise ValueError("this dataset was made with preprocess=None; use load_raw()")
        source = self.load_raw(index)
        return preprocess_case(source, self.preprocess), source

    def prepare_all(self, workers: int = 1, progress: bool = False) -> list[PreparedCase]:
        """Preprocess every case (in ``workers`` processes), filling the cache; returns them all."""
        if self.preprocess is None:
            raise ValueError("this dataset was made with preprocess=None")
        jobs = [(c, self.modalities, case_convention(c, self.convention), self.resample_to, self.preprocess,
                 self._cache_path(c), self.load_labels) for c in self.spec.cases]
        if workers <= 1 or len(jobs) <= 1:
            it: Iterator[PreparedCase] = map(_prepare_one, jobs)
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(it, total=len(jobs), desc="preprocess", unit="case")
            return list(it)
        # "spawn", not fork: a forked child of a process whose torch/OpenMP threads have started
        # can deadlock in its first parallel region.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            it = pool.map(_prepare_one, jobs)
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(it, total=len(jobs), desc="preprocess", unit="case")
            return list(it)

    def __getitem__(self, index: int) -> dict:
        if self.preprocess is None:
            case = self.load_raw(index)
            return {"id": case.id, "image": case.images, "mask": case.mask, "label": case.label,
                    "modalities": case.modalities, "meta": case}
        return self.prepared(index).as_dict()

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self[i]


@dataclass
class CheckRow:
    """One row of ``m2cofs data check``."""

    id: str
    modalities: list[str]
    shape: tuple[int, ...] | None
    spacing: tuple[float, ...] | None
    orientation: str
    label_values: list[int] | None
    regions: dict[str, int] | None
    problems: list[str]
    notes: list[str]
    convention: str = ""

    @property
    def usable(self) -> bool:
        return not self.problems


def check_dataset(
    root: str | os.PathLike,
    format: str = "auto",
    labels: str = "auto",
    modalities: Sequence[str] | None = None,
    resample_to: str | None = None,
) -> tuple[DatasetSpec, LabelConvention | None, str, list[CheckRow]]:
    """Load every case and report what it holds and what is wrong with it.

    Problems with a single case are collected in its row; problems with the whole dataset
    (nothing found, unreadable datalist, undecidable label convention) raise
    :class:`M2CofsError`.
    """
    spec = discover(root, format)
    dataset_conv, reason = resolve_convention(spec, labels)
    rows: list[CheckRow] = []
    if modalities:
        mods = list(modalities)
    else:
        mods, note = common_modalities(spec)
        if note:
            spec.notes.append(note)
    for c in spec.cases:
        convention = case_convention(c, dataset_conv)
        try:
            case = load_case(c, mods, convention, resample_to)
        except M2CofsError as exc:
            rows.append(CheckRow(c.id, sorted(c.images), None, None, "", None, None, [str(exc)], list(c.notes),
                                 convention.name))
            continue
        problems: list[str] = []
        vals = regions = None
        if case.label is not None:
            vals = sorted(int(v) for v in np.unique(case.label))
            regions = {r: int(np.isin(case.label, sorted(m)).sum()) for r, m in convention.regions.items()}
        elif convention.name != "none":
            case.notes.append("no label file")
        if len(case.modalities) < 2:
            problems.append(f"only {len(case.modalities)} modality: fusion needs two or more")
        rows.append(CheckRow(c.id, case.modalities, case.shape, tuple(round(s, 3) for s in case.spacing),
                             case.orientation, vals, regions, problems, case.notes, convention.name))
    return spec, dataset_conv, reason, rows
