"""The network over a whole preprocessed volume: :func:`predict_array` (MONAI's sliding window
with Gaussian blending, or the trunk once per voxel, see :mod:`m2cofs.inference.trunk`)."""

from __future__ import annotations

import numpy as np
import torch

from m2cofs.devices import autocast_dtype
from m2cofs.inference.loading import LoadedModel, fusion_head_kind
from m2cofs.inference.trunk import TRUNK_TILE_VOXELS, trunk_over_volume


@torch.inference_mode()
def predict_array(model: LoadedModel, image: np.ndarray, device: str | torch.device = "cpu",
                  tasks: list[str] | None = None, sw_batch_size: int | None = None, trunk: str | None = None,
                  tile_voxels: int = TRUNK_TILE_VOXELS, overlap: float | None = None) -> dict[str, np.ndarray]:
    """Sliding-window prediction on a preprocessed (C, X, Y, Z) array.

    Returns ``fused`` (X, Y, Z) and/or ``seg_prob`` (R, X, Y, Z) on the same grid (with a
    ``weights`` fusion head also ``fusion_weights`` (N, X, Y, Z), the source weights). Only the
    tasks asked for are computed (a fusion-only call runs φ only for a fusion head that reads its
    probabilities, ``reads_seg``). The volume, the windows and
    the blending buffers stay on ``device`` when they fit comfortably; on a GPU short of memory
    the buffers are kept in host memory.

    ``trunk`` (default: the model's ``inference.trunk``) says where the shared part runs.
    ``"window"``: the whole network in every window, blended. ``"volume"``: Φ, F and ψ once
    per voxel over the volume, in tiles of at most ``tile_voxels`` (see
    :func:`trunk_over_volume`), and only φ in the sliding window, over F's features. The windows
    overlap, so the fused volume comes 3–4× faster and without window seams, with the same
    fusion metrics on the shared real cases. Segmentation, though, is much worse from
    whole-volume features, even with a head trained on them: the blend of overlapping windows is
    worth more to it than the context (``results/README.md``). Use it for fusion.

    ``sw_batch_size`` and ``overlap`` of the sliding window default to the model's
    ``inference`` settings. With the model's ``inference.tta_axes`` (mirror test-time
    augmentation) the segmentation is also predicted on the volume flipped along each of those
    axes, flipped back, and the probabilities averaged (one more pass of the segmentation per axis).
    """
    result = _predict_once(model, image, device, tasks, sw_batch_size, trunk, tile_voxels, overlap)
    axes = list(model.config.inference.tta_axes)
    if "seg_prob" in result and axes:
        once = result["seg_prob"]
        total = once
        for ax in axes:
            flipped = np.flip(image, axis=ax + 1)
            p = _predict_once(model, flipped, device, ["segmentation"], sw_batch_size, trunk, tile_voxels, overlap)
            back = np.flip(p["seg_prob"], axis=ax + 1)
            total = total + back
            if ax == 0:  # the left-right pair, for the trust check's agreement (no third pass)
                result["seg_prob_pair"] = (once, np.ascontiguousarray(back))
        result["seg_prob"] = np.ascontiguousarray(total / (1 + len(axes)), dtype=np.float32)
    return result


def _predict_once(model: LoadedModel, image: np.ndarray, device, tasks, sw_batch_size, trunk, tile_voxels,
                  overlap) -> dict[str, np.ndarray]:
    """One pass of :func:`predict_array` (no test-time augmentation)."""
    from monai.inferers import sliding_window_inference

    tasks = tuple(tasks or model.tasks)
    cfg = model.config
    mode = trunk or cfg.inference.trunk
    if mode not in ("window", "volume"):
        raise ValueError(f"trunk must be 'window' or 'volume', not {mode!r}")
    device = torch.device(device)
    amp = autocast_dtype(device)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    n_regions = len(model.meta.get("regions", [0] * 3))
    window = dict(roi_size=tuple(cfg.data.patch_size), sw_batch_size=sw_batch_size or cfg.inference.sw_batch_size,
                  overlap=cfg.inference.overlap if overlap is None else overlap, mode="gaussian", padding_mode="constant", cval=0.0, sw_device=device)

    def run(fn, patch: torch.Tensor):
        """``fn`` on a patch moved to the compute device, in channels_last_3d, under autocast on CUDA."""
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return fn(patch.to(device).contiguous(memory_format=torch.channels_last_3d))

    result = {}
    if mode == "volume":
        head = model.net.fusion_head
        reads_seg = "fusion" in tasks and head.reads_seg  # ψ's weights need φ's probabilities: φ runs first
        z, fused = trunk_over_volume(model.net, x, tasks, tile_voxels,
                                     _buffer_device(device, x, tasks + (("segmentation",) if reads_seg else ()), n_regions,
                                                    model.net.trunk_channels),
                                     run=lambda fn, t: run(fn, t).float())
        seg = None
        if z is not None:
            seg = sliding_window_inference(z, predictor=lambda p: torch.sigmoid(run(model.net.seg_head, p).float()),
                                           device=z.device, **window)
            if "segmentation" in tasks:
                result["seg_prob"] = seg[0].float().cpu().numpy()
        if fused is not None:
            if reads_seg:  # the logits of the tiles, plus the 1×1×1 path from the blended probabilities
                fused = head.weights_from_logits(fused + head.seg_path(seg.to(fused.device)).float())
            if fusion_head_kind(model) == "weights":
                result["fusion_weights"] = fused[0].cpu().numpy()
                result["fused"] = (fused[0] * x[0].to(fused.device)).sum(0).cpu().numpy()
            else:
                result["fused"] = fused[0, 0].cpu().numpy()
        return result

    def predictor(patch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = run(lambda p: model.net(p, tasks=tasks), patch)
        res = {}
        if "fused" in out:
            res["fused"] = out["fused"].float()
        if "fusion_weights" in out:
            res["fusion_weights"] = out["fusion_weights"].float()
        if "seg" in out:
            res["seg"] = torch.sigmoid(out["seg"].float())
        return res

    out = sliding_window_inference(x, predictor=predictor, device=_buffer_device(device, x, tasks, n_regions), **window)
    if "fused" in out:
        result["fused"] = out["fused"][0, 0].float().cpu().numpy()
    if "fusion_weights" in out:  # blended weights sum to one again after the blend's normalisation
        result["fusion_weights"] = out["fusion_weights"][0].float().cpu().numpy()
    if "seg" in out:
        result["seg_prob"] = out["seg"][0].float().cpu().numpy()
    return result


def _buffer_device(device: torch.device, x: torch.Tensor, tasks: tuple[str, ...], n_regions: int,
                   features: int = 0) -> torch.device:
    """Where the sliding window's output and weight buffers (and, with ``trunk="volume"``, the
    ``features`` channels of F's output) live: on a GPU when they take less than a quarter of its
    free memory, else in host memory."""
    if device.type != "cuda":
        return device
    channels = (2 + x.shape[1] if "fusion" in tasks else 0) + (n_regions + 1 + features if "segmentation" in tasks else 0)
    need = channels * x[0, 0].numel() * 4
    free, _ = torch.cuda.mem_get_info(device)
    return device if need < free / 4 else torch.device("cpu")


