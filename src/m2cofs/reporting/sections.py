"""The sections of ``report.html`` (each a list of HTML fragments); :mod:`.html` puts them together.

Setup, Provenance (which model), Summary (segmentation; the paper's six fusion metrics; the other
fusion metrics; lesion contrast retention, ours), Region volumes (predicted against true, mL, flagged when they differ wildly),
Distributions, Per-case metrics and Cases — cases worst first (by mean Dice), each with its tumour
panel (sources, fused volume and mean fusion on the slice through the tumour) and its preview.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from m2cofs.data.labels import LabelConvention
from m2cofs.reporting.format import anchor, data_uri, esc, figure, fmt, fmt_pm, table
from m2cofs.reporting.ordering import mean_dice

SLICE_VS_VOLUME = (
    "Slice and volume values differ by definition, not by error: slice mode computes each metric's 2-D "
    "definition on every axial slice and averages the slices with equal weight, volume mode computes the 3-D "
    "definition once (one joint histogram of all voxels, 3-D gradients and windows); only values of the same "
    "mode (and the same mask) can be compared; the paper's Table 1 comes from 2-D scripts run slice by slice.")


#: the column groups of segmentation metrics (``LesionDice``/``LesionHD95``: ``--brats-official``)
SEG_GROUPS = ("Dice", "HD95", "LesionDice", "LesionHD95")


def paper_metrics() -> tuple[str, ...]:
    from m2cofs.metrics.registry import PAPER_METRICS

    return PAPER_METRICS


RETENTION_HEADING = "Lesion contrast retention (ours, not the paper's)"
RETENTION_TEXT = (
    "Lesion contrast retention (ours, not one of the paper's metrics): d_X(R, B) = (mean_X(R) − mean_X(B)) / "
    "std_X(brain); a source's retention = d_fused / d_source on the contrast it shows — T1ce: ET against the rest "
    "of the lesion (the enhancing rim); FLAIR and T2: the whole lesion against the rest of the brain (the oedema). "
    "1 = the fused volume shows that lesion contrast as strongly as the source, 0 = not at all; both = the smallest "
    "over the sources. Regions from the ground truth; one with fewer than {n} voxels counts as absent (a case "
    "without ET: FLAIR alone). Copying a source scores 1 for it and about 0 for the other.")


def retention_text() -> str:
    from m2cofs.metrics.retention import MIN_REGION_VOXELS

    return RETENTION_TEXT.format(n=MIN_REGION_VOXELS)


def fusion_modes(groups: Mapping[str, Any]) -> list[str]:
    """The fusion modes among :func:`group_columns`' groups."""
    return [g for g in groups if g not in ("segmentation", "retention")]


def group_columns(columns: Sequence[str]) -> dict[str, list[str]]:
    """``segmentation`` (Dice, HD95), one group per fusion mode and ``retention``, in column order."""
    groups: dict[str, list[str]] = {}
    for c in columns:
        g = c.split("/", 1)[0]
        groups.setdefault("segmentation" if g in SEG_GROUPS else g, []).append(c)
    return groups


def value_cell(col: str, result) -> str:
    v = result.values.get(col)
    if v is None:
        return '<span class="na">–</span>'
    s = esc(fmt(v))
    if col.startswith("HD95/") and col.split("/", 1)[1] in result.penalised:
        return f'<span class="pen" title="one of prediction / ground truth is empty: penalty">{s}†</span>'
    return s


def _kv(items) -> str:
    return table(["item", "value"], [(k, "not recorded" if v is None else str(v)) for k, v in items], left_cols=2,
                 cls="kv")


