"""The losses of the three stages.

* :func:`fusion_loss` — L_F = Σ_i ‖Ŷ − X_i‖₁ + α ‖|∇Ŷ| − max_i |∇X_i|‖₁ (3-D Sobel magnitude,
  MONAI's :class:`~monai.transforms.SobelGradients`), the paper's two-source loss generalised
  to N sources. Means over voxels. :class:`FusionLoss` adds an optional structure term,
  β Σ_i (1 − SSIM(Ŷ, X_i)) (MONAI's 3-D SSIM), that rewards keeping every source's structure:
  L1 to all sources is flat for any convex combination of them and the gradient term then picks
  one source, so a fusion head that weights its sources collapses onto one without it (β = 0: the
  paper's loss). With labels it can also add ρ · :func:`retention_loss`, the lesion contrasts a
  reader looks for (T1ce's enhancing rim, FLAIR's oedema) kept in the fused volume.
* :func:`structure_loss` — that structure term: MONAI's SSIM (``monai.losses.SSIMLoss``, 3-D
  Gaussian window) computed with its window split into three 1-D passes and the fused volume's
  local moments shared by all sources: the same value and gradient, the fusion step in 0.52× the
  time (benchmarks/fusion_step.py).
* :func:`make_seg_loss` — multi-class (per-region, sigmoid) Dice from MONAI (the paper), or
  Dice + BCE.
* :class:`SynapticIntelligence` — importance Ω accumulated along a training trajectory and the
  quadratic penalty Σ Ω_i (θ_i − θ*_i)² (Zenke, Poole & Ganguli, ICML 2017).
* :func:`manifold_distance` — L_M between weight sets: geodesic on a k-NN graph over the
  layer-wise weight rows (the paper), or plain Euclidean (the authors' code).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.transforms import SobelGradients

_SOBEL = SobelGradients(kernel_size=3, normalize_kernels=True, padding_mode="replicate")


def sobel_magnitude(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """|∇x| of a (B, 1, X, Y, Z) volume with 3-D Sobel kernels (differentiable)."""
    if x.dim() != 5 or x.shape[1] != 1:
        raise ValueError(f"expected (B, 1, X, Y, Z), got {tuple(x.shape)}")
    g = _SOBEL(x[:, 0])  # MONAI stacks the axes first: (3·B, X, Y, Z), axis-major
    if hasattr(g, "as_tensor"):
        g = g.as_tensor()  # plain tensor (no MetaTensor bookkeeping in the loss)
    g = g.reshape(3, x.shape[0], *x.shape[2:])
    return torch.sqrt((g**2).sum(0) + eps).unsqueeze(1)


def fusion_loss(fused: torch.Tensor, sources: torch.Tensor, alpha: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """L_F for a fused volume (B, 1, ...) and its N sources (B, N, ...); returns (loss, parts)."""
    intensity = sum(F.l1_loss(fused, sources[:, i: i + 1]) for i in range(sources.shape[1]))
    with torch.no_grad():
        target = torch.stack([sobel_magnitude(sources[:, i: i + 1]) for i in range(sources.shape[1])]).amax(0)
    gradient = F.l1_loss(sobel_magnitude(fused), target)
    loss = intensity + alpha * gradient
    return loss, {"l1": float(intensity.detach()), "grad": float(gradient.detach())}


SSIM_WINDOW, SSIM_SIGMA = 7, 1.5  # MONAI's SSIMLoss defaults (win_size 7, kernel_sigma 1.5)


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian whose outer product is MONAI's SSIM window."""
    d = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-0.5 * (d / sigma) ** 2)
    return g / g.sum()


def structure_loss(fused: torch.Tensor, sources: torch.Tensor, win_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
                   data_range: float = 1.0) -> torch.Tensor:
    """Σ_i (1 − SSIM(Ŷ, X_i)) for a fused volume (B, 1, X, Y, Z) and its sources (B, N, X, Y, Z),
    each SSIM the mean over the valid window positions, averaged over the batch: exactly what
    ``sum(monai.losses.SSIMLoss(3, data_range, win_size)(Ŷ, X_i) for i)`` gives (k1 = 0.01,
    k2 = 0.03; tests/test_losses.py checks value and gradient against it). The Gaussian window is
    separable, so the local means are three 1-D convolutions instead of one 7³ one, and Ŷ's own
    moments are computed once for all sources."""
    if fused.dim() != 5 or fused.shape[1] != 1 or sources.shape[0] != fused.shape[0] or sources.shape[2:] != fused.shape[2:]:
        raise ValueError(f"expected fused (B, 1, X, Y, Z) and sources (B, N, X, Y, Z), got {tuple(fused.shape)} and "
                         f"{tuple(sources.shape)}")
    n = sources.shape[1]
    k = _gaussian_1d(win_size, sigma).to(fused)
    maps = torch.cat([fused, fused * fused, sources, sources * sources, fused * sources], 1)
    c = maps.shape[1]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = win_size
        maps = F.conv3d(maps, k.view(1, 1, *shape).expand(c, 1, *shape), groups=c)  # "valid", as MONAI's
    mf, mff = maps[:, :1], maps[:, 1:2]
    ms, mss, mfs = maps[:, 2:2 + n], maps[:, 2 + n:2 + 2 * n], maps[:, 2 + 2 * n:]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim = ((2 * mf * ms + c1) / (mf * mf + ms * ms + c1)) \
        * ((2 * (mfs - mf * ms) + c2) / (mff - mf * mf + mss - ms * ms + c2))
    return (1 - ssim.flatten(2).mean(2)).mean(0).sum()


