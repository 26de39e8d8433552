"""The choices of an evaluation run: which metrics (``--metrics``), which modes (``--mode``) and
where fusion metrics are computed (``--mask``).

Metric names, aliases, groups and modes are the registry's (:mod:`m2cofs.metrics.registry`);
this module turns its ``KeyError`` into the command line's messages.
"""

from __future__ import annotations

from typing import Sequence

from m2cofs.errors import M2CofsError
from m2cofs.metrics import registry

MASKS = ("brain", "none")
MASK_TEXT = {
    "brain": "brain: the case's brain mask when present, else foreground_mask of the sources; fusion metrics "
             "inside it, background excluded (m2cofs's default; not the paper's Table 1 convention)",
    "none": "none: whole slices (slice mode) / the whole volume, background included, as in the MATLAB scripts "
            "behind the paper's Table 1 (comparable with the paper's numbers; not with --mask brain)",
}
SCALING_TEXT = {
    "brain": "scale_intensity(PreprocessConfig()) per volume inside the brain mask: "
             "[min(0, p0.5), p99.5] -> [0, 1], clipped, 0 outside the mask",
    "none": "scale_intensity(PreprocessConfig()) over the whole volume (background included): "
            "[min(0, p0.5), p99.5] -> [0, 1], clipped",
}


def resolve_metric_names(names: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Split a metric selection into (fusion metrics, segmentation metrics).

    ``None`` selects everything. Names are case-insensitive (``q_mi``, ``QMI``, ``dice``,
    ``hd95``); ``paper`` = the paper's six fusion metrics, ``fusion`` = all fusion metrics,
    ``seg`` = Dice and HD95. A group with nothing selected is not computed.
    """
    try:
        picked = registry.resolve_selection(names)
    except KeyError as e:
        raise M2CofsError(f"--metrics: unknown metric {e.args[0]!r}; choose from {', '.join(registry.FUSION_METRICS)}, "
                          f"{', '.join(registry.SEG_METRICS)} (or paper, fusion, seg, all)") from None
    if picked is None:
        raise M2CofsError("--metrics: no metric named")
    return picked


def resolve_modes(mode: str | Sequence[str]) -> list[str]:
    """``"both"`` → ``["volume", "slice"]``; ``"slice"`` / ``"volume"`` → that one."""
    try:
        return registry.resolve_modes(mode)
    except KeyError as e:
        raise M2CofsError(f"--mode: unknown mode {e.args[0]}; choose slice, volume or both") from None

