"""The evaluation report: one self-contained HTML5 file.

Everything is inside the file — CSS in a ``<style>`` element, every picture a PNG in a
``data:image/png;base64`` URI, no scripts, no web fonts, no link to anything on a network — so
it opens in any browser offline and can be mailed as it is.

Contents: the setup (data, predictions, label convention, modalities, modes, scaling, mask,
empty-region rules), the notes of the run, a summary table (n, mean ± std, median, min, max per
metric, with the better direction), box plots across cases (Dice and HD95 per region; each
fusion metric with one box per mode), per-case metric tables, and per case its preview (three
orthogonal slices of each source, the fused volume, the segmentation and the ground truth
overlaid on the fused volume) beside that case's numbers.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from m2cofs.data.labels import LabelConvention

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


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table cell: 4 significant digits; NaN, ±inf and missing spelled out."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    if f == 0:
        return "0"
    if abs(f) >= 10 ** digits or abs(f) < 1e-3:
        return f"{f:.{digits - 1}e}"
    if abs(f) >= 1:
        return f"{f:.{digits}g}"
    return f"{f:.{digits}f}"


def anchor(case_id: str) -> str:
    return "case-" + re.sub(r"[^A-Za-z0-9_-]", "_", case_id)


# ------------------------------------------------------------------------------------ figures
def boxplots_png(panels: Sequence[tuple[str, Mapping[str, Sequence[float]], bool | None]],
                 ncols: int | None = None, panel_size: tuple[float, float] = (2.6, 2.4), dpi: int = 100) -> bytes:
    """A grid of box plots (matplotlib, Agg canvas) as PNG bytes.

    ``panels``: (title, {box label: values}, higher_is_better) each; every panel is one axes with
    one box per label and the individual cases drawn as jittered dots. Non-finite values are
    left out and counted in the panel's title.
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
        keep = [i for i, d in enumerate(data) if d.size]
        if keep:
            ax.boxplot([data[i] for i in keep], positions=positions[keep], widths=0.55, showfliers=False,
                       patch_artist=True, boxprops=dict(facecolor="#dbe6f6", edgecolor="#2457a6"),
                       medianprops=dict(color="#b03a2e", linewidth=1.6),
                       whiskerprops=dict(color="#2457a6"), capprops=dict(color="#2457a6"))
            for i in keep:
                x = positions[i] + rng.uniform(-0.12, 0.12, size=data[i].size)
                ax.plot(x, data[i], "o", ms=3, color="#1d2330", alpha=0.6)
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", color="#e3e6ec", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.set_xlim(0.4, len(labels) + 0.6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- tables
def table(header: Sequence[str], rows: Sequence[Sequence[str]], left_cols: int = 1, cls: str = "",
          raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are trusted HTML)."""
    def cell(tag: str, i: int, v: str) -> str:
        c = ' class="l"' if i < left_cols else ""
        return f"<{tag}{c}>{v if raw and tag == 'td' else esc(v)}</{tag}>"

    out = [f'<div class="scroll"><table{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>',
           "<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _value_cell(col: str, result) -> str:
    v = result.values.get(col)
    if v is None:
        return '<span class="na">–</span>'
    s = esc(fmt(v))
    if col.startswith("HD95/") and col.split("/", 1)[1] in result.penalised:
        return f'<span class="pen" title="one of prediction / ground truth is empty: penalty">{s}†</span>'
    return s


def _group_columns(columns: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for c in columns:
        g = c.split("/", 1)[0]
        key = "segmentation" if g in ("Dice", "HD95") else g
        groups.setdefault(key, []).append(c)
    return groups


# --------------------------------------------------------------------------------------- page
def render_evaluation_report(summary: Mapping[str, Any], results: Sequence[Any], columns: Sequence[str],
                             convention: LabelConvention, title: str = "m2cofs evaluation report") -> str:
    """The whole ``report.html`` as a string (see the module docstring).

    ``results`` are :class:`~m2cofs.evaluation.CaseResult` objects (``id``, ``values``,
    ``penalised``, ``preview``); ``summary`` is the ``summary.json`` dictionary.
    """
    from m2cofs import __version__

    stats = summary.get("metrics", {})
    groups = _group_columns(columns)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(len(results))} case(s) · predictions {esc(summary.get("pred", ""))} · '
        f'data {esc(summary.get("data", ""))} · {esc(now)} · m2cofs {esc(__version__)}</p>',
        '<nav><a href="#setup">Setup</a><a href="#summary">Summary</a><a href="#plots">Box plots</a>'
        '<a href="#per-case">Per-case metrics</a><a href="#cases">Cases</a></nav>',
    ]

    # setup
    cases = summary.get("cases", {})
    regions = summary.get("regions", {})
    setup = [
        ("Predictions", summary.get("pred", "")),
        ("Dataset", f'{summary.get("data", "")} (layout {summary.get("format", "")})'),
        ("Label convention", f'{summary.get("labels", "")} — {summary.get("labels_reason", "")}'),
        ("Regions", ", ".join(f"{r} = {{{', '.join(map(str, m))}}}" for r, m in regions.items()) or "none"),
        ("Sources", f'{", ".join(summary.get("modalities", []))} — {summary.get("modalities_reason", "")}'),
        ("Fusion modes", ", ".join(summary.get("modes", []))),
        ("Fusion metrics", ", ".join(summary.get("fusion_metrics", [])) or "none"),
        ("Segmentation metrics", ", ".join(summary.get("segmentation_metrics", [])) or "none"),
        ("Mask (fusion metrics)", summary.get("mask_description", summary.get("mask", ""))),
        ("Intensity scaling", summary.get("scaling", "")),
        ("Empty regions", "both empty: Dice 1, HD95 0; exactly one empty: Dice 0, HD95 = the volume's "
                          "diagonal in mm (marked †)"),
        ("Cases", f'{cases.get("evaluated", 0)} evaluated ({cases.get("with_fused", 0)} with a fused volume, '
                  f'{cases.get("with_seg", 0)} with a segmentation, {cases.get("with_ground_truth", 0)} with ground truth); '
                  f'{len(cases.get("cases_without_prediction", []))} without prediction; '
                  f'{len(cases.get("predictions_without_case", []))} prediction(s) without case'),
        ("Statistics", summary.get("std", "")),
    ]
    parts.append('<h2 id="setup">Setup</h2>')
    parts.append(table(["item", "value"], [(k, str(v)) for k, v in setup], left_cols=2, cls="kv"))
    notes = summary.get("notes", [])
    if notes:
        parts.append("<h3>Notes</h3>")
        parts.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")

    # summary table
    parts.append('<h2 id="summary">Summary</h2>')
    if columns:
        rows = []
        for c in columns:
            s = stats.get(c, {})
            hib = s.get("higher_is_better")
            extra = []
            if s.get("n_penalised"):
                extra.append(f'{s["n_penalised"]} penalised')
            if s.get("n_nonfinite"):
                extra.append(f'{s["n_nonfinite"]} non-finite')
            ms = "–" if s.get("mean") is None else f'{fmt(s["mean"])} ± {fmt(s["std"])}'
            rows.append([c, "" if hib is None else ("↑" if hib else "↓"), str(s.get("n", 0)), ms,
                         fmt(s.get("median")), fmt(s.get("min")), fmt(s.get("max")), "; ".join(extra)])
        parts.append(table(["metric", "better", "n", "mean ± std", "median", "min", "max", "notes"], rows))
    else:
        parts.append("<p>No metric was computed (no fused volume or scorable segmentation).</p>")

    # box plots
    parts.append('<h2 id="plots">Box plots across cases</h2>')
    figs = _figures(results, columns, groups, convention)
    if not figs:
        parts.append("<p>No metric to plot.</p>")
    for caption, png in figs:
        parts.append(f'<figure><img src="{data_uri(png)}" alt="{esc(caption)}">'
                     f"<figcaption>{esc(caption)}</figcaption></figure>")

    # per-case tables
    parts.append('<h2 id="per-case">Per-case metrics</h2>')
    for g, cols in groups.items():
        label = {"segmentation": "Segmentation (Dice, HD95 in mm; † = penalty)"}.get(g, f"Fusion metrics, {g} mode")
        parts.append(f"<h3>{esc(label)}</h3>")
        rows = [[f'<a href="#{anchor(r.id)}">{esc(r.id)}</a>' if r.preview else esc(r.id),
                 *(_value_cell(c, r) for c in cols)] for r in results]
        parts.append(table(["case", *[c.split("/", 1)[1] if g != "segmentation" else c for c in cols]], rows, raw=True))

    # cases
    parts.append('<h2 id="cases">Cases</h2>')
    shown = [r for r in results if r.preview]
    if len(shown) < len(results):
        parts.append(f'<p class="sub">Previews of {len(shown)} of {len(results)} cases.</p>')
    for r in shown:
        parts.append(f'<article class="case" id="{anchor(r.id)}"><h3>{esc(r.id)}</h3>')
        parts.append(f'<figure><img src="{data_uri(r.preview)}" alt="{esc(r.id)}: orthogonal slices of the sources, '
                     f'fused volume and segmentation"><figcaption>Axial, coronal and sagittal slices through '
                     f"{'the label centroid' if (r.has_gt or r.has_seg) else 'the centre of the head'}; intensities as "
                     f"scaled for the metrics; overlays: {esc(_legend(convention))}.</figcaption></figure>")
        parts.append('<div class="case-tables">')
        seg_cols = [c for c in groups.get("segmentation", []) if c in r.values]
        if seg_cols:
            names = list(convention.region_names)
            metrics = [m for m in ("Dice", "HD95") if any(c.startswith(m + "/") for c in seg_cols)]
            rows = [[reg, *(_value_cell(f"{m}/{reg}", r) for m in metrics)] for reg in names]
            parts.append(table(["region", *[m + (" (mm)" if m == "HD95" else "") for m in metrics]], rows, raw=True))
        fmodes = [g for g in groups if g != "segmentation" and any(c in r.values for c in groups[g])]
        if fmodes:
            names = []
            for g in fmodes:
                names += [c.split("/", 1)[1] for c in groups[g] if c.split("/", 1)[1] not in names]
            rows = [[n, *(_value_cell(f"{g}/{n}", r) for g in fmodes)] for n in names]
            parts.append(table(["fusion metric", *fmodes], rows, raw=True))
        parts.append("</div></article>")

    parts.append(f"<footer>Generated by m2cofs {esc(__version__)} on {esc(now)}. Self-contained: images are "
                 "embedded, nothing is loaded from the network.</footer>")
    parts.append("</body>")
    parts.append("</html>")
    return "\n".join(parts) + "\n"


def _legend(convention: LabelConvention) -> str:
    from m2cofs.reporting.previews import REGION_COLOURS

    names = {"#2ecc40": "green", "#ff4136": "red", "#ffdc00": "yellow", "#39a0ff": "blue",
             "#ff9f1c": "orange", "#e040fb": "magenta"}
    if not convention.regions:
        return "none"
    return ", ".join(f"{r} {names.get(REGION_COLOURS.get(r, ''), '')}".strip() for r in convention.region_names)


def _figures(results, columns, groups, convention) -> list[tuple[str, bytes]]:
    from m2cofs.evaluation import higher_is_better

    figs: list[tuple[str, bytes]] = []
    seg_cols = groups.get("segmentation", [])
    if seg_cols:
        panels = []
        for m, label in (("Dice", "Dice"), ("HD95", "HD95 (mm)")):
            cols = [c for c in seg_cols if c.startswith(m + "/")]
            if cols:
                panels.append((label, {c.split("/", 1)[1]: [r.values[c] for r in results if c in r.values]
                                       for c in cols}, higher_is_better(cols[0])))
        figs.append(("Segmentation: Dice and HD95 per region across cases (box: quartiles, line: median, "
                     "dots: cases; HD95 penalties included).", boxplots_png(panels, panel_size=(3.6, 3.0))))
    fmodes = [g for g in groups if g != "segmentation"]
    if fmodes:
        names: list[str] = []
        for g in fmodes:
            names += [c.split("/", 1)[1] for c in groups[g] if c.split("/", 1)[1] not in names]
        panels = []
        for n in names:
            series = {g: [r.values[f"{g}/{n}"] for r in results if f"{g}/{n}" in r.values]
                      for g in fmodes if f"{g}/{n}" in columns}
            panels.append((n, series, higher_is_better(f"{fmodes[0]}/{n}")))
        figs.append((f"Fusion metrics across cases, one box per mode ({', '.join(fmodes)}); ↑ higher is better, "
                     "↓ lower is better.", boxplots_png(panels, ncols=min(7, len(panels)))))
    return figs
