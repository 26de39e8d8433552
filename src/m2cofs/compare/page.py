"""``index.html`` of ``m2cofs compare``: the tables and the weight-space plot on one
self-contained page, rendered with :mod:`m2cofs.reporting` (its page, tables and figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from m2cofs.compare.folds import Fold
from m2cofs.compare.methods import label
from m2cofs.compare.options import CompareOptions
from m2cofs.compare.tables import Table
from m2cofs.io import atomic_write_text
from m2cofs.reporting.format import esc, figure, table as html_table
from m2cofs.reporting.html import page

SECTIONS = (("Fusion", "fusion"), ("Lesion contrast retention (ours, not the paper's)", "retention"),
            ("Segmentation", "segmentation"), ("Ablations (Table 2)", "ablation"),
            ("Segmentation head plug-in (Table 3)", "plugin"))


def table_html(t: Table) -> str:
    """The table's rows in HTML, the best means in bold."""
    rows = [[esc(label(r.method)), esc(r.n), *(f"<b>{esc(c)}</b>" if b else esc(c) for c, b in zip(r.cells, r.best))]
            for r in t.rows]
    return html_table(t.header, rows, raw=True)


def render_page(tables: dict[str, Table], opts: CompareOptions, folds: Sequence[Fold],
                weight_space: bytes | None = None) -> str:
    held = "; ".join(f"fold {f.index}: {', '.join(f.test_ids)}" for f in folds)
    body = [
        "<h1>M²-CoFS against its baselines</h1>",
        f"<p>Data: {esc(opts.data)} — {len(folds)} folds, held-out cases: {esc(held)}. Preset {esc(opts.preset)}; "
        f"fusion metrics in <i>{esc(opts.mode)}</i> mode. Mean ± std over all held-out cases; bold: best mean; "
        "†: paired Wilcoxon signed-rank p &lt; 0.05 against M²-CoFS.</p>",
    ]
    for title, key in SECTIONS:
        if key in tables:
            note = ""
            if key == "retention":
                from m2cofs.reporting.sections import retention_text

                note = f'<p class="sub">{esc(retention_text())}</p>'
            body.append(f"<h2>{esc(title)}</h2>{note}{table_html(tables[key])}")
    if weight_space:
        body.append(f"<h2>Weight space</h2>{figure(weight_space, 'weight space')}")
    return page("m2cofs compare", body)


def write_page(out: Path, tables: dict[str, Table], opts: CompareOptions, folds: Sequence[Fold]) -> None:
    png = out / "weight_space.png"
    atomic_write_text(out / "index.html", render_page(tables, opts, folds, png.read_bytes() if png.exists() else None))
