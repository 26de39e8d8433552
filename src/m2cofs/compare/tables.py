"""The tables of ``m2cofs compare``: methods × metrics, mean ± std over the held-out cases, the
best mean per column in bold, † where a paired Wilcoxon test against M²-CoFS gives p < 0.05.
Written as Markdown and CSV; :mod:`.page` shows the same rows in HTML."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Sequence

from m2cofs.compare.methods import ABLATIONS, label


def mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``0.812 ± 0.034`` (``–`` without a finite mean, the mean alone without a finite std)."""
    if mean is None or not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None and math.isfinite(std) else f"{mean:.{digits}f}"


@dataclass
class Row:
    method: str
    n: int  # held-out cases behind the means
    cells: list[str]
    best: list[bool]


@dataclass
class Table:
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    csv: str = ""

    @property
    def header(self) -> list[str]:
        return ["method", "n", *(c.replace("volume/", "").replace("slice/", "") for c in self.columns)]

    def markdown(self) -> str:
        md = ["| method | n | " + " | ".join(self.header[2:]) + " |", "| --- | --- |" + " --- |" * len(self.columns)]
        for r in self.rows:
            cells = [f"**{c}**" if b else c for c, b in zip(r.cells, r.best)]
            md.append(f"| {label(r.method)} | {r.n} | " + " | ".join(cells) + " |")
        return "\n".join(md) + "\n"


def build_table(stats: dict, methods: Sequence[str], cols: Sequence[str]) -> Table:
    """Methods × ``cols`` from :func:`~m2cofs.compare.stats.aggregate`'s ``stats``; methods
    without any of the columns are left out."""
    hib = stats["higher_is_better"]
    best = {}
    for c in cols:
        vals = [(stats["methods"][m][c]["mean"], m) for m in methods if c in stats["methods"].get(m, {})]
        if vals:
            best[c] = (max if hib.get(c, True) else min)(vals)[1]
    table = Table(list(cols))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", *[f"{c} mean" for c in cols], *[f"{c} std" for c in cols], *[f"{c} wilcoxon_p" for c in cols]])
    for m in methods:
        e = stats["methods"].get(m)
        if not e or not any(c in e for c in cols):
            continue
        cells = []
        for c in cols:
            if c not in e:
                cells.append("–")
                continue
            txt = mean_std(e[c]["mean"], e[c]["std"], 2 if c.startswith("HD95") else 3)
            p = (e[c].get("vs_m2cofs") or {}).get("wilcoxon_p")
            if p is not None and p < 0.05:
                txt += " †"
            cells.append(txt)
        n = max(e[c]["n"] for c in cols if c in e)
        table.rows.append(Row(m, n, cells, [c in e and best.get(c) == m for c in cols]))
        w.writerow([m, *[e[c]["mean"] if c in e else "" for c in cols], *[e[c]["std"] if c in e and e[c]["std"] is not None else "" for c in cols],
                    *[(e[c].get("vs_m2cofs") or {}).get("wilcoxon_p") if c in e else "" for c in cols]])
    table.csv = buf.getvalue()
    return table


def table(stats: dict, methods: Sequence[str], cols: Sequence[str]) -> tuple[str, str]:
    """(markdown, csv) of methods × columns (see :func:`build_table`)."""
    t = build_table(stats, methods, cols)
    return t.markdown(), t.csv


def method_tables(stats: dict, methods: Sequence[str]) -> dict[str, Table]:
    """``fusion``, ``segmentation``, ``retention`` (lesion contrast retention, ours: every method
    with a fused volume, classic rules and copy-one-source included), ``ablation`` and (with
    plug-in heads) ``plugin``: the tables of the methods run, in their order; a plug-in head's row
    is followed by the same head alone."""
    order = [m for m in methods if m in stats["methods"]]
    dice = [c for c in stats["seg_columns"] if c.startswith("Dice")]
    fus_methods = [m for m in order if any(c in stats["methods"][m] for c in stats["fusion_columns"])]
    seg_methods = [m for m in order if any(c in stats["methods"][m] for c in stats["seg_columns"])]
    tables = {"fusion": build_table(stats, fus_methods, stats["fusion_columns"]),
              "segmentation": build_table(stats, seg_methods, stats["seg_columns"]),
              "ablation": build_table(stats, [m for m in ABLATIONS if m in stats["methods"]],
                                      dice + stats["fusion_columns"][:4])}
    ret = stats.get("retention_columns") or []
    ret_methods = [m for m in order if any(c in stats["methods"][m] for c in ret)]
    if ret_methods:
        tables["retention"] = build_table(stats, ret_methods, ret)
    plug = [x for m in methods if m.startswith("plugin_") for x in (m, f"{m}_specialist") if x in stats["methods"]]
    if plug:
        tables["plugin"] = build_table(stats, plug, dice)
    return tables