RIM_SOURCES = ("t1ce",)  # the sequences whose contrast is the enhancing rim: ET against the rest of the lesion
OEDEMA_SOURCES = ("flair", "t2")  # ... the oedema: the whole lesion against normal-appearing brain
RETENTION_MIN_VOXELS = 32  # a region smaller than this in a patch gives no contrast to keep
RETENTION_MIN_CONTRAST = 0.1  # nor does a source whose own contrast is below this (in brain standard deviations)


def contrast_roles(modalities, regions) -> list[tuple[int, str, str]]:
    """``(source index, region, background)`` for each lesion contrast the sources carry: a T1ce
    source's rim (``"ET"`` against ``"WT-ET"``) and a FLAIR or T2 source's oedema (``"WT"``
    against ``"brain-WT"``); none without ET and WT regions (tissue conventions)."""
    names = list(regions or [])
    roles: list[tuple[int, str, str]] = []
    for i, m in enumerate(modalities or []):
        if m in RIM_SOURCES and {"ET", "WT"} <= set(names):
            roles.append((i, "ET", "WT-ET"))
        elif m in OEDEMA_SOURCES and "WT" in names:
            roles.append((i, "WT", "brain-WT"))
    return roles


def _standardised_contrast(x: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor, brain: torch.Tensor):
    """d = (mean_x(inside) − mean_x(outside)) / std_x(brain) per sample of (B, ...) tensors."""
    dims = tuple(range(1, x.dim()))
    n_b = brain.sum(dims).clamp_min(1.0)
    mu = (x * brain).sum(dims) / n_b
    std = torch.sqrt((((x - mu.view(-1, *[1] * len(dims))) ** 2) * brain).sum(dims) / n_b + 1e-8)
    m_in = (x * inside).sum(dims) / inside.sum(dims).clamp_min(1.0)
    m_out = (x * outside).sum(dims) / outside.sum(dims).clamp_min(1.0)
    return (m_in - m_out) / std


def retention_loss(fused: torch.Tensor, sources: torch.Tensor, target: torch.Tensor, has_label: torch.Tensor,
                   roles: list[tuple[int, str, str]], regions: list[str], overshoot: float = 0.0) -> torch.Tensor | None:
    """Mean over the patches and contrasts that have one of max(0, 1 − r) + ``overshoot`` ·
    max(0, r − 1), r = d_fused / d_source: the share of each source's lesion contrast
    (:func:`contrast_roles`; d as in :func:`_standardised_contrast`, the measure ``m2cofs
    evaluate`` reports as retention) that the fused volume loses, and (``overshoot`` > 0) the
    share by which it shows it more strongly than the source does. ``None`` when no patch of the
    batch shows a contrast to keep."""
    brain = (sources > 0).any(1).to(fused.dtype)
    masks = {r: target[:, regions.index(r)] * brain for r in ("ET", "WT") if r in regions}
    if "WT" in masks:
        masks["brain-WT"] = brain - masks["WT"]
        if "ET" in masks:
            masks["WT-ET"] = (masks["WT"] - masks["ET"]).clamp_min(0.0)
    dims = tuple(range(1, brain.dim()))
    terms = []
    for src, inside, outside in roles:
        a, b = masks[inside], masks[outside]
        with torch.no_grad():
            d_src = _standardised_contrast(sources[:, src], a, b, brain)
            ok = (has_label > 0) & (a.sum(dims) >= RETENTION_MIN_VOXELS) & (b.sum(dims) >= RETENTION_MIN_VOXELS) \
                & (d_src > RETENTION_MIN_CONTRAST)
        if ok.any():
            r = _standardised_contrast(fused[:, 0], a, b, brain)[ok] / d_src[ok]
            terms.append(torch.relu(1.0 - r) + overshoot * torch.relu(r - 1.0))  # overshoot 0: + exactly 0
    if not terms:
        return None
    return torch.cat(terms).mean()