# ---------------------------------------------------------------------------------------- setup
def setup_section(summary: Mapping[str, Any]) -> list[str]:
    cases = summary.get("cases", {})
    regions = summary.get("regions", {})
    rows = [
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
                  f'{cases.get("with_seg", 0)} with a segmentation, {cases.get("with_ground_truth", 0)} with ground '
                  f'truth); {len(cases.get("cases_without_prediction", []))} without prediction; '
                  f'{len(cases.get("predictions_without_case", []))} prediction(s) without case'),
        ("Statistics", summary.get("std", "")),
        ("Numbers", "three significant digits throughout (metrics.csv and summary.json keep full precision)"),
    ]
    out = ['<h2 id="setup">Setup</h2>', _kv(rows)]
    notes = summary.get("notes", [])
    if notes:
        out += ["<h3>Notes</h3>", '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"]
    return out


def provenance_section(summary: Mapping[str, Any]) -> list[str]:
    from m2cofs.reporting.provenance import FIELDS, LABELS

    prov = summary.get("provenance") or {}
    out = ['<h2 id="provenance">Provenance</h2>']
    if not prov.get("source"):
        out.append(f'<p class="warn">{esc(prov.get("note") or "no predict.json: the model is not known")}. '
                   "The numbers below cannot be traced to a model.</p>")
    else:
        out.append(f'<p class="sub">From {esc(prov["source"])} (written by <code>m2cofs predict</code>).</p>')
    out.append(_kv([(LABELS[k], prov.get(k)) for k in FIELDS]))
    return out


# -------------------------------------------------------------------------------------- summary
def _stat_rows(columns: Sequence[str], stats: Mapping[str, Any], label=lambda c: c) -> list[list[str]]:
    rows = []
    for c in columns:
        s = stats.get(c, {})
        hib = s.get("higher_is_better")
        extra = []
        if s.get("n_penalised"):
            extra.append(f'{s["n_penalised"]} penalised')
        if s.get("n_nonfinite"):
            extra.append(f'{s["n_nonfinite"]} non-finite')
        rows.append([label(c), "" if hib is None else ("↑" if hib else "↓"), str(s.get("n", 0)),
                     fmt_pm(s.get("mean"), s.get("std")), fmt(s.get("median")), fmt(s.get("min")),
                     fmt(s.get("max")), "; ".join(extra)])
    return rows


STAT_HEADER = ["metric", "better", "n", "mean ± std", "median", "min", "max", "notes"]


def summary_section(summary: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    stats = summary.get("metrics", {})
    groups = group_columns(columns)
    out = ['<h2 id="summary">Summary</h2>']
    if not columns:
        return out + ["<p>No metric was computed (no fused volume or scorable segmentation).</p>"]
    if groups.get("segmentation"):
        out += ["<h3>Segmentation (Dice; HD95 in mm)</h3>", table(STAT_HEADER, _stat_rows(groups["segmentation"], stats))]
    fusion = [c for c in columns if c.split("/", 1)[0] not in (*SEG_GROUPS, "retention")]
    paper = set(paper_metrics())
    main = [c for c in fusion if c.split("/", 1)[1] in paper]
    other = [c for c in fusion if c.split("/", 1)[1] not in paper]
    if fusion:
        mask = summary.get("mask", "brain")
        conv = ("whole slices with the background (--mask none), the convention of the paper's Table 1"
                if mask == "none" else "inside the brain mask (--mask brain): not the convention of the paper's "
                "Table 1, which scores whole slices with the background (--mask none)")
        out.append(f'<p class="sub">Fusion metrics computed {esc(conv)}. {esc(SLICE_VS_VOLUME)}</p>')
    if main:
        heading = "Fusion: the paper's six metrics (" + ", ".join(paper_metrics()) + ")"
        out += [f"<h3>{esc(heading)}</h3>",
                table(STAT_HEADER, _stat_rows(main, stats))]
    if other:
        out += ["<h3>Fusion: other metrics</h3>", table(STAT_HEADER, _stat_rows(other, stats))]
    if groups.get("retention"):
        out += [f'<h3 id="retention">{esc(RETENTION_HEADING)}</h3>',
                f'<p class="sub">{esc(retention_text())}</p>', table(STAT_HEADER, _stat_rows(groups["retention"], stats))]
    return out


def trust_section(summary: Mapping[str, Any], order: Sequence[str]) -> list[str]:
    """``m2cofs predict``'s trust check per case (``summary.json``'s ``trust``, from predict.json)."""
    trust = summary.get("trust") or {}
    if not trust:
        return []
    names = ["wt_ml", "et_wt", "lesion_prob", "mirror_dice"]
    out = ['<h2 id="trust">Trust check</h2>',
           '<p class="sub">Does each case look like the model\'s training data? Signals of <code>m2cofs predict</code> '
           '(whole-tumour volume in mL, ET/WT ratio, mean WT probability in the predicted WT, agreement with the '
           'left-right mirrored prediction) against the ranges of the model\'s training cases; '
           '<span class="pen">⚠</span> marks a case that looks out of domain: do not trust its segmentation.</p>']
    rows = []
    for cid in [c for c in order if c in trust] + [c for c in trust if c not in order]:
        t = trust[cid]
        sig = t.get("signals") or {}
        verdict = ("no reference" if t.get("ok") is None else "in domain" if t.get("ok")
                   else '<span class="pen">⚠ out of domain</span>')
        cells = [esc(cid), verdict] + [esc(fmt(sig[n])) if sig.get(n) is not None else '<span class="na">–</span>'
                                       for n in names]
        rows.append(cells + [esc("; ".join(t.get("flags") or []))])
    out.append(table(["case", "verdict", *names, "reasons"], rows, raw=True))
    return out


def volumes_section(summary: Mapping[str, Any], order: Sequence[str], convention: LabelConvention) -> list[str]:
    vols = summary.get("volumes_ml") or {}
    if not vols:
        return []
    regions = list(convention.region_names)
    out = ['<h2 id="volumes">Region volumes</h2>',
           '<p class="sub">Predicted against true volume per region in mL (ratio = predicted / true); '
           '<span class="pen">⚠</span> marks a ratio above 2 or below 0.5, or a region empty on one side only. '
           'Worst cases (mean Dice) first.</p>']
    rows = []
    for cid in [c for c in order if c in vols] + [c for c in vols if c not in order]:
        cells = [esc(cid)]
        for reg in regions:
            v = vols[cid].get(reg)
            if v is None:
                cells += ['<span class="na">–</span>'] * 3
                continue
            ratio = "–" if v.get("ratio") is None else fmt(v["ratio"])
            flag = ' <span class="pen" title="predicted and true volume differ wildly">⚠</span>' if v.get("flag") else ""
            cells += [esc(fmt(v["pred"])), esc(fmt(v["true"])), esc(ratio) + flag]
        rows.append(cells)
    header = ["case"] + [f"{reg} {h}" for reg in regions for h in ("pred", "true", "ratio")]
    out.append(table(header, rows, raw=True))
    return out


def figures_section(figs: Sequence[tuple[str, bytes]]) -> list[str]:
    out = ['<h2 id="plots">Distributions across cases</h2>']
    if not figs:
        return out + ["<p>No metric to plot.</p>"]
    for caption, png in figs:
        out.append(figure(png, caption, caption))
    return out


# ------------------------------------------------------------------------------------- per case
def _case_link(r) -> str:
    return f'<a href="#{anchor(r.id)}">{esc(r.id)}</a>' if r.preview else esc(r.id)


def per_case_section(results: Sequence[Any], columns: Sequence[str]) -> list[str]:
    """``results`` already in display order (worst first)."""
    groups = group_columns(columns)
    paper = set(paper_metrics())
    out = ['<h2 id="per-case">Per-case metrics</h2>',
           '<p class="sub">Cases by mean Dice over the regions, worst first; cases without a Dice last.</p>']
    for g, cols in groups.items():
        if g == "segmentation":
            out.append(f"<h3>{esc('Segmentation (Dice, HD95 in mm; † = penalty)')}</h3>")
            rows = [[_case_link(r), esc(fmt(mean_dice(r))), *(value_cell(c, r) for c in cols)] for r in results]
            out.append(table(["case", "mean Dice", *cols], rows, raw=True))
            continue
        if g == "retention":
            out.append(f"<h3>{esc('Lesion contrast retention (ours; empty: not defined for the case)')}</h3>")
            rows = [[_case_link(r), *(value_cell(c, r) for c in cols)] for r in results]
            out.append(table(["case", *[c.split("/", 1)[1] for c in cols]], rows, raw=True))
            continue
        for which, sel in (("the paper's six", [c for c in cols if c.split("/", 1)[1] in paper]),
                           ("other metrics", [c for c in cols if c.split("/", 1)[1] not in paper])):
            if sel:
                out.append(f"<h3>{esc(f'Fusion metrics, {g} mode — {which}')}</h3>")
                rows = [[_case_link(r), *(value_cell(c, r) for c in sel)] for r in results]
                out.append(table(["case", *[c.split("/", 1)[1] for c in sel]], rows, raw=True))
    return out


def cases_section(results: Sequence[Any], columns: Sequence[str], convention: LabelConvention) -> list[str]:
    groups = group_columns(columns)
    out = ['<h2 id="cases">Cases</h2>']
    shown = [r for r in results if r.preview or getattr(r, "panel", None)]
    if len(shown) < len(results):
        out.append(f'<p class="sub">Previews of {len(shown)} of {len(results)} cases.</p>')
    for r in shown:
        out.append(f'<article class="case" id="{anchor(r.id)}"><h3>{esc(r.id)}</h3>')
        if getattr(r, "panel", None):
            out.append(f'<figure class="panel"><img src="{data_uri(r.panel)}" alt="{esc(r.id)}: tumour panel, '
                       'sources, fused volume and mean fusion on the slice through the tumour"><figcaption>Tumour '
                       'panel: the axial slice with the most enhancing tumour (ET; else the most whole tumour), '
                       'each volume in its own display window, the ground truth over the first. Does the fused '
                       'volume show the enhancing rim of T1ce and the oedema of FLAIR? Retention per source under '
                       'each fused volume (1 = as strong as in the source, 0 = gone).</figcaption></figure>')
        if not r.preview:
            out.append("</article>")
            continue
        out.append(f'<figure><img src="{data_uri(r.preview)}" alt="{esc(r.id)}: orthogonal slices of the sources, '
                   f'fused volume and segmentation"><figcaption>Axial, coronal and sagittal slices through '
                   f"{'the label centroid' if (r.has_gt or r.has_seg) else 'the centre of the head'}; intensities "
                   f"as scaled for the metrics; overlays: {esc(legend(convention))}.</figcaption></figure>")
        out.append('<div class="case-tables">')
        seg_cols = [c for c in groups.get("segmentation", []) if c in r.values]
        if seg_cols:
            metrics = [m for m in ("Dice", "HD95") if any(c.startswith(m + "/") for c in seg_cols)]
            rows = [[reg, *(value_cell(f"{m}/{reg}", r) for m in metrics)] for reg in convention.region_names]
            out.append(table(["region", *[m + (" (mm)" if m == "HD95" else "") for m in metrics]], rows, raw=True))
        fmodes = [g for g in fusion_modes(groups) if any(c in r.values for c in groups[g])]
        if fmodes:
            names: list[str] = []
            for g in fmodes:
                names += [c.split("/", 1)[1] for c in groups[g] if c.split("/", 1)[1] not in names]
            rows = [[n, *(value_cell(f"{g}/{n}", r) for g in fmodes)] for n in names]
            out.append(table(["fusion metric", *fmodes], rows, raw=True))
        ret = [c for c in groups.get("retention", []) if c in r.values]
        if ret:
            out.append(table(["retention (ours)", "value"], [[esc(c.split("/", 1)[1]), value_cell(c, r)] for c in ret],
                             raw=True))
        out.append("</div></article>")
    return out


def legend(convention: LabelConvention) -> str:
    from m2cofs.previews import REGION_COLOURS

    names = {"#2ecc40": "green", "#ff4136": "red", "#ffdc00": "yellow", "#39a0ff": "blue",
             "#ff9f1c": "orange", "#e040fb": "magenta"}
    if not convention.regions:
        return "none"
    return ", ".join(f"{r} {names.get(REGION_COLOURS.get(r, ''), '')}".strip() for r in convention.region_names)
