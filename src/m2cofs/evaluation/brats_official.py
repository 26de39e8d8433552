"""BraTS's official segmentation metrics, lesion-wise Dice and HD95 (``m2cofs evaluate
--brats-official``), computed by the challenge's own package, ``brats-evaluation`` (built on
``panoptica``), so the numbers can be set beside the BraTS leaderboards.

Install the optional extra: ``pip install 'm2cofs[brats]'``. Both label maps (any tumour
convention m2cofs knows) are rewritten into the BraTS 2023+ values the package's glioma
configuration (``gli``) expects: 1 necrosis / non-enhancing core (TC without ET), 2 oedema (WT
without TC), 3 enhancing tumour. The package's evaluator then splits each region into its
connected components (the lesions), matches predicted to true lesions and reports, per region,
what ``brats_evaluation.parse_seg_results`` reports as the lesion-wise mean Dice
(``sq_dsc``) and HD95 (``sq_hd95``; an infinite HD95 becomes 373 mm, the diagonal of the SRI
atlas box, as there). Columns: ``LesionDice/<region>`` and ``LesionHD95/<region>`` for ET, TC,
WT. These are the package's numbers, not m2cofs's: its lesion-wise Dice is the mean over the
matched lesions (a false-positive or missed lesion lowers the package's detection counts, not
this mean), as its parser reports it; see its documentation for the matching rules.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from m2cofs.data.labels import LabelConvention, labels_to_regions
from m2cofs.errors import M2CofsError

#: our regions → the groups of the package's ``gli`` configuration
GROUPS = {"ET": "et", "TC": "tc", "WT": "wt"}
METRICS = ("LesionDice", "LesionHD95")
#: what ``brats_evaluation.parse_seg_results`` puts in place of an infinite HD95 (mm)
HD95_CAP = 373.0
INSTALL = "pip install 'm2cofs[brats]'"


def require() -> None:
    """Raise a one-line :class:`M2CofsError` when the ``brats-evaluation`` package is missing."""
    try:
        import brats_evaluation  # noqa: F401
        import panoptica  # noqa: F401
    except ImportError as exc:
        raise M2CofsError(f"--brats-official needs the brats-evaluation package (BraTS's own lesion-wise metrics), "
                          f"which is not installed ({exc.name or exc}); install it with {INSTALL}") from None


def check_convention(convention: LabelConvention) -> None:
    missing = [r for r in GROUPS if r not in convention.region_names]
    if missing:
        raise M2CofsError(f"--brats-official scores the BraTS tumour regions ET, TC, WT; the {convention.name} "
                          f"convention has {', '.join(convention.region_names) or 'no regions'}")


def to_brats2023(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """A label map of a tumour convention as BraTS 2023+ values (1 NCR, 2 ED, 3 ET)."""
    reg = labels_to_regions(label, convention).astype(bool)
    names = list(convention.region_names)
    et, tc, wt = (reg[names.index(r)] for r in ("ET", "TC", "WT"))
    out = np.zeros(label.shape, dtype=np.uint8)
    out[wt] = 2
    out[tc] = 1
    out[et] = 3
    return out


_EVALUATOR = None


def _quiet():
    import contextlib
    import io

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _evaluator():
    global _EVALUATOR
    if _EVALUATOR is None:
        from brats_evaluation import config_path
        from panoptica import Panoptica_Evaluator

        with _quiet():  # the package prints its configuration and a banner
            _EVALUATOR = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
    return _EVALUATOR


def _finite(v, cap: float | None = None) -> float:
    if v is None:
        return math.nan
    v = float(v)
    if math.isinf(v) and cap is not None:
        return cap
    return v


def brats_official_metrics(pred: np.ndarray, true: np.ndarray, convention: LabelConvention,
                           spacing: Sequence[float]) -> dict[str, float]:
    """``LesionDice/<region>`` and ``LesionHD95/<region>`` of one case (label maps in
    ``convention``, voxels of ``spacing`` mm), from the ``brats-evaluation`` package."""
    require()
    check_convention(convention)
    import warnings

    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        groups = _evaluator().evaluate(to_brats2023(pred, convention), to_brats2023(true, convention),
                                       voxelspacing=tuple(float(s) for s in spacing))
    out: dict[str, float] = {}
    for region, group in GROUPS.items():
        res = groups[group].to_dict(True) if hasattr(groups[group], "to_dict") else groups[group]
        out[f"LesionDice/{region}"] = _finite(res.get("sq_dsc"))
        out[f"LesionHD95/{region}"] = _finite(res.get("sq_hd95"), HD95_CAP)
    return out
