"""The evaluation report: one self-contained HTML5 file.

Everything is inside the file — CSS in a ``<style>`` element, every picture a PNG in a
``data:image/png;base64`` URI, no scripts, no web fonts, no link to anything on a network — so
it opens in any browser offline and can be mailed as it is.

Contents (:mod:`.sections` renders each): the setup (data, predictions, label convention,
modalities, modes, mask and scaling, empty-region rules) and the notes of the run; the
provenance of the predictions (model file and its SHA-256, preset, training data, commit, read
from ``predict.json``); summary tables (n, mean ± std, median, min, max, better direction) for
segmentation, for the paper's six fusion metrics and for the other fusion metrics, with a
sentence on which mask convention they follow and why slice and volume values differ; lesion
contrast retention (ours, kept apart from the paper's six) with its definition; predicted
against true region volumes (mL), flagged where they differ wildly; the distributions across
cases (:mod:`.plots`: box plots, or dots alone below five cases); per-case metric tables; and
per case its tumour panel (T1ce, FLAIR, the fused volume and mean fusion on the slice through the
tumour, with their retention) and its preview (three orthogonal slices of each source, the fused volume, the segmentation
and the ground truth overlaid on the fused volume) beside that case's numbers. Cases are listed
worst first (by mean Dice). Numbers have three significant digits (:func:`.format.fmt`).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Sequence

from m2cofs.data.labels import LabelConvention
from m2cofs.reporting import sections as sec
from m2cofs.reporting.format import anchor, data_uri, esc, figure, fmt, table  # noqa: F401  (re-exported)
from m2cofs.reporting.ordering import worst_first
from m2cofs.reporting.plots import boxplots_png, distribution_png, style_caption  # noqa: F401

__all__ = ["render_evaluation_report", "page", "fmt", "boxplots_png", "distribution_png"]

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --head: #f2f4f8; --accent: #2457a6; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; color: var(--fg); background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
p.sub { color: var(--muted); margin: 0 0 16px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.l, th.l { text-align: left; }
table.kv td { text-align: left; white-space: normal; }
table.kv td:first-child { font-weight: 600; background: var(--head); white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
.pen { color: #b03a2e; }
p.warn { color: #b03a2e; font-weight: 600; }
.na { color: #9aa1ad; }
figure { margin: 8px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
article.case { border-top: 1px solid var(--line); padding-top: 4px; }
article.case img { max-width: 100%; height: auto; background: #000; }
.case-tables { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
ul.notes li { margin: 2px 0; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""



# --------------------------------------------------------------------------------------- page
def page(title: str, body: Sequence[str]) -> str:
    """A self-contained HTML5 page in the report's style: ``body``'s HTML fragments, one a line."""
    head = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style>", "</head>", "<body>"]
    return "\n".join([*head, *body, "</body>", "</html>"]) + "\n"


def render_evaluation_report(summary: Mapping[str, Any], results: Sequence[Any], columns: Sequence[str],
                             convention: LabelConvention, title: str = "m2cofs evaluation report") -> str:
    """The whole ``report.html`` as a string (see the module docstring).

    ``results`` are :class:`~m2cofs.evaluation.CaseResult` objects (``id``, ``values``,
    ``penalised``, ``preview``); ``summary`` is the ``summary.json`` dictionary.
    """
    from m2cofs import __version__

    ordered = worst_first(results)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = [("setup", "Setup"), ("provenance", "Provenance"), ("summary", "Summary")]
    if summary.get("volumes_ml"):
        nav.append(("volumes", "Volumes"))
    nav += [("plots", "Distributions"), ("per-case", "Per-case metrics"), ("cases", "Cases")]
    parts: list[str] = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(len(results))} case(s) · predictions {esc(summary.get("pred", ""))} · '
        f'data {esc(summary.get("data", ""))} · mask {esc(summary.get("mask", ""))} · {esc(now)} · '
        f"m2cofs {esc(__version__)}</p>",
        "<nav>" + "".join(f'<a href="#{k}">{esc(v)}</a>' for k, v in nav) + "</nav>",
    ]
    parts += sec.setup_section(summary)
    parts += sec.provenance_section(summary)
    parts += sec.summary_section(summary, columns)
    parts += sec.trust_section(summary, [r.id for r in ordered])
    parts += sec.volumes_section(summary, [r.id for r in ordered], convention)
    parts += sec.figures_section(_figures(results, columns))
    parts += sec.per_case_section(ordered, columns)
    parts += sec.cases_section(ordered, columns, convention)
    parts.append(f"<footer>Generated by m2cofs {esc(__version__)} on {esc(now)}. Self-contained: images are "
                 "embedded, nothing is loaded from the network.</footer>")
    return page(title, parts)


def _figures(results, columns) -> list[tuple[str, bytes]]:
    from m2cofs.metrics.registry import higher_is_better

    groups = sec.group_columns(columns)
    paper = set(sec.paper_metrics())
    figs: list[tuple[str, bytes]] = []
    seg_cols = groups.get("segmentation", [])
    if seg_cols:
        panels, counts = [], []
        for m, label in (("Dice", "Dice"), ("HD95", "HD95 (mm)")):
            cols = [c for c in seg_cols if c.startswith(m + "/")]
            if cols:
                series = {c.split("/", 1)[1]: [r.values[c] for r in results if c in r.values] for c in cols}
                counts += [len(v) for v in series.values()]
                panels.append((label, series, higher_is_better(cols[0])))
        figs.append((f"Segmentation: Dice and HD95 per region across cases ({style_caption(counts)}; HD95 "
                     "penalties included).", distribution_png(panels, panel_size=(3.6, 3.0))))
    fmodes = sec.fusion_modes(groups)
    names: list[str] = []
    for g in fmodes:
        names += [c.split("/", 1)[1] for c in groups[g] if c.split("/", 1)[1] not in names]
    for which, sel in (("the paper's six metrics", [n for n in names if n in paper]),
                       ("other metrics", [n for n in names if n not in paper])):
        if not sel:
            continue
        panels, counts = [], []
        for n in sel:
            series = {g: [r.values[f"{g}/{n}"] for r in results if f"{g}/{n}" in r.values]
                      for g in fmodes if f"{g}/{n}" in columns}
            counts += [len(v) for v in series.values()]
            panels.append((n, series, higher_is_better(f"{fmodes[0]}/{n}")))
        figs.append((f"Fusion, {which}, across cases, one column per mode ({', '.join(fmodes)}; "
                     f"{style_caption(counts)}); ↑ higher is better, ↓ lower is better.",
                     distribution_png(panels, ncols=min(7, len(panels)))))
    return figs
