"""The network's parts: shapes, parameter counts, F's weight swapping, the weight generator."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import tiny_model_config

from m2cofs.models import M2CoFSNet, ModelConfig, seg_head_names
from m2cofs.models.blocks import count_parameters
from m2cofs.models.fusion_module import DenseFusion
from m2cofs.models.weight_generator import WeightGenerator

TINY = tiny_model_config(fusion_head="image")  # the tiny preset's network with the paper's ψ


def test_paper_sized_fusion_module_has_145k_parameters():
    f = DenseFusion(in_channels=32, growth=16, out_channels=16)
    assert count_parameters(f) == 145_344  # "≈145k" in the paper's code
    assert len([m for m in f.modules() if isinstance(m, torch.nn.Conv3d)]) == 6


@pytest.mark.parametrize("sizes", [(32, 16, 16, 4), (16, 8, 8, 4), (12, 4, 6, 2)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_fusion_module_without_concatenations_is_the_concatenating_form(sizes, layout):
    """F's forward (per-piece convolutions, no concatenation) gives the authors' concatenating
    form's output and gradients, in both memory layouts."""
    c_in, growth, c_out, n_dense = sizes
    torch.manual_seed(0)
    f = DenseFusion(c_in, growth, c_out, n_dense).double().to(memory_format=layout)
    for p in f.parameters():  # non-zero biases and PReLU slopes, so a mis-sliced kernel shows
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, c_in, 6, 5, 4, dtype=torch.double).contiguous(memory_format=layout)
    x.requires_grad_()
    new, ref = f(x), f.forward_concat(x)
    torch.testing.assert_close(new, ref)
    g_new = torch.autograd.grad(new.square().sum(), [x, *f.parameters()])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *f.parameters()])
    for a, b in zip(g_new, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("n_mod", [2, 3])
def test_one_pass_gives_both_outputs(n_mod):
    torch.manual_seed(0)
    net = M2CoFSNet(n_mod, 3, TINY, (32, 32, 32)).eval()
    x = torch.rand(1, n_mod, 32, 32, 32)
    with torch.no_grad():
        out = net(x)
    assert out["fused"].shape == (1, 1, 32, 32, 32)
    assert out["seg"].shape == (1, 3, 32, 32, 32)
    with pytest.raises(ValueError, match="expected 3 input channels"):
        M2CoFSNet(3, 3, TINY, (32, 32, 32))(torch.rand(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="two or more"):
        M2CoFSNet(1, 3, TINY)


@pytest.mark.parametrize("head", ["swinunetr", "unetr", "segresnet", "unet"])
def test_every_segmentation_head_plugs_in(head):
    assert head in seg_head_names()
    cfg = tiny_model_config(fusion_head="image", seg_head=head,
                            seg_feature_size={"swinunetr": 12, "unetr": 12, "segresnet": 8}.get(head, 4),
                            seg_depths=(1, 1, 1, 1), seg_num_heads=(1, 1, 2, 2), seg_window_size=4)
    net = M2CoFSNet(2, 3, cfg, (64, 64, 32))
    with torch.no_grad():
        out = net(torch.rand(1, 2, 64, 64, 32), tasks=("segmentation",))
    assert out["seg"].shape == (1, 3, 64, 64, 32) and "fused" not in out


def test_fusion_params_swap_weights_without_rebuilding():
    torch.manual_seed(0)
    net = M2CoFSNet(2, 3, TINY, (32, 32, 32)).eval()
    x = torch.rand(1, 2, 32, 32, 32)
    other = {k: v + 0.01 * torch.randn_like(v) for k, v in net.fusion_state().items()}
    with torch.no_grad():
        a = net(x, fusion_params=other)["fused"]
        net.load_fusion_state(other)
        b = net(x)["fused"]
    torch.testing.assert_close(a, b)


def test_weight_generator_starts_at_the_interpolation():
    torch.manual_seed(0)
    sf = {"w": torch.randn(4, 3, 3, 3, 3) * 0.1, "b": torch.randn(4) * 0.01}
    fs = {"w": torch.randn(4, 3, 3, 3, 3) * 0.1, "b": torch.randn(4) * 0.01}
    g = WeightGenerator(sf, fs, hidden=64)
    assert sum(p.numel() for p in g.parameters()) == 2 * 64 + 64 + 64 * 64 + 64 + 64 + 1  # 4417, "≈4.4k"
    out = g()
    for k in sf:
        torch.testing.assert_close(out[k], (sf[k] + fs[k]) / 2)
    theta_f = {k: torch.zeros_like(v) for k, v in sf.items()}
    g2 = WeightGenerator(sf, fs, init="theta_f", theta_f=theta_f)
    assert all(torch.equal(v, theta_f[k]) for k, v in g2().items())
    # G is trainable: one step changes θU
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    (g()["w"].sum()).backward()
    opt.step()
    assert not torch.allclose(g()["w"], out["w"])


def test_weights_fusion_head_starts_as_mean_fusion_and_composes_the_sources():
    """A ``weights`` ψ writes softmax source weights (zero last layer: equal weights, i.e. mean
    fusion, before training) and its fused output is their weighted sum of the inputs."""
    torch.manual_seed(0)
    net = M2CoFSNet(3, 3, dataclasses.replace(TINY, fusion_head="weights", fusion_weights="softmax"), (32, 32, 32)).eval()
    x = torch.rand(1, 3, 32, 32, 32)
    with torch.no_grad():
        out = net(x, tasks=("fusion",))
    w = out["fusion_weights"]
    assert w.shape == (1, 3, 32, 32, 32)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 3))
    torch.testing.assert_close(out["fused"], x.mean(1, keepdim=True))
    with torch.no_grad():  # once the last layer moves, weights vary per voxel and still sum to one
        torch.nn.init.normal_(net.fusion_head.out.weight, std=1.0)
        out = net(x, tasks=("fusion",))
    w = out["fusion_weights"]
    assert float(w.std()) > 1e-3
    torch.testing.assert_close(w.sum(1), torch.ones_like(w[:, 0]))
    torch.testing.assert_close(out["fused"], (w * x).sum(1, keepdim=True))
    z = net.trunk(x)
    torch.testing.assert_close(net.fusion_head.fuse(z, x), out["fused"])
    with pytest.raises(ValueError, match="needs the sources"):
        net.fusion_head.fuse(z)


