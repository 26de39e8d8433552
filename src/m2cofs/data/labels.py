"""Label conventions and the evaluation regions they map to.

A label map's integers mean different things in different datasets. The convention is always
explicit in m2cofs; ``auto`` infers it (see :func:`infer_convention`) and says what it chose.

==========  ===========================================================  =========  ==========  ============
convention  labels                                                       ET         TC          WT
==========  ===========================================================  =========  ==========  ============
brats2013   1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing           {4}        {1,3,4}     {1,2,3,4}
brats2017   1 NCR/NET, 2 oedema, 4 enhancing (BraTS 2017–2022)           {4}        {1,4}       {1,2,4}
brats2023   1 NCR, 2 oedema, 3 enhancing (BraTS 2023+)                   {3}        {1,3}       {1,2,3}
msd         1 oedema, 2 non-enhancing, 3 enhancing (Decathlon Task01)    {3}        {2,3}       {1,2,3}
==========  ===========================================================  =========  ==========  ============

MRBrainS13: ``mrbrains`` is the three-class evaluation map (``LabelsForTesting``: 1 CSF, 2 GM,
3 WM); ``mrbrains9`` is the full training map (``LabelsForTraining``: 1 cortical GM, 2 basal
ganglia, 3 WM, 4 WM lesions, 5 external CSF, 6 ventricles, 7 cerebellum, 8 brainstem) with
CSF = {5,6}, GM = {1,2}, WM = {3,4} (lesions count as WM in the challenge's evaluation).
``none``: the data has no labels (fusion only).

The network predicts *regions* (one sigmoid channel each); :func:`regions_to_labels` turns
them back into the convention's integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LabelConvention:
    """One label convention: its allowed values and its evaluation regions."""

    name: str
    values: frozenset[int]
    regions: dict[str, frozenset[int]] = field(default_factory=dict)
    nested: bool = True  # BraTS regions are nested (ET ⊂ TC ⊂ WT); tissue classes are disjoint
    # The label written for voxels of each "innermost" region when decoding regions → labels,
    # in decoding order (later entries overwrite earlier ones).
    decode: tuple[tuple[str, int], ...] = ()
    description: str = ""

    @property
    def region_names(self) -> list[str]:
        return list(self.regions)


def _fs(*v: int) -> frozenset[int]:
    return frozenset(v)


CONVENTIONS: dict[str, LabelConvention] = {
    "brats2013": LabelConvention(
        "brats2013", _fs(0, 1, 2, 3, 4),
        {"ET": _fs(4), "TC": _fs(1, 3, 4), "WT": _fs(1, 2, 3, 4)},
        nested=True, decode=(("WT", 2), ("TC", 1), ("ET", 4)),
        description="BraTS 2013/2015: 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing",
    ),
    "brats2017": LabelConvention(
        "brats2017", _fs(0, 1, 2, 4),
        {"ET": _fs(4), "TC": _fs(1, 4), "WT": _fs(1, 2, 4)},
        nested=True, decode=(("WT", 2), ("TC", 1), ("ET", 4)),
        description="BraTS 2017-2022: 1 NCR/NET, 2 oedema, 4 enhancing",
    ),
    "brats2023": LabelConvention(
        "brats2023", _fs(0, 1, 2, 3),
        {"ET": _fs(3), "TC": _fs(1, 3), "WT": _fs(1, 2, 3)},
        nested=True, decode=(("WT", 2), ("TC", 1), ("ET", 3)),
        description="BraTS 2023+: 1 NCR, 2 oedema, 3 enhancing",
    ),
    "msd": LabelConvention(
        "msd", _fs(0, 1, 2, 3),
        {"ET": _fs(3), "TC": _fs(2, 3), "WT": _fs(1, 2, 3)},
        nested=True, decode=(("WT", 1), ("TC", 2), ("ET", 3)),
        description="Medical Segmentation Decathlon Task01: 1 oedema, 2 non-enhancing, 3 enhancing",
    ),
    "mrbrains": LabelConvention(
        "mrbrains", _fs(0, 1, 2, 3),
        {"CSF": _fs(1), "GM": _fs(2), "WM": _fs(3)},
        nested=False, decode=(("CSF", 1), ("GM", 2), ("WM", 3)),
        description="MRBrainS13 evaluation labels: 1 CSF, 2 GM, 3 WM",
    ),
    "mrbrains9": LabelConvention(
        "mrbrains9", _fs(0, 1, 2, 3, 4, 5, 6, 7, 8),
        {"CSF": _fs(5, 6), "GM": _fs(1, 2), "WM": _fs(3, 4)},
        nested=False, decode=(("CSF", 5), ("GM", 1), ("WM", 3)),
        description="MRBrainS13 training labels (9 classes): CSF {5,6}, GM {1,2}, WM {3,4}",
    ),
    "none": LabelConvention("none", _fs(0), {}, description="no labels"),
}

CONVENTION_CHOICES = ("auto", *CONVENTIONS)


def get_convention(name: str) -> LabelConvention:
    """Return the convention called ``name``; :class:`ValueError` if unknown."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown label convention {name!r}; choose one of {', '.join(CONVENTIONS)}") from None


# Conventions a file naming can hold, the preferred one first (used when several fit and give the
# same regions). BraTS 2018-2021 naming ("<id>_t1ce") is also how BraTS 2013 data is redistributed.
_CANDIDATES = {
    "brats2021": ("brats2017", "brats2013", "brats2023"),
    "brats2023": ("brats2023", "brats2017", "brats2013"),
    None: ("brats2017", "brats2013", "brats2023", "msd"),
}


