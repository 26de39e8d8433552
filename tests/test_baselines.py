"""Baselines: learning-free fusion rules, weight merging, continual learning, joint training and
segmentation peers (m2cofs.baselines)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from conftest import tiny_model_config, tiny_prepared_cases
from m2cofs.baselines import (CLASSICAL_FUSION, COPY_SOURCE, JointTask, PeerTask, average, build_peer, diagonal_fisher,
                              fisher_merging, fuse_laplacian, fuse_max, fuse_mean, fuse_pca, make_continual_task,
                              shared_initialisation, task_arithmetic, ties_merging)
from m2cofs.baselines.classical import laplacian_pyramid, pca_weights, reconstruct_laplacian
from m2cofs.baselines.continual import bernoulli_kl_with_logits, first_task_fisher
from m2cofs.baselines.merging import trim_top_magnitude
from m2cofs.config import TrainConfig
from m2cofs.losses import FusionLoss
from m2cofs.data.labels import CONVENTIONS
from m2cofs.data.preprocess import PreparedCase
from m2cofs.models import M2CoFSNet
from m2cofs.training.distributed import DistInfo
from m2cofs.training.engine import LoopSettings, StageTask, run_loop
from m2cofs.training.patches import PatchDataset

TINY = tiny_model_config(fusion_head="image")  # the tiny preset's network with the paper's ψ
PATCH = (32, 32, 32)


# ------------------------------------------------------------------------------ classical fusion
def _vols(n=2, shape=(9, 8, 7), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, shape).astype(np.float32) for _ in range(n)]


def test_mean_and_max_known_values_and_mask():
    a = np.array([0.0, 0.2, 0.8, 1.0], np.float32).reshape(1, 2, 2)
    b = np.array([1.0, 0.6, 0.4, 0.0], np.float32).reshape(1, 2, 2)
    np.testing.assert_allclose(fuse_mean([a, b]).ravel(), [0.5, 0.4, 0.6, 0.5], rtol=1e-6)
    np.testing.assert_allclose(fuse_max([a, b]).ravel(), [1.0, 0.6, 0.8, 1.0])
    mask = np.array([True, False, True, False]).reshape(1, 2, 2)
    np.testing.assert_allclose(fuse_mean([a, b], mask).ravel(), [0.5, 0.0, 0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(fuse_max(np.stack([a, b]), mask).ravel(), [1.0, 0.0, 0.8, 0.0])
    c = np.full_like(a, 0.9)
    np.testing.assert_allclose(fuse_mean([a, b, c]).ravel(), [(0 + 1 + .9) / 3, (.2 + .6 + .9) / 3, (.8 + .4 + .9) / 3,
                                                              (1 + 0 + .9) / 3], rtol=1e-6)
    np.testing.assert_allclose(fuse_max([a, b, c]).ravel(), [1.0, 0.9, 0.9, 1.0])


@pytest.mark.parametrize("name", sorted(CLASSICAL_FUSION))
@pytest.mark.parametrize("n", [2, 3])
def test_identical_sources_give_the_source(name, n):
    (a,) = _vols(1)
    out = CLASSICAL_FUSION[name]([a] * n)
    assert out.dtype == np.float32 and out.shape == a.shape
    np.testing.assert_allclose(out, a, atol=1e-6)
    mask = np.zeros(a.shape, bool)
    mask[2:7, 1:6, 1:5] = True
    out = CLASSICAL_FUSION[name]([a] * n, mask)
    assert (out[~mask] == 0).all()
    np.testing.assert_allclose(out[mask], a[mask], atol=1e-6)


def test_copy_source_is_the_source_masked():
    a, b = _vols(2, seed=5)
    mask = np.zeros(a.shape, bool)
    mask[1:6] = True
    for name, src in (("copy1", a), ("copy2", b)):
        out = COPY_SOURCE[name]([a, b], mask)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out[mask], src[mask], atol=1e-7)
        assert (out[~mask] == 0).all()
    np.testing.assert_allclose(COPY_SOURCE["copy2"]([a, b, 1 - a]), b, atol=1e-7)  # any N >= 2
    with pytest.raises(ValueError, match="two or more"):
        COPY_SOURCE["copy1"]([a])


def test_pca_weights_follow_the_first_principal_component():
    (a,) = _vols(1)
    # b = 2a: covariance var(a)·[[1, 2], [2, 4]], leading eigenvector ∝ (1, 2) → weights (1/3, 2/3)
    np.testing.assert_allclose(pca_weights([0.4 * a, 0.8 * a]), [1 / 3, 2 / 3], rtol=1e-9)
    np.testing.assert_allclose(fuse_pca([0.4 * a, 0.8 * a]), (0.4 / 3 + 1.6 / 3) * a, rtol=1e-5)
    # three sources with scales 1:2:2 → weights 1/5, 2/5, 2/5
    np.testing.assert_allclose(pca_weights([0.2 * a, 0.4 * a, 0.4 * a]), [0.2, 0.4, 0.4], rtol=1e-9)
    # only in-mask voxels count: outside, b is noise that would change the weights
    mask = np.zeros(a.shape, bool)
    mask[:5] = True
    b = np.where(mask, 0.8 * a, np.random.default_rng(3).uniform(0, 1, a.shape)).astype(np.float32)
    np.testing.assert_allclose(pca_weights([0.4 * a, b], mask), [1 / 3, 2 / 3], rtol=1e-9)
    # no variance at all → equal weights
    np.testing.assert_allclose(pca_weights([np.full(a.shape, 0.3), np.full(a.shape, 0.7)]), [0.5, 0.5])


def test_laplacian_pyramid_reconstructs_exactly():
    (a,) = _vols(1, shape=(13, 10, 7))
    bands = laplacian_pyramid(a, levels=4)
    assert [b.shape for b in bands] == [(13, 10, 7), (7, 5, 4), (4, 3, 2), (2, 2, 1), (1, 1, 1)]
    np.testing.assert_allclose(reconstruct_laplacian(bands), a, atol=1e-12)


def test_laplacian_fusion_of_a_source_with_zeros_keeps_its_details():
    (a,) = _vols(1, shape=(16, 12, 10))
    out = fuse_laplacian([a, np.zeros_like(a)], levels=3)
    bands = laplacian_pyramid(a, levels=3)
    # every detail coefficient of a wins max-abs against 0; the base is averaged with 0
    expected = reconstruct_laplacian([*bands[:-1], bands[-1] / 2])
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)
    # ... so the fused volume differs from a only by half of the expanded base: its high-pass
    # part (a minus its blurred version) is a's
    from scipy.ndimage import gaussian_filter

    hp = lambda v: v - gaussian_filter(v, 4.0)  # noqa: E731
    assert np.abs(hp(out) - hp(a)).mean() < 0.25 * np.abs(out - a).mean()


def test_laplacian_picks_the_larger_detail_with_three_sources():
    vols = _vols(3, shape=(12, 12, 8), seed=1)
    vols[1] = 0.5 + 0.5 * (vols[1] - 0.5)  # low contrast
    vols[2] = np.full_like(vols[0], 0.5)  # no detail at all
    out = fuse_laplacian(vols, levels=2)
    fine = [laplacian_pyramid(v, 2)[0] for v in vols]
    fused_fine = laplacian_pyramid(out, 2)[0]
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    # the finest details come (mostly) from the high-contrast source
    assert np.corrcoef(fused_fine.ravel(), fine[0].ravel())[0, 1] > 0.8


def test_classical_fusion_rejects_bad_input():
    (a,) = _vols(1)
    with pytest.raises(ValueError, match="two or more"):
        fuse_mean([a])
    with pytest.raises(ValueError, match="shape"):
        fuse_max([a, a[:-1]])
    with pytest.raises(ValueError, match="mask"):
        fuse_pca([a, a], np.ones((2, 2, 2), bool))


# ------------------------------------------------------------------------------ merging
def _t(*vals):
    return torch.tensor(vals, dtype=torch.float32)


def test_average_and_task_arithmetic_exact_values():
    a = {"w": _t(1.0, 2.0), "b": _t(0.0)}
    b = {"w": _t(3.0, -2.0), "b": _t(4.0)}
    for k, v in average([a, a, a]).items():
        torch.testing.assert_close(v, a[k])
    m = average([a, b])
    torch.testing.assert_close(m["w"], _t(2.0, 0.0))
    torch.testing.assert_close(m["b"], _t(2.0))
    torch.testing.assert_close(average([a, b], weights=[3, 1])["w"], _t(1.5, 1.0))
    theta0 = {"w": _t(1.0, 1.0), "b": _t(1.0)}
    ta = task_arithmetic(theta0, [a, b], scale=1.0)  # θ0 + (a − θ0) + (b − θ0)
    torch.testing.assert_close(ta["w"], _t(3.0, -1.0))
    torch.testing.assert_close(ta["b"], _t(3.0))
    ta = task_arithmetic(theta0, [a, b], scale=0.4)
    torch.testing.assert_close(ta["w"], _t(1.8, 0.2))
    for k, v in task_arithmetic(theta0, [a, b], scale=0.5).items():  # λ = ½ with two tasks = averaging
        torch.testing.assert_close(v, m[k])
    assert a["w"].tolist() == [1.0, 2.0]  # inputs untouched
    with pytest.raises(ValueError, match="different parameter names"):
        average([a, {"w": _t(1.0, 2.0)}])


def test_ties_trim_elect_and_disjoint_mean_by_hand():
    theta0 = {"w": torch.zeros(4), "v": torch.zeros(2)}
    t1 = {"w": _t(3.0, -1.0, 0.5, 2.0), "v": _t(-4.0, 0.2)}
    t2 = {"w": _t(-1.0, -2.0, 0.1, 2.0), "v": _t(1.0, -0.3)}
    # no trimming: signs of the sums (2, −3, 0.6, 4 | −3, −0.1); mean over the agreeing entries
    m = ties_merging(theta0, [t1, t2], density=1.0, scale=1.0)
    torch.testing.assert_close(m["w"], _t(3.0, -1.5, 0.3, 2.0))
    torch.testing.assert_close(m["v"], _t(-4.0, -0.3))
    # top 50 % of each task vector over both tensors (3 of 6 entries):
    # τ̂1 = (3, 0, 0, 2 | −4, 0), τ̂2 = (−1, −2, 0, 2 | 1, 0)
    # (τ̂2's third largest magnitude is 1, shared by two entries: both kept, as in the reference)
    # elected signs (+, −, 0→majority, +, −, 0→majority); majority = sgn(1 − 1 + 1 − 1) = 0
    m = ties_merging(theta0, [t1, t2], density=0.5, scale=2.0)
    torch.testing.assert_close(m["w"], 2 * _t(3.0, -2.0, 0.0, 2.0))
    torch.testing.assert_close(m["v"], 2 * _t(-4.0, 0.0))
    # relative to a non-zero θ0
    shift = {k: v + 1 for k, v in theta0.items()}
    m2 = ties_merging(shift, [{k: v + 1 for k, v in t1.items()}, {k: v + 1 for k, v in t2.items()}], density=0.5, scale=2.0)
    torch.testing.assert_close(m2["w"], m["w"] + 1)
    torch.testing.assert_close(trim_top_magnitude(_t(0.1, -5.0, 2.0, -0.5), 0.5), _t(0.0, -5.0, 2.0, 0.0))


def test_fisher_merging_follows_the_fisher():
    a = {"w": _t(1.0, 2.0, 3.0)}
    b = {"w": _t(-1.0, -2.0, -3.0)}
    fa = {"w": _t(1.0, 0.0, 0.0)}
    fb = {"w": _t(0.0, 1.0, 0.0)}
    m = fisher_merging([a, b], [fa, fb])
    torch.testing.assert_close(m["w"], _t(1.0, -2.0, 0.0), atol=1e-6, rtol=0)  # last: no Fisher → average
    m = fisher_merging([a, b], [{"w": _t(3.0, 1.0, 1.0)}, {"w": _t(1.0, 1.0, 3.0)}])
    torch.testing.assert_close(m["w"], _t(0.5, 0.0, -1.5))
    for k, v in fisher_merging([a, a], [fa, fb]).items():
        torch.testing.assert_close(v, a[k])
    # normalising makes the Fishers' overall scale irrelevant
    m1 = fisher_merging([a, b], [{"w": _t(3.0, 1.0, 2.0)}, {"w": _t(1.0, 2.0, 3.0)}], normalize=True)
    m2 = fisher_merging([a, b], [{"w": _t(300.0, 100.0, 200.0)}, {"w": _t(1.0, 2.0, 3.0)}], normalize=True)
    torch.testing.assert_close(m1["w"], m2["w"])


class _LinearTask(StageTask):
    """A toy task: F is a linear map, the loss the mean squared error."""

    trained = ("fusion",)

    def __init__(self):
        super().__init__()
        self.fusion = nn.Linear(3, 1)

    def forward(self, image, target, has_label):
        loss = ((self.fusion(image) - target) ** 2).mean()
        return loss, {"mse": float(loss.detach())}


def test_diagonal_fisher_is_the_mean_squared_gradient():
    torch.manual_seed(0)
    task = _LinearTask()
    x, y = torch.randn(6, 3), torch.randn(6, 1)
    batches = [{"image": x[i: i + 3], "target": y[i: i + 3], "has_label": torch.ones(3, dtype=torch.bool)} for i in (0, 3)]
    W, bias = task.fusion.weight.detach(), task.fusion.bias.detach()
    r = (x @ W.T + bias - y)  # (6, 1): per-sample gradient of r² is 2r·(x, 1)
    expected_w = ((2 * r * x) ** 2).mean(0, keepdim=True)
    expected_b = ((2 * r) ** 2).mean(0)
    f = diagonal_fisher(task, batches, n_batches=2)
    torch.testing.assert_close(f["weight"], expected_w)
    torch.testing.assert_close(f["bias"], expected_b)
    assert task.fusion.weight.grad is None and task.training
    # batch approximation: mean over batches of B·(∂ mean-loss)²
    gw = [(2 * r[i: i + 3] * x[i: i + 3]).mean(0) for i in (0, 3)]
    fb = diagonal_fisher(task, batches, n_batches=2, per_sample=False)
    torch.testing.assert_close(fb["weight"][0], sum(3 * g ** 2 for g in gw) / 2)
    # only the first n_batches count
    torch.testing.assert_close(diagonal_fisher(task, batches, n_batches=1)["bias"], ((2 * r[:3]) ** 2).mean(0))


def test_shared_initialisation_is_the_pipelines_theta0():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    theta0 = shared_initialisation(2, 3, TINY, PATCH, seed=7)
    assert torch.rand(1) == before  # the global generator is left as it was
    torch.manual_seed(7)
    ref = M2CoFSNet(2, 3, TINY, PATCH).fusion_state()
    for k in ref:
        torch.testing.assert_close(theta0[k], ref[k], rtol=0, atol=0)


# ------------------------------------------------------------------------------ training tasks
def _cases() -> list[PreparedCase]:
    return tiny_prepared_cases(34, clip=True)


@pytest.fixture(scope="module")
def cases():
    return _cases()


def _net(seed: int = 0) -> M2CoFSNet:
    torch.manual_seed(seed)
    net = M2CoFSNet(2, 3, TINY, PATCH)
    net.encoders.requires_grad_(False)
    net.encoders.eval()
    return net


def _patches(cases, key: int = 1) -> PatchDataset:
    return PatchDataset(cases, CONVENTIONS["brats2017"], PATCH, samples_per_case=1, foreground_ratio=1.0, seed=3,
                        stage_key=key)


def _run(task, cases, tmp_path, name="t", epochs=1, lr=1e-2):
    s = LoopSettings(epochs=epochs, batch_size=1, lr=lr, checkpoint_every=100, seed=3, progress=False)
    return run_loop(name, task, _patches(cases), s, tmp_path, DistInfo(0, 1), stage_key=1, resume=False)


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _moved(a, b) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def _first_weights(net: M2CoFSNet) -> dict[str, torch.Tensor]:
    """A stand-in for θF / θS: θ0 moved a little."""
    g = torch.Generator().manual_seed(1)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in net.fusion_state().items()}


@pytest.mark.parametrize("kind", ["finetune", "ewc", "si", "lwf"])
@pytest.mark.parametrize("first,second", [("fusion", "segmentation"), ("segmentation", "fusion")])
def test_continual_task_trains_the_second_task_with_one_f(kind, first, second, cases, tmp_path):
    net = _net()
    theta1 = _first_weights(net)
    cfg = TrainConfig()
    omega = fisher = None
    if kind == "si":
        g = torch.Generator().manual_seed(2)
        omega = {k: torch.rand(v.shape, generator=g) for k, v in net.fusion.named_parameters()}
    if kind == "ewc":
        loader = DataLoader(_patches(cases, key=9), batch_size=1)
        fisher = first_task_fisher(net, first, theta1, cfg, loader, n_batches=2)
        assert all(v.shape == p.shape and (v >= 0).all() for (k, p), v in zip(net.fusion.named_parameters(), fisher.values()))
        assert sum(float(v.sum()) for v in fisher.values()) > 0
    first_head, second_head = {"fusion": ("fusion_head", "seg_head"), "segmentation": ("seg_head", "fusion_head")}[first]
    head1_before, head2_before = _state(getattr(net, first_head)), _state(getattr(net, second_head))
    task = make_continual_task(kind, net, first, second, theta1, omega, cfg, fisher)
    assert task.trained == ("fusion", second_head)
    for k, v in net.fusion_state().items():  # F starts from the first task's weights
        torch.testing.assert_close(v, theta1[k], rtol=0, atol=0)
    # at the anchor every regulariser is 0 (LwF: the current F is the old F)
    batch = next(iter(DataLoader(_patches(cases), batch_size=1)))
    with torch.no_grad():
        loss0, parts0 = task(batch["image"], batch["target"], batch["has_label"])
    if kind != "finetune":
        assert parts0[kind] == 0.0
    else:
        assert set(parts0) & {"ewc", "si", "lwf"} == set()
    result = _run(task, cases, tmp_path)
    assert result.steps == 2 and all(math.isfinite(r["loss"]) for r in result.history)
    if kind != "finetune":
        assert result.history[0][kind] == 0.0  # first step: still at the anchor
        assert result.history[1][kind] > 0.0  # the weights moved: the regulariser acts
    assert _moved(net.fusion_state(), theta1)
    assert _moved(_state(getattr(net, second_head)), head2_before)
    for k, v in _state(getattr(net, first_head)).items():  # the first task's head is fixed
        torch.testing.assert_close(v, head1_before[k], rtol=0, atol=0)


def test_continual_factory_checks_its_arguments():
    net = _net()
    theta1, cfg = net.fusion_state(), TrainConfig()
    with pytest.raises(ValueError, match="unknown continual"):
        make_continual_task("replay", net, "fusion", "segmentation", theta1, None, cfg)
    with pytest.raises(ValueError, match="must differ"):
        make_continual_task("finetune", net, "fusion", "fusion", theta1, None, cfg)
    with pytest.raises(ValueError, match="Fisher"):
        make_continual_task("ewc", net, "fusion", "segmentation", theta1, None, cfg)
    with pytest.raises(ValueError, match="importance"):
        make_continual_task("si", net, "fusion", "segmentation", theta1, None, cfg)
    with pytest.raises(ValueError, match="lacks"):
        make_continual_task("si", net, "fusion", "segmentation", theta1, {"dense.0.conv.weight": torch.zeros(1)}, cfg)
    si = make_continual_task("si", net, "fusion", "segmentation", theta1,
                             {k: torch.ones_like(p) for k, p in net.fusion.named_parameters()}, cfg)
    assert si.lam == cfg.si_mu
    ewc = make_continual_task("ewc", net, "segmentation", "fusion", theta1, None, cfg,
                              {k: torch.ones_like(p) for k, p in net.fusion.named_parameters()}, lam=3.0)
    assert ewc.lam == 3.0
    with torch.no_grad():  # λ/2 Σ F Δθ² with F = 1 and every weight moved by 0.1
        for p in net.fusion.parameters():
            p.add_(0.1)
    n = sum(p.numel() for p in net.fusion.parameters())
    assert float(ewc.regulariser(None, None).detach()) == pytest.approx(0.5 * 3.0 * 0.01 * n, rel=1e-4)


def test_bernoulli_kl():
    z_old = torch.tensor([-2.0, 0.0, 3.0])
    assert float(bernoulli_kl_with_logits(z_old, z_old, 2.0)) == pytest.approx(0.0, abs=1e-7)
    z = torch.tensor([1.0, -1.0, 0.5])
    p, q = torch.sigmoid(z_old / 2), torch.sigmoid(z / 2)
    kl = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).mean()
    assert float(bernoulli_kl_with_logits(z, z_old, 2.0)) == pytest.approx(float(kl), rel=1e-5)


def test_joint_task_trains_f_and_both_heads(cases, tmp_path):
    net = _net()
    before = {n: _state(getattr(net, n)) for n in ("fusion", "fusion_head", "seg_head")}
    task = JointTask(net, FusionLoss(alpha=0.1), eta=2.0, seg_loss="dice")
    assert task.trained == ("fusion", "fusion_head", "seg_head")
    batch = next(iter(DataLoader(_patches(cases), batch_size=1)))
    with torch.no_grad():
        loss, parts = task(batch["image"], batch["target"], batch["has_label"])
    assert float(loss) == pytest.approx(parts["fusion"] + 2.0 * parts["seg"], rel=1e-5)
    result = _run(task, cases, tmp_path, epochs=3, lr=3e-3)
    losses = [r["loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses) and len(losses) == 6
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    for n, s in before.items():
        assert _moved(_state(getattr(net, n)), s), n


def test_peers_are_the_requested_monai_networks():
    from monai.networks.nets import SegResNet, UNet

    seg = build_peer("segresnet", 2, 3)
    assert isinstance(seg, SegResNet) and seg.init_filters == 16
    unet = build_peer("unet", 2, 3)
    assert isinstance(unet, UNet) and tuple(unet.channels) == (16, 32, 64, 128, 256)
    assert tuple(unet.strides) == (2, 2, 2, 2) and unet.num_res_units == 2
    with pytest.raises(ValueError, match="unknown segmentation peer"):
        build_peer("nnunet", 2, 3)


@pytest.mark.parametrize("name", ["segresnet", "unet"])
def test_peer_task_trains_on_the_raw_modalities(name, cases, tmp_path):
    torch.manual_seed(0)
    model = build_peer(name, 2, 3)
    before = _state(model)
    task = PeerTask(model, "dice")
    result = _run(task, cases, tmp_path, lr=1e-3)
    assert result.steps == 2 and all(math.isfinite(r["loss"]) and 0 <= r["dice_loss"] <= 1 for r in result.history)
    assert _moved(_state(model), before)
