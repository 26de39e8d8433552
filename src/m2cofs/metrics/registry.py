"""One registry of the metrics m2cofs reports: name, aliases, group, modes, better direction.

Evaluation (``--metrics``), compare's tables and the report page all read these facts from here,
so a metric is added or renamed in one place. Torch- and SciPy-free: the CLI can list metrics
without importing the metric code.

Result columns are ``"<mode>/<fusion metric>"`` (``volume/Q_MI``),
``"<segmentation metric>/<region>"`` (``Dice/WT``) and ``"retention/<source>"``
(``retention/t1ce``, ``retention/both``: lesion contrast retention, its own group ``retention``,
ours and not the paper's; always computed when a fused volume and a label are present, so
``--metrics`` does not select it); :func:`higher_is_better` reads all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "MetricSpec", "METRICS", "MODES", "FUSION_METRICS", "PAPER_METRICS", "SEG_METRICS", "RETENTION_METRICS",
    "get_metric", "find_metric", "higher_is_better", "resolve_selection", "resolve_modes",
]

#: fusion evaluation modes, in the order results list them
MODES: tuple[str, ...] = ("volume", "slice")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    group: str  # "fusion", "segmentation" or "retention"
    higher_is_better: bool
    paper: bool = False  # one of the paper's six fusion metrics (Table 1)
    aliases: tuple[str, ...] = ()

    @property
    def modes(self) -> tuple[str, ...]:
        """Fusion metrics exist in both modes; segmentation metrics are per region, on the volume."""
        return MODES if self.group == "fusion" else ("volume",)


def _fusion(name: str, paper: bool = False, higher: bool = True, aliases: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(name, "fusion", higher, paper, aliases)


_SPECS: tuple[MetricSpec, ...] = (
    _fusion("Q_MI", paper=True),
    _fusion("Q_TE", paper=True),
    _fusion("Q_NCIE", paper=True, aliases=("NCIE",)),
    _fusion("Q_G", paper=True, aliases=("QABF", "QAB/F")),
    _fusion("MI", paper=True),
    _fusion("VIF", paper=True),
    _fusion("EN", aliases=("ENTROPY",)),
    _fusion("SD"), _fusion("SF"), _fusion("AG"), _fusion("SSIM"), _fusion("PSNR"), _fusion("Q_CB"),
    _fusion("Q_CV", higher=False),
    MetricSpec("Dice", "segmentation", True),
    MetricSpec("HD95", "segmentation", False),
    # ours, not the paper's: how much of each source's lesion contrast the fused volume keeps
    MetricSpec("retention", "retention", True, aliases=("lesion_contrast_retention",)),
)

#: every metric by its canonical name, in report order
METRICS: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
FUSION_METRICS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.group == "fusion")
PAPER_METRICS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.paper)
SEG_METRICS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.group == "segmentation")
RETENTION_METRICS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.group == "retention")


def _key(name: str) -> str:
    return str(name).strip().upper().replace("-", "").replace("_", "")


_BY_KEY: dict[str, str] = {}
for _s in _SPECS:
    for _n in (_s.name, *_s.aliases):
        _BY_KEY[_key(_n)] = _s.name

#: names of metric groups accepted by :func:`resolve_selection`
_SELECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "PAPER": (PAPER_METRICS, ()), "FUSION": (FUSION_METRICS, ()),
    "SEG": ((), SEG_METRICS), "SEGMENTATION": ((), SEG_METRICS),
    "ALL": (FUSION_METRICS, SEG_METRICS),
}


def find_metric(name: str) -> MetricSpec | None:
    """The metric a name or alias means (case, ``_`` and ``-`` ignored: ``q_mi``, ``QMI``,
    ``qabf``, ``dice``); ``None`` when it names none."""
    canon = _BY_KEY.get(_key(name))
    return METRICS[canon] if canon else None


def get_metric(name: str) -> MetricSpec:
    """Like :func:`find_metric`, but an unknown name raises ``KeyError`` listing the known ones."""
    spec = find_metric(name)
    if spec is None:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
    return spec


def higher_is_better(column: str) -> bool | None:
    """Whether a larger value of a metric or result column (``Q_MI``, ``volume/Q_MI``,
    ``Dice/ET``, ``HD95/WT``) is better; ``None`` for a column that is no metric."""
    head, _, tail = column.partition("/")
    if head in ("LesionDice", "LesionHD95"):  # BraTS's lesion-wise metrics (m2cofs evaluate --brats-official)
        return head == "LesionDice"
    for part in (head, tail) if tail else (head,):
        if part in MODES:
            continue
        spec = find_metric(part)
        if spec is not None:
            return spec.higher_is_better
    return None


def resolve_selection(names: str | Sequence[str] | None) -> tuple[list[str], list[str]] | None:
    """A selection of metric names, aliases and groups (``paper``, ``fusion``, ``seg``, ``all``)
    as (fusion metrics, segmentation metrics), each in report order; ``None`` selects all.
    ``retention`` is accepted and selects nothing more (it is always computed where it can be).

    Raises ``KeyError`` naming the first unknown item; returns ``None`` when no item is named.
    """
    if names is None:
        return list(FUSION_METRICS), list(SEG_METRICS)
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [i.strip() for i in items if i and i.strip()]
    if not items:
        return None
    fus: set[str] = set()
    seg: set[str] = set()
    for item in items:
        key = _key(item)
        if key in _SELECTIONS:
            add_f, add_s = _SELECTIONS[key]
        else:
            spec = find_metric(item)
            if spec is None:
                raise KeyError(item)
            if spec.group == "retention":
                continue
            add_f, add_s = ((spec.name,), ()) if spec.group == "fusion" else ((), (spec.name,))
        fus.update(add_f)
        seg.update(add_s)
    return [m for m in FUSION_METRICS if m in fus], [m for m in SEG_METRICS if m in seg]


def resolve_modes(mode: str | Sequence[str]) -> list[str]:
    """``"both"`` → ``["volume", "slice"]``; ``"slice"`` / ``"volume"`` → that one. Raises
    ``KeyError`` with the unknown items."""
    if isinstance(mode, str):
        if mode == "both":
            return list(MODES)
        mode = [mode]
    out = [m for m in MODES if m in mode]
    bad = [m for m in mode if m not in MODES]
    if bad or not out:
        raise KeyError(", ".join(bad) or repr(mode))
    return out