# The convention a segmentation is written in for cases of each file naming, where the user does
# not say (``m2cofs predict --labels``): BraTS 2023 naming gets the 2023 values (ET = 3), BraTS
# 2018-2021 naming the 2017 values (ET = 4), the Decathlon's layout its own (ET = 3), each as
# that dataset's own tools read them.
NAMING_CONVENTIONS = {"brats2023": "brats2023", "brats2021": "brats2017", "msd": "msd"}


def output_convention(naming: str | None, model: LabelConvention) -> tuple[LabelConvention, str]:
    """The convention to write a case of file naming ``naming`` in (see
    :data:`NAMING_CONVENTIONS`), and why; the model's own where the naming does not say or its
    regions differ."""
    name = NAMING_CONVENTIONS.get(naming or "")
    if name:
        conv = CONVENTIONS[name]
        if list(conv.regions) == list(model.regions) and conv.nested == model.nested:
            what = {"brats2023": "BraTS 2023 file naming", "brats2021": "BraTS 2018-2021 file naming",
                    "msd": "Decathlon layout"}[naming]
            return conv, what
    return model, "the model's"


def regions_of_values(values: set[int], convention: LabelConvention) -> dict[str, tuple[int, ...]]:
    """Which of ``values`` fall in each of the convention's regions."""
    return {r: tuple(sorted(v for v in values if v in m)) for r, m in convention.regions.items()}


def infer_convention(values: set[int], naming: str | None = None) -> tuple[str | None, str]:
    """Infer a convention from the label values present and the file naming.

    Returns ``(name, reason)``; ``name`` is ``None`` when the data cannot tell (the caller asks
    for ``--labels``). Rules: MRBrainS naming → ``mrbrains`` (``mrbrains9`` if any value > 3);
    Decathlon layout → ``msd``; 3 and 4 both present → ``brats2013``; 4 without 3 →
    ``brats2017``; 3 without 4 with BraTS-2023 naming → ``brats2023``. Otherwise, when every
    convention the naming can hold (``brats2021`` naming: the BraTS ones; no naming: also ``msd``)
    that allows the values puts them in the same regions (e.g. only 1 and 2, a glioma without
    enhancement), the naming's usual one is taken: the choice cannot change a region. Only when
    the regions would differ is the answer ``None``.
    """
    vals = {int(v) for v in values} - {0}
    if naming == "mrbrains":
        return ("mrbrains9" if max(vals, default=0) > 3 else "mrbrains"), "MRBrainS13 file naming"
    if naming == "msd":
        return "msd", "Decathlon Task01 layout (dataset.json)"
    if not vals:
        return None, "no label values other than 0 were found"
    if 3 in vals and 4 in vals:
        return "brats2013", "labels 3 and 4 both present"
    if 4 in vals:
        return "brats2017", "label 4 present without label 3"
    if 3 in vals and naming == "brats2023":
        return "brats2023", "label 3 without label 4, with BraTS-2023 file naming"
    fits = [CONVENTIONS[n] for n in _CANDIDATES.get(naming, _CANDIDATES[None]) if vals <= CONVENTIONS[n].values]
    if not fits:
        return None, f"label values {sorted(vals)} fit no tumour convention"
    regions = {c.name: regions_of_values(vals, c) for c in fits}
    if len(fits) == 1 or all(r == regions[fits[0].name] for r in regions.values()):
        shown = ", ".join(f"{r}={{{','.join(map(str, v))}}}" for r, v in regions[fits[0].name].items())
        return fits[0].name, (f"label values {sorted(vals)} give the same regions ({shown}) in "
                              f"{', '.join(c.name for c in fits)}; using {fits[0].name}")
    groups: dict[tuple, list[str]] = {}
    for n, reg in regions.items():
        groups.setdefault(tuple(reg.items()), []).append(n)
    differ = "; ".join("/".join(names) + ": " + " ".join(f"{r}={{{','.join(map(str, v))}}}" for r, v in reg)
                       for reg, names in groups.items())
    return None, f"label values {sorted(vals)} fit more than one convention, with different regions ({differ})"


def check_label_values(values: set[int], convention: LabelConvention) -> list[int]:
    """Return the values in ``values`` that the convention does not allow (sorted)."""
    return sorted(int(v) for v in values if int(v) not in convention.values)


def labels_to_regions(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """One binary channel per region: (R, *spatial) uint8 from an integer label map."""
    out = np.zeros((len(convention.regions), *label.shape), dtype=np.uint8)
    for i, members in enumerate(convention.regions.values()):
        out[i] = np.isin(label, sorted(members))
    return out


def regions_to_labels(regions: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Decode region channels back into the convention's labels.

    ``regions`` is (R, *spatial): binary masks, or probabilities (thresholded at 0.5). Nested
    (BraTS) regions are painted outermost first (WT, then TC, then ET). Disjoint (tissue)
    classes take the most probable class among those above 0.5.
    """
    names = convention.region_names
    if regions.shape[0] != len(names):
        raise ValueError(f"expected {len(names)} region channels for {convention.name}, got {regions.shape[0]}")
    label = np.zeros(regions.shape[1:], dtype=np.uint8)
    if convention.nested:
        for region, value in convention.decode:
            label[regions[names.index(region)] > 0.5] = value
    else:
        best = np.argmax(regions, axis=0)
        fg = np.max(regions, axis=0) > 0.5
        lut = np.array([dict(convention.decode)[n] for n in names], dtype=np.uint8)
        label[fg] = lut[best[fg]]
    return label
