"""Inference: one pass of Φ and F gives the fused volume and the segmentation.

Full volumes go through MONAI's :func:`~monai.inferers.sliding_window_inference` with
Gaussian-weighted blending of overlapping windows (not the authors' overwritten patches).
Segmentation probabilities are blended, brought back to the input's grid (trilinear), then
thresholded and decoded into the label convention. Optional post-processing, as nnU-Net and
BraTS entries do, removes connected components smaller than ``min_component_mm3`` and keeps
the largest whole-tumour component (tumour conventions only; tissue maps are left alone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2cofs.checkpoint import load_model_file
from m2cofs.config import Config
from m2cofs.data.labels import LabelConvention, get_convention, labels_to_regions, regions_to_labels
from m2cofs.data.preprocess import PreparedCase, restore
from m2cofs.errors import M2CofsError
from m2cofs.models.network import M2CoFSNet


@dataclass
class LoadedModel:
    net: M2CoFSNet
    meta: dict[str, Any]
    config: Config
    path: Path

    @property
    def tasks(self) -> list[str]:
        return list(self.meta.get("tasks", ["fusion", "segmentation"]))

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def convention(self) -> LabelConvention:
        return get_convention(self.meta["label_convention"])


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network described by a model file's sidecar and load its weights."""
    path = Path(path)
    tensors, meta = load_model_file(path)
    try:
        cfg = Config.from_dict(meta["config"], source=f"{path.name} sidecar")
        n_mod = len(meta["modalities"])
        n_cls = len(meta["regions"])
    except KeyError as exc:
        raise M2CofsError(f"sidecar lacks {exc}", path) from None
    net = M2CoFSNet(n_mod, n_cls, cfg.model, tuple(cfg.data.patch_size))
    own = net.state_dict()
    unknown = [k for k in tensors if k not in own]
    wrong = [k for k in tensors if k in own and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if unknown or wrong:
        bad = (unknown or wrong)[0]
        raise M2CofsError(f"weights do not fit the network its sidecar describes (e.g. {bad}): "
                          "the checkpoint belongs to another preset or modality count", path)
    net.load_state_dict(tensors, strict=False)
    needed = ["encoders.", "fusion."] + (["fusion_head."] if "fusion" in meta.get("tasks", []) else []) + \
             (["seg_head."] if "segmentation" in meta.get("tasks", []) else [])
    for prefix in needed:
        if not any(k.startswith(prefix) for k in tensors):
            raise M2CofsError(f"has no {prefix.rstrip('.')} weights", path)
    net.eval().to(device)
    return LoadedModel(net, meta, cfg, path)


@torch.inference_mode()
def predict_array(model: LoadedModel, image: np.ndarray, device: str | torch.device = "cpu",
                  tasks: list[str] | None = None) -> dict[str, np.ndarray]:
    """Sliding-window prediction on a preprocessed (C, X, Y, Z) array.

    Returns ``fused`` (X, Y, Z) and/or ``seg_prob`` (R, X, Y, Z) on the same grid.
    """
    from monai.inferers import sliding_window_inference

    tasks = tasks or model.tasks
    cfg = model.config
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)

    def predictor(patch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model.net(patch, tasks=tuple(tasks))
        if "seg" in out:
            out["seg"] = torch.sigmoid(out["seg"])
        return out

    out = sliding_window_inference(x, roi_size=tuple(cfg.data.patch_size), sw_batch_size=cfg.inference.sw_batch_size,
                                   predictor=predictor, overlap=cfg.inference.overlap, mode="gaussian",
                                   padding_mode="constant", cval=0.0)
    result = {}
    if "fused" in out:
        result["fused"] = out["fused"][0, 0].float().cpu().numpy()
    if "seg" in out:
        result["seg_prob"] = out["seg"][0].float().cpu().numpy()
    return result


def postprocess_regions(regions: np.ndarray, convention: LabelConvention, spacing, min_component_mm3: float,
                        keep_largest_wt: bool) -> np.ndarray:
    """Clean binary region masks (R, X, Y, Z) of a tumour convention (nested ET ⊂ TC ⊂ WT).

    Components smaller than ``min_component_mm3`` are removed from every region (MONAI's
    ``RemoveSmallObjects`` with ``by_measure``); with ``keep_largest_wt`` only the largest
    whole-tumour component is kept (``KeepLargestConnectedComponent``); TC and ET are then
    clipped to WT. Tissue conventions are returned unchanged.
    """
    from monai.transforms import KeepLargestConnectedComponent, RemoveSmallObjects

    if not convention.nested or regions.size == 0:
        return regions
    names = convention.region_names
    t = torch.from_numpy(regions.astype(bool))
    if min_component_mm3 > 0:
        import warnings

        with warnings.catch_warnings():  # scikit-image renamed min_size; MONAI still passes it
            warnings.simplefilter("ignore", FutureWarning)
            t = RemoveSmallObjects(min_size=float(min_component_mm3), connectivity=3, independent_channels=True,
                                   by_measure=True, pixdim=tuple(float(s) for s in spacing))(t)
        t = torch.as_tensor(t).bool()
    if "WT" in names:
        wt = names.index("WT")
        if keep_largest_wt and t[wt].any():
            t[wt] = torch.as_tensor(KeepLargestConnectedComponent(is_onehot=False, connectivity=3)(t[wt][None].int())[0]).bool()
        for i in range(len(names)):
            if i != wt:
                t[i] &= t[wt]
    return t.numpy().astype(np.uint8)


@dataclass
class CasePrediction:
    id: str
    fused: np.ndarray | None  # original grid
    label: np.ndarray | None  # original grid, convention values
    seconds: float
    info: dict = field(default_factory=dict)


def predict_case(model: LoadedModel, case: PreparedCase, out_convention: LabelConvention | None = None,
                 device: str | torch.device = "cpu", postprocess: bool | None = None) -> CasePrediction:
    """Predict one preprocessed case and bring the results back to its original grid."""
    t0 = time.time()
    conv = out_convention or model.convention
    if len(conv.regions) != len(model.meta["regions"]) or list(conv.regions) != list(model.meta["regions"]):
        raise M2CofsError(f"--labels {conv.name} has regions {list(conv.regions)} but the model predicts {model.meta['regions']}")
    raw = predict_array(model, case.image, device)
    fused = label = None
    if "fused" in raw:
        fused = restore(raw["fused"], case.meta, "image", fill=0.0).astype(np.float32)
    info: dict[str, Any] = {}
    if "seg_prob" in raw:
        prob = restore(raw["seg_prob"], case.meta, "prob", fill=0.0)
        regions = (prob > 0.5).astype(np.uint8)
        inf = model.config.inference
        do_pp = inf.postprocess if postprocess is None else postprocess
        if do_pp:
            spacing = np.sqrt((np.array(case.meta.original_affine)[:3, :3] ** 2).sum(0))
            regions = postprocess_regions(regions, conv, spacing, inf.min_component_mm3, inf.keep_largest_wt)
        label = regions_to_labels(regions.astype(np.float32), conv)
        info["postprocess"] = bool(do_pp)
        info["region_voxels"] = dict(zip(conv.regions, labels_to_regions(label, conv).reshape(len(conv.regions), -1).sum(1).tolist()))
    return CasePrediction(case.id, fused, label, time.time() - t0, info)
