"""Case previews: three orthogonal slices of every source, the fused volume and the segmentation.

One PNG per case (rendered with matplotlib's Agg canvas, no display needed): one column per
image — each source modality, the fused volume, the predicted segmentation overlaid on the fused
volume, and the ground truth overlaid on the same background when given — and three rows, the
axial, coronal and sagittal slices through the centroid of the label (the ground truth's when
given, else the prediction's), or through the centre of the head when there is no label.

Arrays come in the NIfTI file's voxel order; with ``affine`` they are reoriented to RAS
(nibabel's closest canonical orientation) so every view appears upright and consistently
oriented: axial and coronal views in neurological convention (patient's left on the left,
marked L / R), sagittal views with anterior on the right (marked P / A). Pixel aspect follows
the voxel spacing, and each view is cropped to the head's bounding box.

Overlay colours, one per evaluation region: BraTS WT green, TC red, ET yellow (nested regions
are painted outermost first, so oedema shows green, the core red and the enhancing tumour
yellow); MRBrainS CSF blue, GM orange, WM magenta.

:func:`render_tumour_panel_png` draws the other picture of a case with a tumour label: the
sources, the fused volume and mean fusion side by side on one axial slice through the tumour
(the slice with the most ET voxels, else the most WT), each in its own display window, and the
ground truth overlaid on the first — so a reader sees whether the fused volume shows the
enhancing rim of T1ce and the oedema of FLAIR.
"""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import numpy as np

from m2cofs.data.labels import CONVENTIONS, LabelConvention, labels_to_regions

REGION_COLOURS: dict[str, str] = {
    "WT": "#2ecc40", "TC": "#ff4136", "ET": "#ffdc00",
    "CSF": "#39a0ff", "GM": "#ff9f1c", "WM": "#e040fb",
}
_FALLBACK = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
OVERLAY_ALPHA = 0.5
VIEWS = ("axial", "coronal", "sagittal")


def _convention(convention: LabelConvention | str | None) -> LabelConvention:
    if convention is None:
        return CONVENTIONS["none"]
    if isinstance(convention, str):
        return CONVENTIONS[convention]
    return convention


def region_colours(convention: LabelConvention | str | None) -> dict[str, str]:
    """Colour of each of the convention's regions (hex)."""
    conv = _convention(convention)
    out = {}
    for i, r in enumerate(conv.region_names):
        out[r] = REGION_COLOURS.get(r, _FALLBACK[i % len(_FALLBACK)])
    return out


