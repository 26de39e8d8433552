"""Finding, checking, loading and preprocessing multi-modal MRI cases.

* :mod:`~m2cofs.data.layouts` — which files make up which case (BraTS 2018–2021, BraTS 2023,
  Decathlon, MRBrainS13, datalist JSON).
* :mod:`~m2cofs.data.modalities` — canonical modality names.
* :mod:`~m2cofs.data.labels` — label conventions and evaluation regions.
* :mod:`~m2cofs.data.loading` — reading and checking one case.
* :mod:`~m2cofs.data.preprocess` — reorient / crop / resample / scale, its inverse, the cache.
* :mod:`~m2cofs.data.dataset` — :class:`MultiModalDataset` and :func:`check_dataset`.
"""

from m2cofs.data.dataset import MultiModalDataset, check_dataset, resolve_convention
from m2cofs.data.labels import CONVENTIONS, get_convention, labels_to_regions, regions_to_labels
from m2cofs.data.layouts import CaseSpec, DatasetSpec, ImageRef, discover
from m2cofs.data.loading import Case, load_case
from m2cofs.data.preprocess import CaseMeta, PreparedCase, PreprocessConfig, preprocess_case, restore

__all__ = [
    "CONVENTIONS", "Case", "CaseMeta", "CaseSpec", "DatasetSpec", "ImageRef", "MultiModalDataset",
    "PreparedCase", "PreprocessConfig", "check_dataset", "discover", "get_convention",
    "labels_to_regions", "load_case", "preprocess_case", "regions_to_labels", "resolve_convention",
    "restore",
]
