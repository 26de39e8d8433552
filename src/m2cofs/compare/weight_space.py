"""F's weight sets of each fold (θ0, θF, θS, θS→F, θF→S, θU and every weight-based method's F)
and ``weight_space.png``, their 2-D embeddings (PCA and t-SNE)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from m2cofs.compare.folds import FoldContext
from m2cofs.compare.methods import MODEL, label, method

COLOURS = {"θ0": "#999999", "θF": "#1f77b4", "θS": "#d62728", "θS→F": "#9467bd", "θF→S": "#ff7f0e", "θU": "#2ca02c"}


def weight_sets(ctx: FoldContext, methods: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """F's weight sets of this fold for the weight-space plot, by label."""
    from m2cofs.checkpoint import load_model_file

    r = ctx.t.results
    sets = {"θ0": r.theta0, "θF": r.theta_f, "θS": r.theta_s, "θS→F": r.theta_sf, "θF→S": r.theta_fs, "θU": r.theta_u}
    for m in methods:
        spec = method(m)
        if spec.kind != MODEL or not spec.weight_set:
            continue
        path = spec.make(ctx)
        if path is not None and path.exists():
            tensors, _ = load_model_file(path)
            sets[label(m)] = {k[len("fusion."):]: v for k, v in tensors.items() if k.startswith("fusion.")}
    return sets


def plot_weight_space(sets_per_fold: list[dict[str, dict[str, torch.Tensor]]], path: Path) -> None:
    """PCA and t-SNE of F's weight sets (one panel pair per fold, up to three folds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    folds = sets_per_fold[:3]
    fig, axes = plt.subplots(len(folds), 2, figsize=(11, 4.6 * len(folds)), dpi=100, squeeze=False)
    for row, sets in enumerate(folds):
        names = list(sets)
        keys = sorted(next(iter(sets.values())))
        x = np.stack([torch.cat([sets[n][k].float().reshape(-1) for k in keys]).numpy() for n in names])
        emb = {"PCA": PCA(n_components=2).fit_transform(x)}
        if len(names) >= 4:
            emb["t-SNE"] = TSNE(n_components=2, perplexity=min(5.0, len(names) - 1.5), init="pca",
                                random_state=0).fit_transform(x)
        for col, (title, e) in enumerate(emb.items()):
            ax = axes[row][col]
            for i, n in enumerate(names):
                ax.scatter(e[i, 0], e[i, 1], s=90 if n == "θU" else 40, c=COLOURS.get(n, "#8c564b"),
                           marker="*" if n == "θU" else "o", edgecolors="k", linewidths=0.5)
                ax.annotate(n, (e[i, 0], e[i, 1]), fontsize=8, xytext=(4, 3), textcoords="offset points")
            ax.set_title(f"fold {row}: {title} of F's weights")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    from m2cofs.io import atomic_write_with

    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
