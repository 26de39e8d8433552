"""Losses: fusion loss, Synaptic Intelligence, and the manifold distance L_M (known values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from m2cofs.losses import (
    FusionLoss,
    SynapticIntelligence,
    fusion_loss,
    geodesic_row_distance,
    knn_geodesic_edges,
    make_seg_loss,
    manifold_distance,
    si_penalty,
    sobel_magnitude,
)


def test_sobel_magnitude_of_a_ramp():
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1).expand(10, 8, 8).clone()[None, None]
    g = sobel_magnitude(x)
    # normalised Sobel: a unit ramp along one axis has gradient 1 inside the volume
    assert torch.allclose(g[0, 0, 2:-2, 2:-2, 2:-2], torch.ones(6, 4, 4), atol=1e-4)


def test_fusion_loss_zero_for_identical_and_counts_sources():
    a = torch.rand(1, 1, 8, 8, 8)
    loss, parts = fusion_loss(a, torch.cat([a, a], 1), alpha=0.1)
    assert float(loss) < 1e-3 and parts["l1"] == 0.0
    b = torch.zeros_like(a)
    loss3, parts3 = fusion_loss(a, torch.cat([a, b, b], 1), alpha=0.0)  # N = 3 sources
    assert math.isclose(parts3["l1"], 2 * float(a.abs().mean()), rel_tol=1e-5)
    assert math.isclose(float(loss3), parts3["l1"], rel_tol=1e-6)


def test_fusion_loss_gradient_term_prefers_strongest_edges():
    a = torch.zeros(1, 1, 12, 12, 12)
    a[..., 6:] = 1.0  # an edge in A
    b = torch.zeros_like(a)
    b[:, :, 6:] = 0.5  # a weaker edge in B along another axis
    target = torch.maximum(sobel_magnitude(a), sobel_magnitude(b))
    _, with_both = fusion_loss((a + b) / 2, torch.cat([a, b], 1), alpha=1.0)
    _, only_a = fusion_loss(a, torch.cat([a, b], 1), alpha=1.0)
    assert with_both["grad"] > 0 and only_a["grad"] > 0
    assert float((sobel_magnitude(a + b) - target).abs().mean()) < with_both["grad"]


def _smooth_texture(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, 24, 24, 24, generator=g)
    x = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1)  # structure at a few voxels
    return (x - x.min()) / (x.max() - x.min())


def test_fusion_loss_structure_term_rewards_keeping_both_sources():
    a, b = _smooth_texture(1), _smooth_texture(2)  # two unrelated structures, both in [0, 1]
    sources = torch.cat([a, b], 1)
    ws = [0.0, 0.25, 0.5, 0.75, 1.0]
    paper = [float(FusionLoss(alpha=0.1)(w * a + (1 - w) * b, sources)[0]) for w in ws]
    both = [float(FusionLoss(alpha=0.1, ssim=1.0)(w * a + (1 - w) * b, sources)[0]) for w in ws]
    # the paper's L_F (β = 0) is the plain function, and it is flat in L1 over convex
    # combinations: its best is at an end (one source copied), never in the middle
    fused = 0.3 * a + 0.7 * b
    assert float(FusionLoss(alpha=0.1)(fused, sources)[0]) == float(fusion_loss(fused, sources, 0.1)[0])
    assert min(paper[0], paper[-1]) <= paper[2]
    # with the structure term the blend beats copying either source, and it is the best of the five
    assert both[2] < both[0] - 0.05 and both[2] < both[-1] - 0.05
    assert both.index(min(both)) == 2
    loss, parts = FusionLoss(alpha=0.1, ssim=1.0)(a, torch.cat([a, a], 1))
    assert parts["ssim"] < 1e-4 and float(loss) < 1e-3  # SSIM(x, x) = 1
    assert "ssim" not in FusionLoss(alpha=0.1)(a, sources)[1]


@pytest.mark.parametrize("n_sources, shape", [(2, (20, 18, 12)), (3, (9, 16, 24))])
def test_structure_loss_is_monais_ssim_in_value_and_gradient(n_sources, shape):
    """structure_loss = Σ_i monai.losses.SSIMLoss(3, data_range=1, win_size=7)(Ŷ, X_i), batch of 2,
    on random volumes and on a blend of the sources, to float precision; and its gradient with
    respect to Ŷ equals the one autograd gives MONAI's."""
    from monai.losses import SSIMLoss

    from m2cofs.losses import structure_loss

    g = torch.Generator().manual_seed(n_sources)
    sources = torch.rand(2, n_sources, *shape, generator=g)
    monai_ssim = SSIMLoss(spatial_dims=3, data_range=1.0, win_size=7)
    for fused in (torch.rand(2, 1, *shape, generator=g), sources.mean(1, keepdim=True) ** 2):
        fused = fused.clone().requires_grad_(True)
        ours = structure_loss(fused, sources)
        (g_ours,) = torch.autograd.grad(ours, fused)
        ref = sum(monai_ssim(fused, sources[:, i: i + 1]) for i in range(n_sources))
        (g_ref,) = torch.autograd.grad(ref, fused)
        assert float(ours) == pytest.approx(float(ref), rel=1e-5, abs=1e-6)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-4 * float(g_ref.abs().max()))  # float32 noise
    assert float(structure_loss(sources[:, :1], sources[:, :1])) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="expected fused"):
        structure_loss(sources, sources)


