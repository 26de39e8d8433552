"""Finding, checking, loading and preprocessing multi-modal MRI cases.

* :mod:`~m2cofs.data.layouts` — which files make up which case (BraTS 2018–2021, BraTS 2023,
  Decathlon, MRBrainS13; the JSON layouts in :mod:`~m2cofs.data.datalist`), as the records of
  :mod:`~m2cofs.data.cases`.
* :mod:`~m2cofs.data.modalities` — canonical modality names.
* :mod:`~m2cofs.data.labels` — label conventions and evaluation regions.
* :mod:`~m2cofs.data.loading` — reading and checking one case.
* :mod:`~m2cofs.data.preprocess` — reorient / crop / resample / scale, its inverse, the cache.
* :mod:`~m2cofs.data.conventions` — each dataset folder's label convention and common modalities.
* :mod:`~m2cofs.data.dataset` — :class:`MultiModalDataset`.
* :mod:`~m2cofs.data.check` — :func:`check_dataset` (``m2cofs data check``).

The names below are imported from their modules on first use: importing one light submodule
(``m2cofs.data.labels`` for the command line's choices) does not import nibabel or torch.
"""

_LAZY = {
    "MultiModalDataset": "dataset", "check_dataset": "check", "resolve_convention": "conventions",
    "CONVENTIONS": "labels", "get_convention": "labels", "labels_to_regions": "labels", "regions_to_labels": "labels",
    "CaseSpec": "layouts", "DatasetSpec": "layouts", "ImageRef": "layouts", "discover": "layouts",
    "Case": "loading", "load_case": "loading",
    "CaseMeta": "preprocess", "PreparedCase": "preprocess", "PreprocessConfig": "preprocess",
    "preprocess_case": "preprocess", "restore": "preprocess",
}

__all__ = [
    "CONVENTIONS", "Case", "CaseMeta", "CaseSpec", "DatasetSpec", "ImageRef", "MultiModalDataset",
    "PreparedCase", "PreprocessConfig", "check_dataset", "discover", "get_convention",
    "labels_to_regions", "load_case", "preprocess_case", "regions_to_labels", "resolve_convention",
    "restore",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
