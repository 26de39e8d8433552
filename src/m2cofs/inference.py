"""Inference: one pass of Φ and F gives the fused volume and the segmentation.

Full volumes go through MONAI's :func:`~monai.inferers.sliding_window_inference` with
Gaussian-weighted blending of overlapping windows (not the authors' overwritten patches).
Segmentation probabilities are blended, brought back to the input's grid (trilinear), then
thresholded and decoded into the label convention. Optional post-processing, as nnU-Net and
BraTS entries do, removes connected components smaller than ``min_component_mm3`` and keeps
the largest whole-tumour component (tumour conventions only; tissue maps are left alone).
With ``trunk="volume"`` Φ, F and ψ run once per voxel over the volume instead, and only φ in
the sliding window (faster fusion; worse segmentation, see :func:`predict_array`).

Speed and memory (``benchmarks/`` measures both): the network runs under
:func:`torch.inference_mode`, where the Swin attention takes the fused
``scaled_dot_product_attention`` path, and windows run in ``channels_last_3d`` (oneDNN's 3-D
convolutions are up to 2.5× faster in it on a CPU). On CUDA windows run under autocast (bf16
where the card has it, else fp16) with cuDNN autotuning; CPUs stay in fp32 (bf16 autocast is far
slower on CPUs without native bf16 kernels). Only the sliding window works on
the model grid; on the original grid each region is thresholded as soon as it is resampled and
post-processing runs inside the segmentation's bounding box, so the memory that grows with the
volume is a few bytes per voxel.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2cofs.checkpoint import load_model_file, resolve_model_file
from m2cofs.config import Config
from m2cofs.devices import autocast_dtype
from m2cofs.data.labels import LabelConvention, get_convention, labels_to_regions, regions_to_labels
from m2cofs.data.loading import Case, foreground_mask
from m2cofs.data.preprocess import CaseMeta, PreparedCase, PreprocessConfig, _resize, apply_intensity_range, restore
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

    @property
    def preprocessing(self) -> PreprocessConfig:
        """The preprocessing the model was trained with (its sidecar's; else its config's)."""
        if "preprocessing" in self.meta:
            return PreprocessConfig.from_dict(self.meta["preprocessing"])
        return PreprocessConfig(spacing=self.config.data.spacing, intensity=self.config.data.intensity)

    def dataset(self, path: str | Path, **kwargs):
        """The :class:`~m2cofs.data.dataset.MultiModalDataset` of ``path`` that this model can
        predict: its modalities, in its order, and its preprocessing. Other arguments (``format``,
        ``ids``, ``resample_to``, ``cache_dir``, ``labels``, ``load_labels`` — default ``False``)
        go to the dataset."""
        from m2cofs.data.dataset import MultiModalDataset

        fixed = [k for k in ("modalities", "preprocess") if k in kwargs]
        if fixed:
            raise M2CofsError(f"{' and '.join(fixed)} come(s) from the model ({', '.join(self.modalities)}; "
                              f"{self.preprocessing.to_dict()}): do not pass {', '.join(fixed)} to dataset()",
                              self.path)
        kwargs.setdefault("load_labels", False)
        return MultiModalDataset(path, modalities=self.modalities, preprocess=self.preprocessing, **kwargs)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network described by a model file's sidecar and load its weights.

    ``path`` may be a training run's folder: its ``unified.ckpt`` is loaded (``.path`` says so)."""
    path = resolve_model_file(path)
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
    prepare_for_inference(net, device)
    return LoadedModel(net, meta, cfg, path)


