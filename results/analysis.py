#!/usr/bin/env python
"""The analyses behind results/README.md, reproducible from a finished compare folder.

    python results/analysis.py --compare CMP --data ../shared/data --fold 0 --out results

1. Where the learned fused volume loses to mean fusion: the paper's metrics for mean fusion on
   the input grid, on the model's 2 mm grid brought back, and with detail transfer; the same for
   M²-CoFS's network output (``CMP/foldF/m2cofs/unified.ckpt`` predicted with and without
   detail transfer).
2. The whole-tumour components of M²-CoFS's segmentation without post-processing, their size and
   overlap with the ground truth, and a figure of the largest false positive.
Writes ``analysis_foldF.json`` and ``fold{F}_fused.png``, ``fold{F}_components.png`` into OUT.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from scipy import ndimage

    from m2cofs.data import MultiModalDataset
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import PreprocessConfig, restore, scale_intensity
    from m2cofs.inference import Predictor, load_model, transfer_detail
    from m2cofs.metrics.fusion import fusion_metrics

    cmp_dir, out = Path(args.compare), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held = json.loads((cmp_dir / "folds.json").read_text())["folds"][args.fold]
    model_path = cmp_dir / f"fold{args.fold}" / "m2cofs" / "unified.ckpt"
    model = load_model(model_path)
    mods = model.modalities
    pre = PreprocessConfig.from_dict(model.meta["preprocessing"])
    work = Path(tempfile.mkdtemp(prefix="m2cofs-analysis-"))
    result: dict = {"fold": args.fold, "cases": {}}
    for cid in held:
        ds = MultiModalDataset(args.data, modalities=mods, preprocess=pre, ids=[cid], load_labels=True,
                               cache_dir=str(work / "cache"))
        case, src = ds.prepared(0), ds.load_raw(0)
        fg = foreground_mask(src.images, src.mask)
        plain = PreprocessConfig()
        sources = [scale_intensity(c, fg, plain)[0] for c in src.images]

        def metrics(fused: np.ndarray) -> dict:
            f = scale_intensity(fused.astype(np.float32), fg, plain)[0]
            return {k: round(float(v), 4) for k, v in fusion_metrics(sources, f, fg, metrics=["Q_MI", "Q_G", "MI", "VIF"]).items()}

        preds = {}
        for setting in ("off", "on"):
            dest = work / f"pred_{setting}"
            Predictor(model_path, postprocess=False, detail_transfer=setting, log=None).predict_folder(
                args.data, dest, ids=[cid], overwrite=True, preview=False)
            preds[setting] = dest / cid
        net = np.asarray(nib.load(str(preds["off"] / f"{cid}_fused.nii.gz")).dataobj)
        low = restore(case.image.mean(0), case.meta, "image", fill=0.0)
        rows = {
            "mean fusion, input grid": metrics(np.mean(sources, 0)),
            "mean fusion, 2 mm grid brought back": metrics(low),
            "mean fusion, 2 mm + detail transfer": metrics(transfer_detail(low, case, src, pre)),
            "M²-CoFS θU, 2 mm grid brought back": metrics(net),
            "M²-CoFS θU + detail transfer": metrics(transfer_detail(net, case, src, pre)),
        }
        # whole-tumour components without post-processing
        seg = np.asarray(nib.load(str(preds["off"] / f"{cid}_seg.nii.gz")).dataobj)
        gt = src.label
        comps = []
        if gt is not None:
            lab, n = ndimage.label(seg > 0, structure=np.ones((3, 3, 3), bool))
            sizes = np.bincount(lab.ravel())[1:]
            for i in np.argsort(sizes)[::-1][:4]:
                comp = lab == i + 1
                comps.append({"voxels": int(sizes[i]), "overlap_with_ground_truth": int((comp & (gt > 0)).sum()),
                              "centroid_voxel": [int(round(c)) for c in ndimage.center_of_mass(comp)]})
        result["cases"][cid] = {"fusion": rows, "wt_components_without_postprocessing": comps,
                                "ground_truth_wt_voxels": int((gt > 0).sum()) if gt is not None else None}

        # figures: sources and fused volumes on the tumour's slice; the components
        z = int(ndimage.center_of_mass(gt > 0)[2]) if gt is not None and gt.any() else seg.shape[2] // 2
        dt = np.asarray(nib.load(str(preds["on"] / f"{cid}_fused.nii.gz")).dataobj)
        panels = [(src.images[i], m) for i, m in enumerate(mods)] + [(np.mean(sources, 0), "mean fusion"),
                                                                   (net, "M²-CoFS θU (2 mm)"), (dt, "θU + detail transfer")]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), dpi=90)
        for ax, (vol, title) in zip(axes, panels):
            sl = np.where(fg[:, :, z], vol[:, :, z], np.nan)
            lo, hi = np.nanpercentile(sl, [1, 99])
            ax.imshow(vol[:, :, z].T, cmap="gray", origin="lower", vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"fold{args.fold}_fused.png")
        plt.close(fig)
        if comps:
            fp = max((c for c in comps if c["overlap_with_ground_truth"] == 0), key=lambda c: c["voxels"], default=None)
            zs = [z] + ([fp["centroid_voxel"][2]] if fp else [])
            flair = src.images[mods.index("flair")] if "flair" in mods else src.images[-1]
            fig, axes = plt.subplots(1, len(zs), figsize=(4.2 * len(zs), 4.2), dpi=90, squeeze=False)
            for ax, zz in zip(axes[0], zs):
                ax.imshow(flair[:, :, zz].T, cmap="gray", origin="lower")
                ax.contour((gt[:, :, zz] > 0).T, [0.5], colors="lime", origin="lower", linewidths=1)
                ax.contour((seg[:, :, zz] > 0).T, [0.5], colors="red", origin="lower", linewidths=1)
                ax.set_title(f"FLAIR, slice {zz}: ground truth (green), M²-CoFS WT (red)", fontsize=8)
                ax.axis("off")
            fig.tight_layout()
            fig.savefig(out / f"fold{args.fold}_components.png")
            plt.close(fig)
    (out / f"analysis_fold{args.fold}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
