"""The report's figures: metric distributions across cases (matplotlib, Agg canvas, PNG bytes).

A series of at least :data:`MIN_BOX_CASES` values gets a box (quartiles, median line) with its
cases as dots on top; a smaller one gets the dots alone (a strip plot) and a short line at its
median: a box drawn from two or three values suggests a distribution that is not there.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np

#: fewer values than this in a series: dots only, no box
MIN_BOX_CASES = 5
BOX_FACE = "#dbe6f6"


def distribution_png(panels: Sequence[tuple[str, Mapping[str, Sequence[float]], bool | None]],
                     ncols: int | None = None, panel_size: tuple[float, float] = (2.6, 2.4), dpi: int = 100,
                     min_box: int = MIN_BOX_CASES) -> bytes:
    """A grid of panels as PNG bytes.

    ``panels``: (title, {series label: values}, higher_is_better) each; every panel is one axes
    with one column per label: a box when the label has ``min_box`` finite values or more, and
    always the individual cases as jittered dots. Non-finite values are left out and counted in
    the panel's title.
    """
    from matplotlib.figure import Figure

    n = max(1, len(panels))
    ncols = ncols or min(n, 7)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows + 0.2), dpi=dpi, facecolor="white",
                 layout="constrained")
    rng = np.random.default_rng(0)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (title, series, hib) in zip(axes.ravel(), panels):
        labels = list(series)
        data, dropped = [], 0
        for k in labels:
            v = np.asarray(list(series[k]), dtype=np.float64)
            dropped += int((~np.isfinite(v)).sum())
            data.append(v[np.isfinite(v)])
        arrow = "" if hib is None else (" ↑" if hib else " ↓")
        ax.set_title(f"{title}{arrow}" + (f" ({dropped} non-finite)" if dropped else ""), fontsize=10)
        positions = np.arange(1, len(labels) + 1)
        boxed = [i for i, d in enumerate(data) if d.size >= min_box]
        if boxed:
            ax.boxplot([data[i] for i in boxed], positions=positions[boxed], widths=0.55, showfliers=False,
                       patch_artist=True, boxprops=dict(facecolor=BOX_FACE, edgecolor="#2457a6"),
                       medianprops=dict(color="#b03a2e", linewidth=1.6),
                       whiskerprops=dict(color="#2457a6"), capprops=dict(color="#2457a6"))
        for i, d in enumerate(data):
            if not d.size:
                continue
            if i not in boxed:  # strip plot: the median as a short line
                ax.plot([positions[i] - 0.2, positions[i] + 0.2], [np.median(d)] * 2, color="#b03a2e", linewidth=1.6)
            x = positions[i] + rng.uniform(-0.12, 0.12, size=d.size)
            ax.plot(x, d, "o", ms=4 if i not in boxed else 3, color="#1d2330", alpha=0.7)
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", color="#e3e6ec", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.set_xlim(0.4, len(labels) + 0.6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


#: the former name (every series with values got a box)
boxplots_png = distribution_png


def style_caption(counts: Sequence[int], min_box: int = MIN_BOX_CASES) -> str:
    """How a figure shows its series, given how many cases each has."""
    counts = [c for c in counts if c]
    if counts and max(counts) < min_box:
        return f"dots: one per case, line: median (fewer than {min_box} cases, so no box plot)"
    if counts and min(counts) < min_box:
        return (f"box: quartiles, line: median, dots: cases; series with fewer than {min_box} cases "
                "as dots and a median line only")
    return "box: quartiles, line: median, dots: cases"