def prepare_for_inference(net: torch.nn.Module, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Eval mode on ``device`` with ``channels_last_3d`` weights; on CUDA also cuDNN autotuning
    (every window has the same shape)."""
    device = torch.device(device)
    net.eval().to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    net.to(memory_format=torch.channels_last_3d)
    return net


TRUNK_TILE_VOXELS = 128 ** 3
"""Largest tile (core and halo) that ``trunk="volume"`` runs Φ → F → ψ on at once: about 1.1 GiB
of activations with the lite preset (≈ 600 B per voxel). Brain volumes on lite's 2 mm grid fit
in one tile; larger grids pay for the halos around the tiles."""


@torch.inference_mode()
def predict_array(model: LoadedModel, image: np.ndarray, device: str | torch.device = "cpu",
                  tasks: list[str] | None = None, sw_batch_size: int | None = None, trunk: str | None = None,
                  tile_voxels: int = TRUNK_TILE_VOXELS) -> dict[str, np.ndarray]:
    """Sliding-window prediction on a preprocessed (C, X, Y, Z) array.

    Returns ``fused`` (X, Y, Z) and/or ``seg_prob`` (R, X, Y, Z) on the same grid (with a
    ``weights`` fusion head also ``fusion_weights`` (N, X, Y, Z), the source weights). Only the
    tasks asked for are computed (a fusion-only call never runs φ). The volume, the windows and
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
    """
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
                  overlap=cfg.inference.overlap, mode="gaussian", padding_mode="constant", cval=0.0, sw_device=device)

    def run(fn, patch: torch.Tensor):
        """``fn`` on a patch moved to the compute device, in channels_last_3d, under autocast on CUDA."""
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return fn(patch.to(device).contiguous(memory_format=torch.channels_last_3d))

    result = {}
    if mode == "volume":
        z, fused = trunk_over_volume(model.net, x, tasks, tile_voxels,
                                     _buffer_device(device, x, tasks, n_regions, model.net.cfg.fusion_channels),
                                     run=lambda fn, t: run(fn, t).float())
        if fused is not None:
            if fusion_head_kind(model) == "weights":
                result["fusion_weights"] = fused[0].cpu().numpy()
                result["fused"] = (fused[0] * x[0].to(fused.device)).sum(0).cpu().numpy()
            else:
                result["fused"] = fused[0, 0].cpu().numpy()
        if z is not None:
            seg = sliding_window_inference(z, predictor=lambda p: torch.sigmoid(run(model.net.seg_head, p).float()),
                                           device=z.device, **window)
            result["seg_prob"] = seg[0].float().cpu().numpy()
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


def plan_trunk_tiles(shape: tuple[int, ...], align: int, halo: int, max_voxels: int
                     ) -> list[tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """Tiles that cover a volume of ``shape`` (each a multiple of ``align``).

    Returns ``(source, core_in_source, core)`` slices per tile: the region to compute (the core
    and up to ``halo`` voxels around it, within the volume), where the core lies inside that
    region, and where it lies in the volume. Cores start at multiples of ``align``; the longest
    core is halved until every source region holds at most ``max_voxels``, but no core gets
    narrower than ``2 · halo`` (below that the halos would cost more than 8× the cores) and an
    axis is split only where that makes the sources shorter along it; where the limit cannot be
    met so, it is exceeded. The whole volume is a single tile when it fits.
    """
    if any(s % align for s in shape):
        raise ValueError(f"shape {shape} is not a multiple of {align}")
    core = list(shape)
    floor = max(align, 2 * halo)

    def extent(c: int, s: int) -> int:
        return min(c + 2 * halo, s)

    while int(np.prod([extent(c, s) for c, s in zip(core, shape)])) > max_voxels:
        halved = {i: max(floor, -(-core[i] // (2 * align)) * align) for i in range(len(core))}
        can = [i for i in range(len(core)) if extent(halved[i], shape[i]) < extent(core[i], shape[i])]
        if not can:
            break
        i = max(can, key=lambda j: core[j])
        core[i] = halved[i]
    tiles = []
    for starts in itertools.product(*(range(0, s, c) for s, c in zip(shape, core))):
        src, inner, dst = [], [], []
        for a, c, s in zip(starts, core, shape):
            b = min(a + c, s)
            lo, hi = max(0, a - halo), min(s, b + halo)
            src.append(slice(lo, hi))
            inner.append(slice(a - lo, b - lo))
            dst.append(slice(a, b))
        tiles.append((tuple(src), tuple(inner), tuple(dst)))
    return tiles


def trunk_over_volume(net: M2CoFSNet, x: torch.Tensor, tasks: tuple[str, ...] = ("fusion", "segmentation"),
                      tile_voxels: int = TRUNK_TILE_VOXELS, buffers: torch.device | None = None, run=None
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """F's features (for φ; with ``"segmentation"`` in ``tasks``) and ψ's fused volume (with
    ``"fusion"``; with a ``weights`` head ψ's source weights, (1, N, ...), instead) over the whole
    of ``x`` (1, N, X, Y, Z), one tile at a time
    (:func:`plan_trunk_tiles`, :meth:`M2CoFSNet.trunk_geometry`), kept on ``buffers`` (default:
    ``x``'s device). ``run(fn, t)`` applies a network part to a tile (default: ``fn(t)``)."""
    run = run or (lambda fn, t: fn(t))
    buffers = buffers or x.device
    align, halo = net.trunk_geometry()
    shape = tuple(x.shape[2:])
    padded = tuple(-(-s // align) * align for s in shape)
    xp = torch.nn.functional.pad(x, [p for s, q in zip(reversed(shape), reversed(padded)) for p in (0, q - s)])
    z = torch.zeros((1, net.cfg.fusion_channels, *shape), device=buffers) if "segmentation" in tasks else None
    weights = net.fusion_head.kind == "weights"
    out_ch = x.shape[1] if weights else 1
    fused = torch.zeros((1, out_ch, *shape), device=buffers) if "fusion" in tasks else None
    head = net.fusion_head.weights if weights else net.fusion_head
    for src, inner, dst in plan_trunk_tiles(padded, align, halo, tile_voxels):
        keep = tuple(slice(d.start, min(d.stop, s)) for d, s in zip(dst, shape))  # inside the unpadded volume
        cut = (slice(None), slice(None)) + tuple(slice(i.start, i.start + k.stop - k.start) for i, k in zip(inner, keep))
        zt = run(net.trunk, xp[(slice(None), slice(None), *src)])
        if fused is not None:
            fused[(slice(None), slice(None), *keep)] = run(head, zt)[cut].to(buffers)
        if z is not None:
            z[(slice(None), slice(None), *keep)] = zt[cut].to(buffers)
        del zt
    return z, fused


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


def prob_to_regions(prob: np.ndarray, meta: CaseMeta, threshold: float = 0.5) -> np.ndarray:
    """Region probabilities (R, *meta.shape) → binary masks (R, *meta.original_shape) uint8.

    The same result as ``restore(prob, meta, "prob") > threshold`` (trilinear resampling to the
    cropped grid, then padding and reorientation, which commute with the threshold), one region
    at a time and thresholded before padding: no float array on the original grid.
    """
    prob = np.asarray(prob)
    out = np.empty((prob.shape[0], *meta.original_shape), dtype=np.uint8)
    resample = list(meta.shape) != list(meta.cropped_shape)
    grid = dataclasses.replace(meta, shape=list(meta.cropped_shape)) if resample else meta
    for c in range(prob.shape[0]):
        p = prob[c]
        if resample:
            p = _resize(p[None], meta.cropped_shape, "trilinear")[0]
        out[c] = restore((p > threshold).astype(np.uint8), grid, "label", fill=0)
    return out


def postprocess_regions(regions: np.ndarray, convention: LabelConvention, spacing, min_component_mm3: float,
                        keep_largest_wt: bool, keep_fraction: float = 1.0) -> np.ndarray:
    """Clean binary region masks (R, X, Y, Z) of a tumour convention (nested ET ⊂ TC ⊂ WT).

    Components smaller than ``min_component_mm3`` are removed from every region (MONAI's
    ``RemoveSmallObjects`` with ``by_measure``); with ``keep_largest_wt`` the largest
    whole-tumour component is kept (``KeepLargestConnectedComponent``), and with
    ``keep_fraction`` < 1 also every other component at least that fraction of its size — when
    two components are alike in size nothing says which one is the tumour, and keeping only one
    can throw the whole tumour away; TC and ET are then clipped to WT. Tissue conventions are
    returned unchanged.
    """
    if not convention.nested or regions.size == 0:
        return regions
    # Everything happens inside the bounding box of the segmentation: components never leave
    # it and a row-major scan of the box meets voxels in the same order as a scan of the whole
    # volume, so the result is the whole-volume result at a fraction of the memory and time.
    anything = regions.any(axis=0)
    if not anything.any():
        return regions.astype(np.uint8)
    box = []
    for ax in range(anything.ndim):
        idx = np.flatnonzero(anything.any(axis=tuple(a for a in range(anything.ndim) if a != ax)))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    del anything
    out = np.zeros(regions.shape, dtype=np.uint8)
    out[(slice(None), *box)] = _postprocess_box(regions[(slice(None), *box)], convention, spacing, min_component_mm3,
                                                keep_largest_wt, keep_fraction)
    return out


def _keep_large_components(mask: np.ndarray, fraction: float) -> np.ndarray:
    """The 26-connected components of ``mask`` at least ``fraction`` × the largest's size."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= fraction * sizes.max()) + 1
    return np.isin(lab, keep)


def _postprocess_box(regions: np.ndarray, convention: LabelConvention, spacing, min_component_mm3: float,
                     keep_largest_wt: bool, keep_fraction: float = 1.0) -> np.ndarray:
    from monai.transforms import KeepLargestConnectedComponent, RemoveSmallObjects

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
            if keep_fraction >= 1.0:
                t[wt] = torch.as_tensor(KeepLargestConnectedComponent(is_onehot=False, connectivity=3)(t[wt][None].int())[0]).bool()
            else:
                t[wt] = torch.from_numpy(_keep_large_components(t[wt].numpy(), keep_fraction))
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


def detail_transfer_wanted(setting: str, case: PreparedCase) -> bool:
    """``inference.detail_transfer``: ``on``, ``off``, or ``auto`` — on when the model grid is
    coarser than the input grid by more than a quarter along some axis (lite's 2 mm grid on 1 mm
    scans), where the fused volume would otherwise be an upsampled, blurred one."""
    if setting in ("on", "off"):
        return setting == "on"
    original = np.sqrt((np.array(case.meta.original_affine)[:3, :3] ** 2).sum(0))
    if case.meta.ornt:  # the original axes in the model grid's (canonical) order
        original = original[np.argsort(np.array(case.meta.ornt)[:, 0])]
    return bool(np.max(np.array(case.meta.spacing) / original.clip(1e-6)) > 1.25)


def needs_source(model: LoadedModel, setting: str, case: PreparedCase) -> bool:
    """Whether :func:`predict_case` wants the case as loaded (``source``): for a ``weights``
    fusion head always (it fuses on the input grid), for an ``image`` head when detail transfer
    applies."""
    if "fusion" not in model.tasks:
        return False
    return fusion_head_kind(model) == "weights" or detail_transfer_wanted(setting, case)


def fusion_head_kind(model: LoadedModel) -> str:
    """``"image"`` or ``"weights"`` (networks without ψ count as ``"image"``)."""
    return getattr(getattr(model.net, "fusion_head", None), "kind", "image")


def transfer_detail(fused: np.ndarray, case: PreparedCase, source: Case, preprocess: PreprocessConfig) -> np.ndarray:
    """Add to ``fused`` (on the original grid) the detail of the sources that the model grid
    cannot hold, choosing per voxel the source whose detail is strongest (the max-abs rule of
    Laplacian-pyramid fusion, Burt & Adelson 1983; here with one level whose base is the fused
    volume). A source's detail is its full-resolution scaled image minus what the model saw of it
    (the model-grid channel brought back to the original grid the way the fused volume is), so
    nothing is added where the model grid already holds the image, and exactly the resampling
    loss is added where it does not."""
    fg = foreground_mask(source.images, source.mask)
    best = np.zeros(fused.shape, np.float32)
    for c, channel in enumerate(source.images):
        full = apply_intensity_range(channel, fg, case.meta.intensity_range[c], preprocess)
        full -= restore(case.image[c], case.meta, "image", fill=0.0)
        np.copyto(best, full, where=np.abs(full) > np.abs(best))
        del full
    best += fused
    best[~fg] = 0.0
    return best


def compose_on_input_grid(weights: np.ndarray, case: PreparedCase, source: Case,
                          preprocess: PreprocessConfig) -> np.ndarray:
    """The fused volume on the input's own grid: the source weights of a ``weights`` fusion head
    (N, *meta.shape, on the model grid), brought back to the original grid (trilinear, equal
    weights outside the crop box, renormalised to sum to one), applied to the full-resolution
    sources scaled exactly as the model saw them. No detail is lost to the model grid: only the
    weight maps, which are smooth, are resampled."""
    n = weights.shape[0]
    w = restore(weights, case.meta, "prob", fill=1.0 / n)
    w /= np.clip(w.sum(0, keepdims=True), 1e-6, None)
    fg = foreground_mask(source.images, source.mask)
    fused = np.zeros(w.shape[1:], np.float32)
    for c, channel in enumerate(source.images):
        fused += w[c] * apply_intensity_range(channel, fg, case.meta.intensity_range[c], preprocess)
    fused[~fg] = 0.0
    return fused


def _model_name(model: LoadedModel) -> str:
    return f"the model {model.path.name}" if model.path is not None else "the model"


def match_case_to_model(model: LoadedModel, case: PreparedCase, source: Case | None = None
                        ) -> tuple[PreparedCase, Case | None, list[str]]:
    """Bring a prepared case (and its ``source``) to the model's modalities, or refuse.

    The same modalities in another order are reordered to the model's (image channels, their
    intensity ranges, the source's channels); more modalities than the model's are narrowed to
    its own (with a note); a missing one, or a case preprocessed unlike the model (grid spacing,
    intensity scaling, reorientation), is an :class:`M2CofsError` saying what the model expects
    and how to build a matching dataset (:meth:`LoadedModel.dataset`). Returns the case, the
    source and the notes.
    """
    want = model.modalities
    have = list(case.meta.modalities)
    n = int(case.image.shape[0])
    build = f"build the dataset with load_model(...).dataset(path) (modalities {want}, the model's preprocessing)"
    if not have:  # an unnamed array: only the channel count can be checked
        if n != len(want):
            raise M2CofsError(f"case {case.id!r} has {n} channel(s); {_model_name(model)} expects {len(want)} "
                              f"({', '.join(want)}, in this order); {build}")
        have = list(want)
    if len(have) != n:
        raise M2CofsError(f"case {case.id!r}: its image has {n} channel(s) but names {len(have)} modalities "
                          f"({', '.join(have)}), so they cannot be told apart; {build}")
    missing = [m for m in want if m not in have]
    if missing:
        raise M2CofsError(f"{_model_name(model)} needs {', '.join(want)} (in this order); case {case.id!r} has "
                          f"{', '.join(have)}, without {', '.join(missing)}; {build}")
    _check_preprocessing(model, case, build)
    notes: list[str] = []
    if have == want:
        return case, source, notes
    idx = [have.index(m) for m in want]
    if len(have) == len(want):
        notes.append(f"reordered the channels {', '.join(have)} to the model's {', '.join(want)}")
    else:
        extra = [m for m in have if m not in want]
        notes.append(f"used {', '.join(want)} of the case's {', '.join(have)} (the model takes {len(want)}; "
                     f"left out {', '.join(extra)})")
    ranges = case.meta.intensity_range
    meta = dataclasses.replace(case.meta, modalities=list(want),
                               intensity_range=[ranges[i] for i in idx] if len(ranges) == n else ranges)
    case = PreparedCase(case.id, np.ascontiguousarray(case.image[idx]), case.mask, case.label, meta)
    if source is not None:
        lacking = [m for m in want if m not in source.modalities]
        if lacking:
            raise M2CofsError(f"case {case.id!r}: the source case has no {', '.join(lacking)} ({', '.join(source.modalities)})")
        sidx = [list(source.modalities).index(m) for m in want]
        source = dataclasses.replace(source, modalities=list(want), images=source.images[sidx])
    return case, source, notes


def _check_preprocessing(model: LoadedModel, case: PreparedCase, build: str) -> None:
    """Refuse a case preprocessed otherwise than the model's sidecar records (nothing to compare
    with where the sidecar or the case does not record it)."""
    if "preprocessing" not in model.meta:
        return
    want = model.preprocessing
    rec = dict(case.meta.preprocessing or {})
    got_spacing = [float(v) for v in case.meta.spacing] if case.meta.spacing else None
    diffs = []
    resampled = bool(case.meta.cropped_shape) and list(case.meta.shape) != list(case.meta.cropped_shape)
    if want.spacing is None:
        if resampled and got_spacing:
            diffs.append(f"grid {'x'.join(f'{v:g}' for v in got_spacing)} mm (resampled; the model works on the "
                         "scans' own grid)")
    elif got_spacing and not np.allclose(got_spacing, want.spacing, rtol=0.05):
        diffs.append(f"grid {'x'.join(f'{v:g}' for v in got_spacing)} mm (the model's: "
                     f"{'x'.join(f'{v:g}' for v in want.spacing)} mm)")
    for key in ("intensity", "lower_percentile", "upper_percentile", "canonical"):
        if key in rec and rec[key] != getattr(want, key):
            diffs.append(f"{key} {rec[key]!r} (the model's: {getattr(want, key)!r})")
    if diffs:
        raise M2CofsError(f"case {case.id!r} was preprocessed unlike {_model_name(model)}: {'; '.join(diffs)}; {build}")


def predict_case(model: LoadedModel, case: PreparedCase, out_convention: LabelConvention | None = None,
                 device: str | torch.device = "cpu", postprocess: bool | None = None,
                 source: Case | None = None, detail_transfer: str | None = None,
                 trunk: str | None = None) -> CasePrediction:
    """Predict one preprocessed case and bring the results back to its original grid.

    ``source`` (the case as loaded, before preprocessing): with a ``weights`` fusion head the
    fused volume is composed from it on the input's own grid (:func:`compose_on_input_grid`);
    with an ``image`` head it lets the fused volume take back the detail finer than the model
    grid (:func:`transfer_detail`), as ``detail_transfer`` (default: the model's
    ``inference.detail_transfer``) asks. Without it the fused volume is the model grid's,
    resampled. ``trunk`` as for :func:`predict_array`. The case is first matched to the
    model's modalities and preprocessing (:func:`match_case_to_model`; notes in ``info["notes"]``)."""
    t0 = time.time()
    case, source, notes = match_case_to_model(model, case, source)
    conv = out_convention or model.convention
    if len(conv.regions) != len(model.meta["regions"]) or list(conv.regions) != list(model.meta["regions"]):
        raise M2CofsError(f"--labels {conv.name} has regions {list(conv.regions)} but the model predicts {model.meta['regions']}")
    raw = predict_array(model, case.image, device, trunk=trunk)
    fused = label = None
    info: dict[str, Any] = {"notes": notes} if notes else {}
    weights = raw.pop("fusion_weights", None)
    if weights is not None and source is not None:  # the weights head: fuse on the input grid
        fused = compose_on_input_grid(weights, case, source, model.preprocessing)
        raw.pop("fused", None)
        info["fusion_grid"] = "input"
        info["detail_transfer"] = False
    elif "fused" in raw:
        fused = restore(raw.pop("fused"), case.meta, "image", fill=0.0).astype(np.float32, copy=False)
        info["fusion_grid"] = "model"
        setting = detail_transfer or model.config.inference.detail_transfer
        info["detail_transfer"] = source is not None and detail_transfer_wanted(setting, case)
        if info["detail_transfer"]:
            fused = transfer_detail(fused, case, source, model.preprocessing)
    if "seg_prob" in raw:
        regions = prob_to_regions(raw.pop("seg_prob"), case.meta)
        inf = model.config.inference
        do_pp = inf.postprocess if postprocess is None else postprocess
        if do_pp:
            spacing = np.sqrt((np.array(case.meta.original_affine)[:3, :3] ** 2).sum(0))
            regions = postprocess_regions(regions, conv, spacing, inf.min_component_mm3, inf.keep_largest_wt,
                                          inf.wt_keep_fraction)
        label = regions_to_labels(regions, conv)  # binary uint8 masks decode as their float copies would
        info["postprocess"] = bool(do_pp)
        info["region_voxels"] = dict(zip(conv.regions, labels_to_regions(label, conv).reshape(len(conv.regions), -1).sum(1).tolist()))
    return CasePrediction(case.id, fused, label, time.time() - t0, info)
