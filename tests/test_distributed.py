"""DDP on the CPU: two gloo processes train, agree on the weights, and match one process that
trains on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import tiny_model_config, tiny_prepared_cases
from m2cofs.data.labels import CONVENTIONS
from m2cofs.data.preprocess import PreparedCase
from m2cofs.models import M2CoFSNet
from m2cofs.training.distributed import DistInfo
from m2cofs.training.engine import LoopSettings, read_log, run_loop
from m2cofs.training.patches import PatchDataset
from m2cofs.training.stage1_independent import FusionTask, SegmentationTask

TINY = tiny_model_config(fusion_head="image")  # the tiny preset's network with the paper's ψ
# lite's weights head with the path from φ's probabilities, which waits at zero until Stage III
READS_SEG = tiny_model_config(fusion_head="weights", fusion_weights="gains", fusion_reads_seg=True)


def _cases() -> list[PreparedCase]:
    return tiny_prepared_cases(36)


def _train(run_dir: Path, rank: int, world: int, batch: int, task_kind: str = "segmentation") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = M2CoFSNet(2, 3, TINY if task_kind == "segmentation" else READS_SEG, (32, 32, 32))
    for p in net.encoders.parameters():
        p.requires_grad_(False)
    task = SegmentationTask(net, si_xi=1e-3) if task_kind == "segmentation" else FusionTask(net, si_xi=1e-3)
    ds = PatchDataset(_cases(), CONVENTIONS["brats2017"], (32, 32, 32), samples_per_case=4, seed=5, stage_key=2)
    s = LoopSettings(epochs=2, batch_size=batch, lr=1e-3, checkpoint_every=100, seed=5, progress=False)
    run_loop("ddp_test", task, ds, s, run_dir, DistInfo(rank, world), stage_key=2, resume=False)
    head = {f"fusion_head.{k}": v.detach().clone() for k, v in net.fusion_head.state_dict().items()}
    return {**{k: v.detach().clone() for k, v in net.fusion.state_dict().items()}, **head}


def _worker(rank: int, world: int, run_dir: str, init_file: str, task_kind: str = "segmentation") -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        weights = _train(Path(run_dir), rank, world, batch=2, task_kind=task_kind)
        torch.save(weights, Path(run_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_agree_and_match_one_process(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    mp.spawn(_worker, args=(2, str(ddp_dir), str(tmp_path / "rendezvous")), nprocs=2, join=True)
    r0 = torch.load(ddp_dir / "rank0.pt", weights_only=True)
    r1 = torch.load(ddp_dir / "rank1.pt", weights_only=True)
    for k in r0:  # the ranks hold the same weights
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)
    # one process, global batch 4 = 2 ranks × 2
    single = _train(single_dir, 0, 1, batch=4)
    ddp_log, one_log = read_log(ddp_dir / "logs" / "ddp_test.csv"), read_log(single_dir / "logs" / "ddp_test.csv")
    assert len(ddp_log) == len(one_log) == 4
    np.testing.assert_allclose([r["loss"] for r in ddp_log], [r["loss"] for r in one_log], rtol=1e-4)
    # Adam on float sums in another order: where a gradient is near zero its normalised step can
    # differ by up to one step (lr); everywhere else the weights agree to rounding
    for k in r0:
        torch.testing.assert_close(r0[k], single[k], rtol=0, atol=1e-3)
        assert (r0[k] - single[k]).abs().mean() < 1e-4, k  # a tenth of one step


def test_ddp_trains_a_fusion_head_whose_path_from_phi_waits(tmp_path):
    """A stage before φ exists (Stage I fusion) with a weights head that reads φ: the path is
    called without probabilities, stays in the graph with a zero gradient (DDP would stop on a
    trained parameter left out of it), and stays zero on both ranks while the rest of ψ trains."""
    mp.spawn(_worker, args=(2, str(tmp_path), str(tmp_path / "rendezvous"), "fusion"), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)
    assert float(r0["fusion_head.seg_path.weight"].abs().max()) == 0.0
    assert float(r0["fusion_head.out.weight"].abs().max()) > 0.0  # ψ's own last layer left zero: it trained


@pytest.mark.slow
def test_torchrun_cli_smoke(tmp_path):
    """``torchrun --nproc_per_node 2 -m m2cofs train`` runs a stage with two gloo processes."""
    data = tmp_path / "data"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "m2cofs", "synth", str(data), "--cases", "2", "--size", "32"],
                   check=True, env=env, capture_output=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--tee", "3",
           "-m", "m2cofs",
           "train", "--data", str(data), "--out", str(tmp_path / "run"), "--stages", "0", "--no-progress",
           "--preset", "tiny", "--set", "data.batch_size=1", "--set", "data.samples_per_case=4"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "run" / "stages" / "stage0_autoencoder.safetensors").is_file()
    import json

    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 2