def test_seg_loss_dice_per_sample():
    loss = make_seg_loss("dice")
    target = torch.zeros(2, 1, 4, 4, 4)
    target[0, :, :2] = 1
    perfect = (target * 2 - 1) * 50  # logits
    out = loss(perfect, target)
    assert out.shape == (2,) and float(out[0]) < 1e-3
    assert float(loss(-perfect, target)[0]) > 0.99
    assert float(make_seg_loss("dicece")(perfect, target)[0]) < 1e-3


def test_synaptic_intelligence_matches_quadratic_path_integral():
    # one parameter, loss (w - 3)^2 / 2, SGD with a small step: Σ -g Δw ≈ L(start) - L(end)
    w = torch.nn.Parameter(torch.tensor([0.0]))
    si = SynapticIntelligence({"w": w}, xi=0.1)
    opt = torch.optim.SGD([w], lr=0.01)
    l0 = 4.5
    for _ in range(300):
        opt.zero_grad()
        loss = 0.5 * (w - 3) ** 2
        loss.backward()
        si.before_step()
        opt.step()
        si.after_step()
    l1 = float(0.5 * (w.detach() - 3) ** 2)
    omega = float(si.omega["w"])
    assert omega == pytest.approx(l0 - l1, rel=0.02)
    imp = si.importance()["w"]
    assert float(imp) == pytest.approx(omega / (float(w.detach()) ** 2 + 0.1), rel=1e-5)
    pen = si_penalty({"w": torch.tensor([1.0])}, {"w": imp}, {"w": torch.tensor([0.0])})
    assert float(pen) == pytest.approx(float(imp))


def _arc_points(n_per: int, r: float = 2.0):
    angles = np.linspace(0, np.pi, 3 * n_per)
    pts = np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)
    return [torch.tensor(pts[i * n_per:(i + 1) * n_per], dtype=torch.float64) for i in range(3)], angles


def test_geodesic_matches_hand_built_graph_on_an_arc():
    """Nine points on a half circle of radius 2: the 1-NN graph plus its spanning-tree edges is
    the chain along the arc, so
    the geodesic between corresponding rows of U (points 0-2) and A (3-5) is three chords, and
    to B (6-8) six chords — longer than the straight-line distance."""
    (u, a, b), angles = _arc_points(3)
    chord = 2 * 2.0 * math.sin((angles[1] - angles[0]) / 2)
    dist, _ = knn_geodesic_edges(torch.cat([u, a, b]).numpy(), k=1)
    assert dist[0, 3] == pytest.approx(3 * chord)
    assert dist[0, 6] == pytest.approx(6 * chord)
    assert dist[0, 6] > np.linalg.norm(u[0].numpy() - b[0].numpy())
    da, db = geodesic_row_distance(u, [a, b], k=1)
    assert float(da) == pytest.approx(3 * 3 * chord / 9)  # (1/n²) Σ_i g(u_i, a_i), n = 3
    assert float(db) == pytest.approx(3 * 6 * chord / 9)


def test_geodesic_gradient_moves_u_along_the_path():
    (u, a, b), _ = _arc_points(3)
    u = u.clone().requires_grad_(True)
    da, db = geodesic_row_distance(u, [a, b], k=2)
    (da + db).backward()
    # stepping against the gradient shortens the distance
    with torch.no_grad():
        u2 = u - 0.05 * u.grad
    da2, db2 = geodesic_row_distance(u2, [a, b], k=2)
    assert float(da2 + db2) < float(da + db)


def test_manifold_distance_kinds():
    torch.manual_seed(0)
    ta = {"w": torch.randn(6, 4), "b": torch.randn(6)}
    tb = {"w": torch.randn(6, 4), "b": torch.randn(6)}
    mid = {k: (ta[k] + tb[k]) / 2 for k in ta}
    geo_mid, _ = manifold_distance(mid, ta, tb, "geodesic", k=3)
    geo_a, _ = manifold_distance(ta, ta, tb, "geodesic", k=3)
    assert float(geo_mid) > 0 and float(geo_a) > 0
    far = {k: v + 5.0 for k, v in mid.items()}
    assert float(manifold_distance(far, ta, tb, "geodesic", k=3)[0]) > float(geo_mid)
    eu_mid, parts = manifold_distance(mid, ta, tb, "euclidean")
    expect = np.mean([float(((mid[k] - ta[k]) ** 2).mean()) for k in ta]) + np.mean([float(((mid[k] - tb[k]) ** 2).mean()) for k in ta])
    assert float(eu_mid) == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError):
        manifold_distance(mid, ta, tb, "cosine")
