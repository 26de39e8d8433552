"""A training loop's CSV log (one row per step) and its loss-curve PNG."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from m2cofs.io import atomic_write_text, atomic_write_with


def write_log(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as ``path`` (atomically; the header is the union of the rows' keys, in order)."""
    if not rows:
        return
    buf = io.StringIO()
    keys = list(rows[0].keys())
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []

    def value(k: str, v):
        if k == "stage" or v in ("", None):
            return v
        return int(float(v)) if k in ("epoch", "step") else float(v)  # ints stay ints when a resumed run rewrites the log

    with open(path, newline="") as fh:
        return [{k: value(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]


def plot_losses(csv_path: Path, png_path: Path, title: str) -> None:
    """Loss curves of one stage's CSV log (one line per loss term), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(csv_path)
    if not rows:
        return
    keys = [k for k in rows[0] if k not in ("stage", "epoch", "step", "seconds", "lr")]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [r["step"] for r in rows]
    for k in keys:
        vals = [r.get(k) for r in rows]
        if all(isinstance(v, float) and math.isfinite(v) for v in vals):
            ax.plot(steps, vals, label=k, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    atomic_write_with(png_path, write)
    plt.close(fig)
