"""The order cases are presented in: worst first, by mean Dice.

Works on any result with ``id`` and ``values`` (column → float, ``Dice/<region>`` among them),
e.g. :class:`m2cofs.evaluation.CaseResult`; the report, ``summary.json``'s ``case_order`` and the
choice of previewed cases all use it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["mean_dice", "worst_first"]


def mean_dice(result: Any) -> float | None:
    """Mean of a case's finite Dice values over the regions (``None`` without any)."""
    vals = [v for k, v in result.values.items() if k.startswith("Dice/") and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def worst_first(results: Sequence[Any]) -> list[Any]:
    """Cases by mean Dice, lowest first; cases without a Dice after them, in their order."""
    scored = sorted((r for r in results if mean_dice(r) is not None), key=lambda r: (mean_dice(r), r.id))
    return scored + [r for r in results if mean_dice(r) is None]
