"""Weight-space unification of F: merge task-specific weights of the feature-fusion module F
into one set, without training.

All functions take state dicts of F (``{name: tensor}``, same keys and shapes — e.g. θF and θS
from Stage I, or θS→F and θF→S from Stage II) and return a new state dict; inputs are never
modified. Only F is merged: the fusion head ψ and the segmentation head φ stay those trained
with the merged weights' sources (docs/baselines.md).

* :func:`average` — (weighted) mean of the weights (e.g. Wortsman et al., "Model soups", 2022).
* :func:`task_arithmetic` — θ0 + λ Σ_i (θ_i − θ0) (Ilharco et al., "Editing models with task
  arithmetic", ICLR 2023).
* :func:`ties_merging` — trim, elect sign, disjoint mean of the task vectors (Yadav et al.,
  "TIES-Merging: resolving interference when merging models", NeurIPS 2023).
* :func:`fisher_merging` — Σ_i F_i θ_i / Σ_i F_i element-wise with diagonal Fishers (Matena &
  Raffel, "Merging models with Fisher-weighted averaging", NeurIPS 2022);
  :func:`diagonal_fisher` estimates them for a training-stage task module.

θ0, the shared starting point of both Stage-I paths, is not stored by ``m2cofs train`` but is
reproducible: :func:`shared_initialisation` rebuilds it (``torch.manual_seed(train.seed)``, then
the network, as :class:`~m2cofs.training.pipeline.Trainer` does).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch

State = Mapping[str, torch.Tensor]

# Scaling coefficients searched on validation data in the TIES-Merging reference code
# (github.com/prateeky2806/ties-merging, README): task arithmetic λ ∈ {0.1, …, 1.0},
# TIES λ ∈ {0.8, …, 2.5}, both in steps of 0.1.
TASK_ARITHMETIC_SCALES = tuple(round(0.1 * i, 1) for i in range(1, 11))
TIES_SCALES = tuple(round(0.8 + 0.1 * i, 1) for i in range(18))
# Without a validation set, Yadav et al. (2023) recommend λ = 0.4 for task arithmetic and
# λ = 1 for TIES-Merging (with the top-20 % trim); these are the defaults below.
TASK_ARITHMETIC_DEFAULT_SCALE = 0.4
TIES_DEFAULT_SCALE = 1.0
TIES_DEFAULT_DENSITY = 0.2


def _check(thetas: Sequence[State], theta0: State | None = None) -> list[str]:
    if len(thetas) < 1:
        raise ValueError("no weight sets to merge")
    keys = list(thetas[0].keys())
    for i, t in enumerate([*thetas, *([theta0] if theta0 is not None else [])]):
        if set(t.keys()) != set(keys):
            raise ValueError(f"weight set {i} has different parameter names")
        for k in keys:
            if t[k].shape != thetas[0][k].shape:
                raise ValueError(f"{k}: shape {tuple(t[k].shape)} vs {tuple(thetas[0][k].shape)}")
    return keys


def _is_float(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t)


def average(thetas: Sequence[State], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Σ_i w_i θ_i with w normalised to sum 1 (equal weights by default).

    Non-floating tensors (integer buffers) are copied from the first set.
    """
    keys = _check(thetas)
    w = torch.ones(len(thetas), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.numel() != len(thetas) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(thetas)} non-negative weights with a positive sum, got {list(w.tolist())}")
    w = w / w.sum()
    out = {}
    for k in keys:
        ref = thetas[0][k]
        if not _is_float(ref):
            out[k] = ref.clone()
            continue
        acc = sum(float(wi) * t[k].detach().double() for wi, t in zip(w, thetas))
        out[k] = acc.to(ref.dtype)
    return out


def task_vectors(theta0: State, thetas: Sequence[State]) -> list[dict[str, torch.Tensor]]:
    """τ_i = θ_i − θ0 (floating tensors only)."""
    keys = _check(thetas, theta0)
    return [{k: t[k].detach().double() - theta0[k].detach().double() for k in keys if _is_float(theta0[k])}
            for t in thetas]


