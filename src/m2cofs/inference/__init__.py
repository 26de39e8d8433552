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

The package, one concept per module: :mod:`~m2cofs.inference.loading` (a model file, loaded),
:mod:`~m2cofs.inference.windows` (the network over a volume), :mod:`~m2cofs.inference.trunk`
(``trunk="volume"``'s tiles), :mod:`~m2cofs.inference.postprocess` (probabilities → regions),
:mod:`~m2cofs.inference.fusion_output` (the fused volume on the input grid) and
:mod:`~m2cofs.inference.case` (one case, end to end), :mod:`~m2cofs.inference.predictor`
(:class:`Predictor`: a model and its settings, for cases and whole folders, as ``m2cofs predict``)
and :mod:`~m2cofs.inference.output_folder` (its staging folder). Every name is importable from
``m2cofs.inference`` itself.
"""

from __future__ import annotations

from m2cofs.inference.case import CasePrediction, _check_preprocessing, match_case_to_model, predict_case
from m2cofs.inference.fusion_output import compose_on_input_grid, detail_transfer_wanted, needs_source, transfer_detail
from m2cofs.inference.loading import LoadedModel, fusion_head_kind, load_model, prepare_for_inference
from m2cofs.inference.output_folder import STAGING_PREFIX
from m2cofs.inference.postprocess import _keep_large_components, _postprocess_box, postprocess_regions, prob_to_regions
from m2cofs.inference.predictor import Log, Predictor, print_log
from m2cofs.inference.trunk import TRUNK_TILE_VOXELS, plan_trunk_tiles, trunk_over_volume
from m2cofs.inference.windows import _buffer_device, predict_array

__all__ = [
    "CasePrediction", "LoadedModel", "Log", "Predictor", "STAGING_PREFIX", "TRUNK_TILE_VOXELS",
    "compose_on_input_grid", "detail_transfer_wanted", "fusion_head_kind", "load_model", "match_case_to_model",
    "needs_source", "plan_trunk_tiles", "postprocess_regions", "predict_array", "predict_case",
    "prepare_for_inference", "print_log", "prob_to_regions", "transfer_detail", "trunk_over_volume",
]
