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
from pathlib import Path
from typing import Iterator, Sequence

from m2cofs.data.cases import CaseSpec, DatasetSpec
# the dataset-level decisions have their own modules; their names stay importable from here
from m2cofs.data.check import CheckRow, check_dataset
from m2cofs.data.conventions import (
    case_convention,
    common_modalities,
    convention_groups,
    dataset_modalities,
    label_values,
    resolve_convention,
)
from m2cofs.data.labels import CONVENTIONS, LabelConvention
from m2cofs.data.layouts import discover
from m2cofs.data.loading import Case, load_case
from m2cofs.data.preprocess import (
    PreparedCase,
    PreprocessConfig,
    cache_key,
    load_prepared,
    preprocess_case,
    save_prepared,
)
from m2cofs.errors import M2CofsError


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