def task_arithmetic(theta0: State, thetas: Sequence[State], scale: float = TASK_ARITHMETIC_DEFAULT_SCALE
                    ) -> dict[str, torch.Tensor]:
    """θ0 + λ Σ_i (θ_i − θ0) (Ilharco et al. 2023).

    ``scale`` λ: 0.4 by default (Yadav et al.'s recommendation without validation data); search
    :data:`TASK_ARITHMETIC_SCALES` on validation data as Ilharco et al. do. With two tasks,
    λ = 0.5 is exactly :func:`average`, λ = 1 the plain sum of both task vectors.
    """
    taus = task_vectors(theta0, thetas)
    out = {}
    for k, ref in theta0.items():
        if not _is_float(ref):
            out[k] = thetas[0][k].clone()
            continue
        out[k] = (ref.detach().double() + scale * sum(t[k] for t in taus)).to(ref.dtype)
    return out


def _flatten(d: Mapping[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    return torch.cat([d[k].reshape(-1) for k in keys])


def _unflatten(v: torch.Tensor, like: State, keys: list[str]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for k in keys:
        n = like[k].numel()
        out[k] = v[i: i + n].reshape(like[k].shape)
        i += n
    return out


def trim_top_magnitude(vector: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (ties at the
    threshold kept, as in the reference code), zero the rest."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    n = vector.numel()
    k = max(1, int(n * density))
    if k >= n:
        return vector.clone()
    threshold = vector.abs().topk(k).values[-1]
    return torch.where(vector.abs() >= threshold, vector, torch.zeros_like(vector))


def ties_merging(theta0: State, thetas: Sequence[State], density: float = TIES_DEFAULT_DENSITY,
                 scale: float = TIES_DEFAULT_SCALE) -> dict[str, torch.Tensor]:
    """TIES-Merging (Yadav et al. 2023): θ0 + λ τ_m with

    1. **trim**: each task vector τ_i keeps its top-``density`` entries by magnitude, over all
       of F's parameters at once (as the reference code does), the others set to 0;
    2. **elect**: γ = sgn(Σ_i τ̂_i), the sign with the larger total magnitude per entry (where
       the sum is exactly 0, the sign of Σ γ over all entries — the reference's "majority");
    3. **disjoint mean**: τ_m = mean of the τ̂_i whose sign agrees with γ (non-zero ones only;
       0 where none agrees).

    Defaults: density 0.2 (the paper's top-20 %) and λ = 1 (its recommendation without
    validation data; :data:`TIES_SCALES` is the searched range).
    """
    taus = task_vectors(theta0, thetas)
    keys = [k for k in theta0 if _is_float(theta0[k])]
    trimmed = torch.stack([trim_top_magnitude(_flatten(t, keys), density) for t in taus])  # (T, P)
    sign = torch.sign(trimmed.sum(0))
    majority = torch.sign(sign.sum())
    sign[sign == 0] = majority
    agree = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    selected = trimmed * agree
    counts = (selected != 0).sum(0).clamp_min(1)
    merged = _unflatten(selected.sum(0) / counts, theta0, keys)
    out = {}
    for k, ref in theta0.items():
        if not _is_float(ref):
            out[k] = thetas[0][k].clone()
            continue
        out[k] = (ref.detach().double() + scale * merged[k]).to(ref.dtype)
    return out


def fisher_merging(thetas: Sequence[State], fishers: Sequence[State], eps: float = 1e-8,
                   weights: Sequence[float] | None = None, normalize: bool = False) -> dict[str, torch.Tensor]:
    """Fisher-weighted average (Matena & Raffel 2022): θ = Σ_i λ_i (F_i + ε) θ_i / Σ_i λ_i (F_i + ε).

    ``eps`` (ε) keeps the quotient defined where every Fisher is 0, where the merge falls back to
    the (λ-weighted) plain average — the role of the reference implementation's "Fisher floor".
    ``weights`` λ_i (default 1). ``normalize=True`` divides each Fisher by its mean over all
    entries first (an option, not in the paper: the fusion and segmentation losses have
    different scales, so raw Fishers let one task dominate).
    Parameters missing from a Fisher (e.g. buffers) are averaged plainly.
    """
    keys = _check(thetas)
    if len(fishers) != len(thetas):
        raise ValueError(f"{len(thetas)} weight sets but {len(fishers)} Fishers")
    lam = [1.0] * len(thetas) if weights is None else [float(w) for w in weights]
    fs = []
    for f in fishers:
        f = {k: v.detach().double() for k, v in f.items()}
        if normalize:
            total = sum(v.sum() for v in f.values())
            count = sum(v.numel() for v in f.values())
            mean = float(total) / max(count, 1)
            f = {k: v / mean for k, v in f.items()} if mean > 0 else f
        fs.append(f)
    out = {}
    for k in keys:
        ref = thetas[0][k]
        if not _is_float(ref):
            out[k] = ref.clone()
            continue
        num = torch.zeros(ref.shape, dtype=torch.float64)
        den = torch.zeros(ref.shape, dtype=torch.float64)
        for li, t, f in zip(lam, thetas, fs):
            fi = f[k].to(num.device) if k in f else torch.zeros_like(num)
            wi = li * (fi + eps)
            num = num + wi * t[k].detach().double().cpu()
            den = den + wi
        out[k] = (num / den).to(dtype=ref.dtype, device=ref.device)
    return out


@torch.no_grad()
def _zeros_like_params(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}


def diagonal_fisher(task: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], n_batches: int,
                    per_sample: bool = True) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher of F's parameters for a stage task module.

    ``task`` is a :class:`~m2cofs.training.engine.StageTask` with an ``fusion`` sub-module (F)
    whose ``forward(image, target, has_label)`` returns ``(loss, parts)`` — e.g. a plain
    :class:`~m2cofs.training.stage1_independent.FusionTask` or ``SegmentationTask`` holding the
    weights whose Fisher is wanted (no penalty: its gradient would enter the Fisher).
    ``batches`` yields dicts with ``image``, ``target``, ``has_label`` (a ``DataLoader`` over a
    :class:`~m2cofs.training.patches.PatchDataset`); the first ``n_batches`` are used.

    ``per_sample=True`` (default, as Kirkpatrick et al. and Matena & Raffel): F_i = mean over
    samples of (∂L/∂θ_i)², one backward pass per sample. ``per_sample=False``: mean over
    batches of B·(∂L̄/∂θ_i)² with the batch-mean loss L̄ — the cheaper approximation of common
    continual-learning code (e.g. Hsu et al. 2018), equal in expectation when the per-sample
    gradients are uncorrelated around a zero mean.

    The module is run in eval mode and left in its previous mode; ``.grad`` fields are not
    touched. Returns float32 tensors on F's device keyed like ``F.named_parameters()``.
    """
    fusion = task.fusion
    params = dict(fusion.named_parameters())
    flags = {k: p.requires_grad for k, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    device = next(iter(params.values())).device
    fisher = _zeros_like_params(params)
    was_training = task.training
    task.eval()
    count = 0
    try:
        for b, batch in enumerate(batches):
            if b >= n_batches:
                break
            image = batch["image"].to(device)
            target = batch["target"].to(device)
            has_label = batch["has_label"].to(device)
            bsz = image.shape[0]
            groups = [slice(j, j + 1) for j in range(bsz)] if per_sample else [slice(None)]
            for sl in groups:
                loss, _ = task(image[sl], target[sl], has_label[sl])
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                factor = 1.0 if per_sample else float(bsz)
                for (k, _), g in zip(params.items(), grads):
                    if g is not None:
                        fisher[k] += factor * g.detach().double() ** 2
                count += 1
    finally:
        task.train(was_training)
        for k, p in params.items():
            p.requires_grad_(flags[k])
    if count == 0:
        raise ValueError("no batches to estimate the Fisher from")
    return {k: (v / count).float() for k, v in fisher.items()}


def shared_initialisation(n_modalities: int, n_classes: int, model_cfg, patch_size, seed: int) -> dict[str, torch.Tensor]:
    """θ0: F's weights as ``m2cofs train`` initialises them for a run with this configuration
    (``torch.manual_seed(train.seed)`` then :class:`~m2cofs.models.network.M2CoFSNet`)."""
    from m2cofs.models.network import M2CoFSNet

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = M2CoFSNet(n_modalities, n_classes, model_cfg, tuple(patch_size))
        return net.fusion_state()
    finally:
        torch.random.set_rng_state(state)


def best_scale(merge: Callable[[float], dict[str, torch.Tensor]], scales: Sequence[float],
               score: Callable[[dict[str, torch.Tensor]], float]) -> tuple[float, dict[str, torch.Tensor], list[float]]:
    """Pick the scaling coefficient on validation data, as Ilharco et al. and Yadav et al. do:
    ``merge(λ)`` builds the merged weights, ``score(weights)`` rates them (higher is better).
    Returns (best λ, its weights, every score)."""
    results = [(float(s), merge(s)) for s in scales]
    scores = [float(score(w)) for _, w in results]
    i = max(range(len(scores)), key=scores.__getitem__)
    return results[i][0], results[i][1], scores


MERGE_METHODS = ("average", "task_arithmetic", "ties", "fisher")