class FusionLoss:
    """L_F (the paper's, :func:`fusion_loss`) + ``ssim`` · Σ_i (1 − SSIM(Ŷ, X_i)) + ``retention`` ·
    :func:`retention_loss` (with labels, and sources and regions that have lesion contrasts).

    SSIM is MONAI's, on 3-D Gaussian windows of 7 voxels (σ 1.5) with data range 1 (the sources
    are scaled to [0, 1]), computed separably (:func:`structure_loss`). Call it as
    ``loss(fused, sources[, target, has_label]) -> (loss, parts)``.
    """

    def __init__(self, alpha: float = 0.1, ssim: float = 0.0, retention: float = 0.0,
                 modalities=None, regions=None, overshoot: float = 0.0):
        self.alpha, self.ssim, self.retention = float(alpha), float(ssim), float(retention)
        self.overshoot = float(overshoot)
        self.regions = list(regions or [])
        self.roles = contrast_roles(modalities, self.regions) if self.retention > 0 else []

    @classmethod
    def from_train(cls, train, modalities=None, regions=None) -> "FusionLoss":
        """The fusion loss a training configuration (``cfg.train``) asks for; the retention term
        needs the run's ``modalities`` and label ``regions``."""
        return cls(train.alpha, train.fusion_ssim, train.fusion_retention, modalities, regions,
                   train.fusion_retention_overshoot)

    def __call__(self, fused: torch.Tensor, sources: torch.Tensor, target: torch.Tensor | None = None,
                 has_label: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = fusion_loss(fused, sources, self.alpha)
        if self.ssim > 0:
            structure = structure_loss(fused, sources)
            parts["ssim"] = float(structure.detach())
            loss = loss + self.ssim * structure
        if self.roles and target is not None and has_label is not None:
            kept = retention_loss(fused, sources, target, has_label, self.roles, self.regions, self.overshoot)
            if kept is not None:
                parts["retention"] = float(kept.detach())
                loss = loss + self.retention * kept
        return loss, parts


def make_seg_loss(kind: str = "dice"):
    """Per-sample segmentation loss on region logits (B, R, ...) vs binary targets.

    ``dice`` (the paper): MONAI's sigmoid Dice per sample and region, averaged over regions.
    ``dicece``: that plus the per-sample binary cross-entropy. Returns a callable giving a
    (B,) tensor.
    """
    if kind not in ("dice", "dicece"):
        raise ValueError(f"unknown segmentation loss {kind!r}")
    dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=False, reduction="none")

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = dice(logits, target).reshape(logits.shape[0], -1).mean(1)
        if kind == "dicece":
            per = per + F.binary_cross_entropy_with_logits(logits, target, reduction="none").reshape(logits.shape[0], -1).mean(1)
        return per

    return loss


class SynapticIntelligence:
    """Path-integral importance of parameters (Zenke et al. 2017).

    Call :meth:`before_step` after ``loss.backward()`` and before ``optimizer.step()`` (it reads
    the task-loss gradient and the current weights), then :meth:`after_step`. The running sum
    ω_i = Σ_t −g_i(t) Δθ_i(t) is the loss decrease attributed to parameter i. At the end,
    :meth:`importance` gives Ω_i = max(0, ω_i) / ((θ_i(end) − θ_i(start))² + ξ).
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter], xi: float = 1e-3):
        self.params = dict(params)
        self.xi = xi
        self.start = {k: p.detach().clone() for k, p in self.params.items()}
        self.omega = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self._prev: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    def before_step(self, task_grads: Mapping[str, torch.Tensor] | None = None) -> None:
        for k, p in self.params.items():
            g = task_grads[k] if task_grads is not None else p.grad
            self._grad[k] = torch.zeros_like(p) if g is None else g.detach().clone()
            self._prev[k] = p.detach().clone()

    def after_step(self) -> None:
        for k, p in self.params.items():
            self.omega[k] -= self._grad[k] * (p.detach() - self._prev[k])
        self._prev.clear()
        self._grad.clear()

    def importance(self) -> dict[str, torch.Tensor]:
        return {k: self.omega[k].clamp_min(0) / ((p.detach() - self.start[k]) ** 2 + self.xi)
                for k, p in self.params.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"start.{k}": v for k, v in self.start.items()}
        out.update({f"omega.{k}": v for k, v in self.omega.items()})
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for k in self.params:
            self.start[k] = state[f"start.{k}"].clone()
            self.omega[k] = state[f"omega.{k}"].clone()


def si_penalty(params: Mapping[str, torch.Tensor], importance: Mapping[str, torch.Tensor],
               anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """L_SI = Σ_i Ω_i (θ_i − θ*_i)² over the named parameters."""
    total = None
    for k, p in params.items():
        term = (importance[k] * (p - anchor[k]) ** 2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


# ------------------------------------------------------------------------------- manifold L_M
def layer_matrices(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each parameter tensor as an n × d matrix: one row per output neuron (first dimension)."""
    return {k: (v.reshape(v.shape[0], -1) if v.dim() >= 1 else v.reshape(1, 1)) for k, v in params.items()}


