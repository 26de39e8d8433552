"""The path's own share: each fold's unified model predicted and evaluated twice on its held-out
cases, as trained and with only ψ's path from φ set to zero (everything else the same weights).

    python results/cv19_segpath/path_check.py RUN OUT [--folds 0 1 2 3 4]

RUN is a compare folder (``runs/cv19_segpath``; LOSO: ``runs/loso_segpath``); writes
OUT/foldF/{as_trained,path_zeroed}.csv (``m2cofs evaluate``'s metrics.csv, volume mode, the
paper's metrics and segmentation) and prints the paired means over all folds' cases.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

KEYS = ("retention/t1ce", "retention/flair", "retention/both", "volume/Q_MI", "volume/Q_G", "volume/VIF", "Dice/WT")


def m2cofs(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "m2cofs", *args], check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    from m2cofs.checkpoint import load_model_file, save_model_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--data", default="../shared/data")
    a = ap.parse_args(argv)
    run, out = Path(a.run), Path(a.out)
    rows: dict[str, list[dict]] = {"as_trained": [], "path_zeroed": []}
    for f in a.folds:
        fold = run / f"fold{f}"
        ids = json.loads((fold / "pred" / "m2cofs" / "predict.json").read_text())["cases"]
        tmp = Path(tempfile.mkdtemp(prefix=f"path_check_fold{f}_"))  # scratch outside OUT: nothing of the user's is removed
        tensors, meta = load_model_file(fold / "m2cofs" / "unified.ckpt")
        tensors["fusion_head.seg_path.weight"] = tensors["fusion_head.seg_path.weight"] * 0
        zeroed = save_model_file(tmp / "unified_path_zeroed.ckpt", tensors, {k: v for k, v in meta.items() if k != "sha256"})
        m2cofs("predict", "--model", str(zeroed), "--input", a.data, "--ids", ",".join(ids), "--out", str(tmp / "pred"),
               "--no-preview", "--no-progress")
        for name, pred in (("as_trained", fold / "pred" / "m2cofs"), ("path_zeroed", tmp / "pred")):
            m2cofs("evaluate", "--pred", str(pred), "--data", a.data, "--out", str(tmp / f"eval_{name}"), "--mode", "volume",
                   "--metrics", "seg,paper", "--no-report")
            (out / f"fold{f}").mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp / f"eval_{name}" / "metrics.csv", out / f"fold{f}" / f"{name}.csv")
            rows[name] += list(csv.DictReader(open(out / f"fold{f}" / f"{name}.csv")))
        shutil.rmtree(tmp)
    n = len(rows["as_trained"])
    print(f"{n} cases, folds {a.folds}\n\n| metric | as trained | path zeroed | mean difference | Wilcoxon p |\n| --- | --- | --- | --- | --- |")
    for k in KEYS:
        u = np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows["as_trained"]])
        v = np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows["path_zeroed"]])
        ok = np.isfinite(u) & np.isfinite(v)
        d = u[ok] - v[ok]
        p = float(wilcoxon(u[ok], v[ok]).pvalue) if np.any(d != 0) else 1.0
        print(f"| {k} | {u[ok].mean():.3f} | {v[ok].mean():.3f} | {d.mean():+.3f} | {p:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
