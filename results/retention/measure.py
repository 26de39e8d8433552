"""Lesion contrast retention (issue #31) of the classic fusion rules, copy-one-source, a fixed
non-linear rule and the bundled model, on the shared real cases. No training.

Every volume is scored as ``m2cofs evaluate`` scores it (``--mask brain``): sources and fused
volume scaled with ``scale_intensity(PreprocessConfig())`` inside the brain mask, regions from the
ground truth, :func:`m2cofs.metrics.retention.lesion_retention`. The rules work on the scaled T1ce
and FLAIR, as the baselines of ``m2cofs compare`` do. The bundled model's fused volume comes from
``m2cofs predict`` (the default model) on its held-out case and is scored by ``m2cofs evaluate``
itself (``--metrics retention``).

Usage: python results/retention/measure.py DATA_FOLDER WORK_FOLDER
Writes table.md, per_case.csv and bundled.json next to this script.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from m2cofs.baselines.classical import fuse_laplacian, fuse_max, fuse_mean, fuse_pca
from m2cofs.data.conventions import case_convention, resolve_convention
from m2cofs.data.layouts import discover
from m2cofs.data.loading import foreground_mask, load_case
from m2cofs.data.preprocess import PreprocessConfig, scale_intensity
from m2cofs.metrics.retention import lesion_retention

HERE = Path(__file__).resolve().parent
BUNDLED_CASE = "Brats18_CBICA_ABM_1"
RULES = {
    "mean": lambda s, m: fuse_mean(s, m),
    "maximum": lambda s, m: fuse_max(s, m),
    "PCA": lambda s, m: fuse_pca(s, m),
    "Laplacian": lambda s, m: fuse_laplacian(s, m),
    "copy T1ce": lambda s, m: np.where(m, s[0], 0),
    "copy FLAIR": lambda s, m: np.where(m, s[1], 0),
    "FLAIR + 2·T1ce³": lambda s, m: np.where(m, s[1] + 2 * s[0] ** 3, 0),
}
COLS = ("t1ce", "flair", "both")


def score(case_id: str, rule: str, fused: np.ndarray, sources: dict, label, conv, fg) -> dict:
    fused = scale_intensity(np.asarray(fused, np.float32), fg, PreprocessConfig())[0]  # as evaluate does
    ret = lesion_retention(sources, fused, label, conv, fg)
    return {"case": case_id, "method": rule, **{c: ret.values.get(c) for c in COLS},
            **{f"d_source_{k}": v for k, v in ret.d_source.items()}, **{f"d_fused_{k}": v for k, v in ret.d_fused.items()}}


def bundled(data: Path, work: Path) -> dict:
    py = [sys.executable, "-m", "m2cofs"]
    pred, ev = work / "bundled_pred", work / "bundled_eval"
    t0 = time.time()
    subprocess.run([*py, "predict", "--input", str(data / "brats2018"), "--ids", BUNDLED_CASE, "--out", str(pred),
                    "--no-progress", "--overwrite"], check=True)
    seconds = time.time() - t0
    subprocess.run([*py, "evaluate", "--pred", str(pred), "--data", str(data / "brats2018"), "--out", str(ev),
                    "--modalities", "t1ce,flair", "--metrics", "retention", "--mode", "volume", "--no-report",
                    "--overwrite", "--quiet"], check=True)
    with open(ev / "metrics.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    return {"case": BUNDLED_CASE, "predict_seconds": round(seconds, 1),
            **{c: float(row[f"retention/{c}"]) if row.get(f"retention/{c}") else None for c in COLS}}


def fmt(vals) -> str:
    vals = [v for v in vals if v is not None]
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}" if len(vals) > 1 else (f"{vals[0]:.2f}" if vals else "–")


def main(data: str, work: str) -> None:
    data, work = Path(data), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    spec = discover(data, "auto")
    conv, _ = resolve_convention(spec, "auto")
    rows = []
    for c in spec.cases:
        case = load_case(c, ["t1ce", "flair"], case_convention(c, conv), None)
        fg = foreground_mask(case.images, case.mask)
        scaled = [scale_intensity(v, fg, PreprocessConfig())[0] for v in case.images]
        sources = dict(zip(case.modalities, scaled))
        for rule, fn in RULES.items():
            rows.append(score(c.id, rule, fn(np.stack(scaled), fg), sources, case.label, case_convention(c, conv), fg))
        print(c.id, {r["method"]: round(r["both"], 2) for r in rows if r["case"] == c.id and r["both"] is not None},
              flush=True)
    bund = bundled(data, work)
    keys = sorted({k for r in rows for k in r})
    keys = ["case", "method", *[k for k in keys if k not in ("case", "method")]]
    with open(HERE / "per_case.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        w.writerows(rows)
    (HERE / "bundled.json").write_text(json.dumps(bund, indent=2) + "\n")
    n_et = sum(1 for r in rows if r["method"] == "mean" and r["t1ce"] is not None)
    lines = [f"Means ± std over the {len(spec.cases)} shared cases (T1ce over the {n_et} cases with a T1ce contrast;",
             "both: FLAIR alone where a case has none). Retention 1 = the lesion contrast as strong as in the source.", "",
             "| volume | T1ce | FLAIR | both | both, worst case |", "| --- | --- | --- | --- | --- |"]
    for rule in RULES:
        sel = [r for r in rows if r["method"] == rule]
        worst = min((r["both"] for r in sel if r["both"] is not None), default=None)
        lines.append(f"| {rule} | {fmt([r['t1ce'] for r in sel])} | {fmt([r['flair'] for r in sel])} | "
                     f"{fmt([r['both'] for r in sel])} | {'–' if worst is None else f'{worst:.2f}'} |")
    lines += ["", f"On the bundled model's held-out case {BUNDLED_CASE} alone:", "",
              "| volume | T1ce | FLAIR | both |", "| --- | --- | --- | --- |",
              f"| bundled model (m2cofs predict, default) | {fmt([bund['t1ce']])} | {fmt([bund['flair']])} | "
              f"{fmt([bund['both']])} |"]
    for rule in RULES:
        r = next(r for r in rows if r["method"] == rule and r["case"] == BUNDLED_CASE)
        lines.append(f"| {rule} | {fmt([r['t1ce']])} | {fmt([r['flair']])} | {fmt([r['both']])} |")
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