def knn_geodesic_edges(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Shortest paths on the symmetric k-NN graph of ``points`` (rows), made connected with the
    minimum-spanning-tree edges (as Isomap implementations do).

    Returns ``(dist, pred)``: the geodesic distance matrix and the predecessor matrix of
    :func:`scipy.sparse.csgraph.shortest_path` (Dijkstra).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree, shortest_path
    from scipy.spatial.distance import cdist

    n = points.shape[0]
    d = cdist(points, points)
    adj = np.zeros_like(d)
    kk = min(k, n - 1)
    if kk > 0:
        nn_idx = np.argsort(d, axis=1)[:, 1: kk + 1]
        rows = np.repeat(np.arange(n), kk)
        adj[rows, nn_idx.ravel()] = d[rows, nn_idx.ravel()]
    mst = minimum_spanning_tree(csr_matrix(d + 1e-12 * (d == 0) * (1 - np.eye(n)))).toarray()
    adj = np.maximum(adj, mst)
    adj = np.maximum(adj, adj.T)  # undirected
    dist, pred = shortest_path(csr_matrix(adj), method="D", directed=False, return_predecessors=True)
    return dist, pred


def _path_edge_counts(pred: np.ndarray, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """How often each (undirected) edge lies on the shortest paths between the given pairs."""
    counts: dict[tuple[int, int], int] = {}
    for s, t in pairs:
        node = t
        while node != s:
            p = int(pred[s, node])
            if p < 0:  # unreachable (cannot happen on the MST-connected graph)
                break
            e = (min(p, node), max(p, node))
            counts[e] = counts.get(e, 0) + 1
            node = p
    return counts


def geodesic_row_distance(u: torch.Tensor, others: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Geodesic distance from θU's layer matrix to each of ``others`` (same shape, n × d).

    The 3·n rows (neurons) of the matrices are the points of one k-NN graph; the distance from
    ``u`` to ``a`` is (1/n²) Σ_i g(u_i, a_i), the shortest-path lengths between corresponding
    neurons, scaled by 1/n² as in the paper.

    Paths are found on the detached points; the returned lengths are sums of Euclidean edge
    lengths along them, so they are differentiable with respect to ``u`` (exactly, for the
    fixed paths).
    """
    mats = [u, *others]
    n = u.shape[0]
    if any(m.shape != u.shape for m in others):
        raise ValueError("weight matrices must have the same shape")
    pts = torch.cat(mats, dim=0)
    _, pred = knn_geodesic_edges(pts.detach().double().cpu().numpy(), k)
    out = []
    for j in range(1, len(mats)):
        counts = _path_edge_counts(pred, [(i, j * n + i) for i in range(n)])
        if not counts:
            out.append(pts.new_zeros(()))
            continue
        edges = torch.tensor(list(counts.keys()), dtype=torch.long, device=pts.device)
        w = torch.tensor(list(counts.values()), dtype=pts.dtype, device=pts.device)
        lengths = (pts[edges[:, 0]] - pts[edges[:, 1]]).norm(dim=1)
        out.append((w * lengths).sum() / float(n * n))
    return out


def manifold_distance(theta_u: Mapping[str, torch.Tensor], theta_a: Mapping[str, torch.Tensor],
                      theta_b: Mapping[str, torch.Tensor], kind: str = "geodesic", k: int = 5) -> tuple[torch.Tensor, dict[str, float]]:
    """L_M = D(θU, θa) + D(θU, θb), summed over layers.

    ``geodesic`` (the paper): per layer, the rows of the three n × d weight matrices are the
    points of one k-NN graph; D is the shortest-path distance between corresponding neurons,
    summed and scaled by 1/n² (:func:`geodesic_row_distance`). ``euclidean`` (the authors'
    code): per layer MSE(θU, θa) + MSE(θU, θb), averaged over layers.
    """
    mu, ma, mb = layer_matrices(theta_u), layer_matrices(theta_a), layer_matrices(theta_b)
    keys = list(mu)
    if kind == "euclidean":
        da = sum(F.mse_loss(mu[k], ma[k].detach()) for k in keys) / len(keys)
        db = sum(F.mse_loss(mu[k], mb[k].detach()) for k in keys) / len(keys)
    elif kind == "geodesic":
        da = db = 0.0
        for key in keys:
            d1, d2 = geodesic_row_distance(mu[key], [ma[key].detach(), mb[key].detach()], k)
            da = da + d1
            db = db + d2
    else:
        raise ValueError(f"unknown manifold distance {kind!r}")
    return da + db, {"d_a": float(da.detach()), "d_b": float(db.detach())}