def test_weights_head_starts_from_the_decoder_but_its_last_layer():
    torch.manual_seed(0)
    plain = dataclasses.replace(TINY, source_skip=False)  # ψ reads F's features alone: D's widths (source_skip adds the sources)
    net = M2CoFSNet(2, 3, dataclasses.replace(plain, fusion_head="weights"), (32, 32, 32))
    torch.nn.init.normal_(net.decoder.layer1.conv[0].weight if hasattr(net.decoder.layer1, "conv")
                          else next(net.decoder.layer1.parameters()))
    net.fusion_head.init_from_decoder(net.decoder)
    dec, head = net.decoder.state_dict(), net.fusion_head.state_dict()
    for k, v in dec.items():
        if not k.startswith("out."):
            torch.testing.assert_close(head[k], v)
    assert head["out.weight"].shape[0] == 2 and float(head["out.weight"].abs().sum()) == 0.0
    image = M2CoFSNet(2, 3, plain, (32, 32, 32))
    image.fusion_head.init_from_decoder(image.decoder)
    for k, v in image.decoder.state_dict().items():
        torch.testing.assert_close(image.fusion_head.state_dict()[k], v)


def test_unknown_fusion_head_is_refused():
    from m2cofs.config import load_config
    from m2cofs.errors import M2CofsError

    with pytest.raises(M2CofsError, match="model.fusion_head.*choose one of image, weights"):
        load_config("lite", overrides=["model.fusion_head=pixels"])