def to_ras(arr: np.ndarray, affine: np.ndarray | None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient a 3-D array to RAS voxel order; returns it and its spacing (mm) per new axis."""
    import nibabel as nib

    arr = np.asarray(arr)
    if affine is None:
        return arr, (1.0, 1.0, 1.0)
    affine = np.asarray(affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(affine)
    out = nib.orientations.apply_orientation(arr, ornt)
    can = affine @ nib.orientations.inv_ornt_aff(ornt, arr.shape)
    sp = np.sqrt((can[:3, :3] ** 2).sum(axis=0))
    return np.ascontiguousarray(out), tuple(float(s) for s in sp)  # type: ignore[return-value]


def _background(vol: np.ndarray) -> float:
    from m2cofs.data.loading import border_value

    return border_value(vol)


def _foreground(vols: Sequence[np.ndarray]) -> np.ndarray:
    fg = np.zeros(vols[0].shape, dtype=bool)
    for v in vols:
        scale = max(1.0, float(np.abs(v).max()))
        fg |= np.abs(v - _background(v)) > 1e-6 * scale
    return fg


def _window(vol: np.ndarray) -> tuple[float, float, float, float]:
    """Display window (0.5th–99.5th percentile of the non-background voxels), the background
    value and its tolerance; background voxels are drawn black whatever the window."""
    bg = _background(vol)
    tol = 1e-6 * max(1.0, float(np.abs(vol).max()))
    vals = vol[np.abs(vol - bg) > tol]
    if vals.size == 0:
        return float(vol.min()), float(vol.max()) + 1e-6, bg, tol
    if vals.size > 2_000_000:
        vals = vals[:: vals.size // 2_000_000 + 1]
    lo, hi = np.percentile(vals, [0.5, 99.5])
    lo = min(float(lo), bg)
    if hi - lo < 1e-8:
        hi = lo + 1.0
    return float(lo), float(hi), bg, tol


def _display(slice2d: np.ndarray, window) -> np.ndarray:
    lo, hi, bg, tol = window
    out = np.clip((slice2d - lo) / (hi - lo), 0.0, 1.0)
    out[np.abs(slice2d - bg) <= tol] = 0.0
    return out


def slice_centre(label: np.ndarray | None, fg: np.ndarray) -> tuple[int, int, int]:
    """Voxel the three slices pass through: the label's centroid, else the head's centre."""
    if label is not None and np.any(label > 0):
        idx = np.argwhere(label > 0)
        c = np.rint(idx.mean(axis=0)).astype(int)
        # a hollow label's centroid can miss it: move to the nearest labelled voxel
        if label[tuple(c)] <= 0:
            c = idx[np.argmin(((idx - c) ** 2).sum(axis=1))]
        return tuple(int(v) for v in c)  # type: ignore[return-value]
    from m2cofs.data.preprocess import bounding_box

    box = bounding_box(fg, 0)
    return tuple(int((lo + hi - 1) // 2) for lo, hi in box)  # type: ignore[return-value]


def _view(vol: np.ndarray, view: str, c: Sequence[int], box) -> np.ndarray:
    """2-D slice (rows = screen vertical from bottom, cols = screen horizontal)."""
    (x0, x1), (y0, y1), (z0, z1) = box
    if view == "axial":
        return vol[x0:x1, y0:y1, c[2]].T  # horizontal R(+), vertical A(+)
    if view == "coronal":
        return vol[x0:x1, c[1], z0:z1].T  # horizontal R(+), vertical S(+)
    return vol[c[0], y0:y1, z0:z1].T  # sagittal: horizontal A(+), vertical S(+)


def _extent(view: str, box, sp) -> list[float]:
    (x0, x1), (y0, y1), (z0, z1) = box
    w = {"axial": (x1 - x0) * sp[0], "coronal": (x1 - x0) * sp[0], "sagittal": (y1 - y0) * sp[1]}[view]
    h = {"axial": (y1 - y0) * sp[1], "coronal": (z1 - z0) * sp[2], "sagittal": (z1 - z0) * sp[2]}[view]
    return [0.0, float(w), 0.0, float(h)]


def _overlay_rgba(label2d: np.ndarray, conv: LabelConvention, colours: dict[str, str]) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*label2d.shape, 4), dtype=np.float32)
    regions = labels_to_regions(label2d, conv).astype(bool)
    names = conv.region_names
    order = list(range(len(names)))
    if conv.nested:  # paint outermost (largest) first: WT, TC, ET
        order = order[::-1]
    for i in order:
        r, g, b, _ = to_rgba(colours[names[i]])
        rgba[regions[i]] = (r, g, b, OVERLAY_ALPHA)
    if not conv.regions:  # no convention: any non-zero label in one colour
        rgba[label2d > 0] = (*to_rgba("#ff4136")[:3], OVERLAY_ALPHA)
    return rgba


def render_case_preview_png(
    sources: Mapping[str, np.ndarray],
    fused: np.ndarray | None,
    seg: np.ndarray | None,
    convention: LabelConvention | str | None,
    gt: np.ndarray | None = None,
    title: str = "",
    affine: np.ndarray | None = None,
    dpi: int = 100,
    panel_inches: float = 2.3,
) -> bytes:
    """The preview of one case as PNG bytes (see the module docstring).

    Args:
        sources: modality name → 3-D array, in the NIfTI file's voxel order.
        fused: the fused volume (same grid), or ``None``.
        seg: the predicted label map in ``convention``'s values, or ``None``.
        convention: label convention (object or name) of ``seg`` and ``gt``.
        gt: the ground-truth label map, or ``None``.
        title: text above the panels.
        affine: the arrays' voxel-to-world matrix (reorients to RAS and sets the pixel aspect);
            ``None`` shows the arrays as they are with 1 mm voxels.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from m2cofs.data.preprocess import bounding_box

    conv = _convention(convention)
    arrays: list[tuple[str, np.ndarray]] = [(str(k), np.asarray(v)) for k, v in sources.items()]
    if fused is not None:
        arrays.append(("fused", np.asarray(fused)))
    shapes = {a.shape for _, a in arrays} | {np.asarray(x).shape for x in (seg, gt) if x is not None}
    if not arrays and seg is None and gt is None:
        raise ValueError("nothing to preview: no sources, fused volume or segmentation")
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"all preview arrays must be 3-D on one grid, got shapes {sorted(shapes)}")

    ras = [(name, *to_ras(a.astype(np.float32, copy=False), affine)) for name, a in arrays]
    sp = to_ras(np.zeros(next(iter(shapes)), dtype=np.uint8), affine)[1]
    seg_r = to_ras(np.asarray(seg), affine)[0] if seg is not None else None
    gt_r = to_ras(np.asarray(gt), affine)[0] if gt is not None else None

    vols = [v for _, v, _ in ras]
    fg = _foreground(vols) if vols else np.ones(next(iter(shapes)), dtype=bool)
    for lab in (seg_r, gt_r):
        if lab is not None:
            fg |= lab > 0
    box = bounding_box(fg, margin=3)
    centre = slice_centre(gt_r if gt_r is not None and np.any(gt_r > 0) else seg_r, fg)

    # background of the overlays: the fused volume, else the first source
    base_name, base = ("fused", ras[-1][1]) if fused is not None else ((ras[0][0], ras[0][1]) if ras else ("", None))
    columns: list[tuple[str, np.ndarray | None, np.ndarray | None]] = [(n, v, None) for n, v, _ in ras]
    if seg_r is not None:
        columns.append((f"segmentation on {base_name}" if base_name else "segmentation", base, seg_r))
    if gt_r is not None:
        columns.append((f"ground truth on {base_name}" if base_name else "ground truth", base, gt_r))
    windows = {id(v): _window(v) for v in vols}
    colours = region_colours(conv)

    exts = {v: _extent(v, box, sp) for v in VIEWS}
    heights = [exts[v][3] / max(exts[v][1], 1e-6) for v in VIEWS]
    ncol = len(columns)
    w_in = panel_inches * ncol
    title_in = 0.45 if title else 0.15
    legend_in = 0.4 if (seg_r is not None or gt_r is not None) and conv.regions else 0.1
    colhead_in = 0.3
    h_in = panel_inches * sum(heights) + title_in + legend_in + colhead_in
    fig = Figure(figsize=(w_in, h_in), dpi=dpi, facecolor="black")
    top = 1 - (title_in + colhead_in) / h_in
    bottom = legend_in / h_in
    gs = fig.add_gridspec(3, ncol, height_ratios=heights, left=0.005, right=0.995, top=top, bottom=bottom,
                          wspace=0.02, hspace=0.04)
    letters = {"axial": ("R", "L", "A"), "coronal": ("R", "L", "S"), "sagittal": ("A", "P", "S")}
    for col, (name, vol, lab) in enumerate(columns):
        for row, view in enumerate(VIEWS):
            ax = fig.add_subplot(gs[row, col])
            ax.set_facecolor("black")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            ext = exts[view]
            if vol is not None:
                ax.imshow(_display(_view(vol, view, centre, box), windows[id(vol)]), cmap="gray", vmin=0, vmax=1,
                          origin="lower",
                          extent=ext, interpolation="nearest", aspect="equal")
            else:
                ax.imshow(np.zeros((2, 2)), cmap="gray", vmin=0, vmax=1, origin="lower", extent=ext, aspect="equal")
            if lab is not None:
                ax.imshow(_overlay_rgba(_view(lab, view, centre, box), conv, colours), origin="lower",
                          extent=ext, interpolation="nearest", aspect="equal")
            right, left, up = letters[view]
            kw = dict(color="#bbbbbb", fontsize=7, transform=ax.transAxes)
            ax.text(0.985, 0.5, right, ha="right", va="center", **kw)
            ax.text(0.015, 0.5, left, ha="left", va="center", **kw)
            ax.text(0.5, 0.985, up, ha="center", va="top", **kw)
            if col == 0:
                idx = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
                ax.text(0.015, 0.015, f"{view} {centre[idx]}", ha="left", va="bottom", color="#dddddd",
                        fontsize=7, transform=ax.transAxes)
            if row == 0:
                ax.set_title(name, color="white", fontsize=9, pad=3)
    if title:
        fig.suptitle(title, color="white", fontsize=11, y=1 - 0.08 / h_in, va="top")
    if legend_in > 0.2:
        handles = [Patch(facecolor=colours[r], edgecolor="none", alpha=0.9,
                         label=f"{r} (label{'s' if len(m) > 1 else ''} {','.join(map(str, sorted(m)))})")
                   for r, m in conv.regions.items()]
        leg = fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8,
                         bbox_to_anchor=(0.5, 0.0), labelcolor="white")
        leg.set_in_layout(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()


def save_case_preview(
    path: str | os.PathLike,
    sources: Mapping[str, np.ndarray],
    fused: np.ndarray | None,
    seg: np.ndarray | None,
    convention: LabelConvention | str | None,
    gt: np.ndarray | None = None,
    title: str = "",
    affine: np.ndarray | None = None,
    **kwargs,
) -> os.PathLike:
    """Write :func:`render_case_preview_png`'s PNG to ``path`` atomically; returns ``path``."""
    from m2cofs.io import atomic_write_bytes

    png = render_case_preview_png(sources, fused, seg, convention, gt=gt, title=title, affine=affine, **kwargs)
    atomic_write_bytes(path, png)
    return path


def tumour_slice(label_ras: np.ndarray, convention: LabelConvention | str | None) -> int | None:
    """The axial index (of a RAS-ordered label) with the most ET voxels, else the most WT voxels
    (any non-zero label for a convention without them); ``None`` without any."""
    conv = _convention(convention)
    lab = np.asarray(label_ras)
    for region in ("ET", "WT"):
        if region in conv.regions:
            counts = np.isin(lab, list(conv.regions[region])).sum(axis=(0, 1))
            if counts.max() > 0:
                return int(np.argmax(counts))
    counts = (lab > 0).sum(axis=(0, 1))
    return int(np.argmax(counts)) if counts.max() > 0 else None


def render_tumour_panel_png(
    volumes: Mapping[str, np.ndarray],
    label: np.ndarray,
    convention: LabelConvention | str | None,
    affine: np.ndarray | None = None,
    captions: Mapping[str, str] | None = None,
    title: str = "",
    dpi: int = 100,
    panel_inches: float = 2.6,
) -> bytes | None:
    """The tumour panel as PNG bytes: each of ``volumes`` (name → 3-D array, in the order given:
    e.g. t1ce, flair, fused, mean fusion) on the axial slice through the tumour
    (:func:`tumour_slice`), then the ground truth ``label`` over the first; ``captions`` adds a
    second title line per volume. ``None`` when the label marks no voxel."""
    from matplotlib.figure import Figure

    from m2cofs.data.preprocess import bounding_box

    conv = _convention(convention)
    if not volumes:
        raise ValueError("nothing to show: no volume")
    ras = [(str(n), *to_ras(np.asarray(v, dtype=np.float32), affine)) for n, v in volumes.items()]
    shapes = {v.shape for _, v, _ in ras} | {np.asarray(label).shape}
    if len(shapes) != 1:
        raise ValueError(f"all panel arrays must be on one grid, got shapes {sorted(shapes)}")
    lab = to_ras(np.asarray(label), affine)[0]
    z = tumour_slice(lab, conv)
    if z is None:
        return None
    sp = ras[0][2]
    fg = _foreground([v for _, v, _ in ras]) | (lab > 0)
    (x0, x1), (y0, y1), _ = bounding_box(fg, margin=3)
    box = ((x0, x1), (y0, y1), (z, z + 1))
    ext = _extent("axial", box, sp)
    centre = (0, 0, z)
    columns = [(n, v, None) for n, v, _ in ras] + [(f"ground truth on {ras[0][0]}", ras[0][1], lab)]
    captions = dict(captions or {})
    ncol = len(columns)
    ratio = ext[3] / max(ext[1], 1e-6)
    head_in = 0.75 if captions else 0.45
    title_in = 0.4 if title else 0.1
    h_in = panel_inches * ratio + head_in + title_in
    fig = Figure(figsize=(panel_inches * ncol, h_in), dpi=dpi, facecolor="black")
    gs = fig.add_gridspec(1, ncol, left=0.005, right=0.995, top=1 - (head_in + title_in) / h_in, bottom=0.01,
                          wspace=0.02)
    colours = region_colours(conv)
    for col, (name, vol, over) in enumerate(columns):
        ax = fig.add_subplot(gs[0, col])
        ax.set_facecolor("black")
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        ax.imshow(_display(_view(vol, "axial", centre, box), _window(vol)), cmap="gray", vmin=0, vmax=1,
                  origin="lower", extent=ext, interpolation="nearest", aspect="equal")
        if over is not None:
            ax.imshow(_overlay_rgba(_view(over, "axial", centre, box), conv, colours), origin="lower", extent=ext,
                      interpolation="nearest", aspect="equal")
        kw = dict(color="#bbbbbb", fontsize=7, transform=ax.transAxes)
        ax.text(0.985, 0.5, "R", ha="right", va="center", **kw)
        ax.text(0.015, 0.5, "L", ha="left", va="center", **kw)
        if col == 0:
            ax.text(0.015, 0.015, f"axial {z}", ha="left", va="bottom", color="#dddddd", fontsize=7,
                    transform=ax.transAxes)
        head = name + (f"\nretention {captions[name]}" if captions.get(name) else "")
        ax.set_title(head, color="white", fontsize=8 if captions.get(name) else 9, pad=3)
    if title:
        fig.suptitle(title, color="white", fontsize=11, y=1 - 0.06 / h_in, va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()
