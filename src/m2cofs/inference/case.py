"""One preprocessed case through the model, back on its own grid: :func:`predict_case`
(→ :class:`CasePrediction`), after :func:`match_case_to_model` has brought the case to the
model's modalities and checked its preprocessing."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2cofs.data.labels import LabelConvention, labels_to_regions, regions_to_labels
from m2cofs.data.loading import Case
from m2cofs.data.preprocess import PreparedCase, restore
from m2cofs.errors import M2CofsError
from m2cofs.inference.fusion_output import (compose_on_input_grid, detail_transfer_wanted, guide_fusion, rim_source,
                                           transfer_detail)
from m2cofs.inference.loading import LoadedModel
from m2cofs.inference.postprocess import postprocess_regions, prob_to_regions


@dataclass
class CasePrediction:
    id: str
    fused: np.ndarray | None  # original grid
    label: np.ndarray | None  # original grid, convention values
    seconds: float
    info: dict = field(default_factory=dict)


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


def read_source(case: PreparedCase) -> tuple[Case | None, str]:
    """The case as loaded, read back from the files its metadata names, for input-grid fusion
    when the caller did not pass it; ``(None, why)`` where they cannot give back its own grid."""
    import re

    from m2cofs.data.cases import CaseSpec, ImageRef
    from m2cofs.data.loading import load_case, same_grid

    files = case.meta.files or {}
    images = {}
    for m in case.meta.modalities:
        if m not in files:
            return None, f"its metadata names no {m} file"
        hit = re.fullmatch(r"(.*)\[channel (\d+)\]", files[m])
        images[m] = ImageRef(Path(hit[1]), int(hit[2])) if hit else ImageRef(Path(files[m]))
    spec = CaseSpec(case.id, images, None, Path(files["mask"]) if files.get("mask") else None)
    try:
        source = load_case(spec, list(case.meta.modalities), load_label=False)
    except M2CofsError as exc:
        return None, f"its files cannot be read back ({exc})"
    if not same_grid(source.shape, source.affine, case.meta.original_shape, np.array(case.meta.original_affine)):
        return None, "its files are not on its original grid (resampled)"
    return source, ""


def _guided(model: LoadedModel, fused: np.ndarray, label: np.ndarray | None, conv: LabelConvention,
            case: PreparedCase, source: Case | None, guide: str, rule: str, gain: float) -> tuple[np.ndarray, dict[str, Any]]:
    """``fused`` guided by the predicted ``guide`` region (:func:`guide_fusion`), and what was
    done; unchanged, with the reason, where the guide cannot apply."""
    inf = model.config.inference
    rim = rim_source(model.modalities)
    why = ("the model segments nothing" if label is None
           else f"the labels ({conv.name}) have no {guide} region" if guide not in conv.regions
           else "no source shows the enhancing rim (T1ce)" if rim is None
           else "the sources at full resolution were not available" if source is None else None)
    if why is not None:
        return fused, {"region": guide, "applied": False, "why": why}
    from m2cofs.data.loading import foreground_mask
    from m2cofs.data.preprocess import apply_intensity_range

    region = labels_to_regions(label, conv)[list(conv.regions).index(guide)] > 0
    brain = foreground_mask(source.images, source.mask)
    scaled = apply_intensity_range(source.images[rim], brain, case.meta.intensity_range[rim], model.preprocessing)
    spacing = case.meta.original_spacing
    fused = guide_fusion(fused, region, scaled, brain, spacing, gain, inf.fusion_guide_sigma_mm, rule)
    return fused, {"region": guide, "applied": True, "rule": rule, "source": model.modalities[rim],
                   "gain": gain, "sigma_mm": inf.fusion_guide_sigma_mm}


def predict_case(model: LoadedModel, case: PreparedCase, out_convention: LabelConvention | None = None,
                 device: str | torch.device = "cpu", postprocess: bool | None = None,
                 source: Case | None = None, detail_transfer: str | None = None,
                 trunk: str | None = None, overlap: float | None = None, sw_batch_size: int | None = None,
                 threshold: float = 0.5, trust: bool = True, fusion_guide: str | None = None,
                 fusion_guide_rule: str | None = None, fusion_guide_gain: float | None = None) -> CasePrediction:
    """Predict one preprocessed case and bring the results back to its original grid.

    ``source`` (the case as loaded, before preprocessing): with a ``weights`` fusion head the
    fused volume is composed from it on the input's own grid (:func:`compose_on_input_grid`;
    without it the files the case's metadata names are read back, :func:`read_source`, so the
    result is the CLI's; ``info["fusion_grid"]`` says which grid it is);
    with an ``image`` head it lets the fused volume take back the detail finer than the model
    grid (:func:`transfer_detail`), as ``detail_transfer`` (default: the model's
    ``inference.detail_transfer``) asks. Without it the fused volume is the model grid's,
    resampled. ``trunk``, ``overlap`` and ``sw_batch_size`` as for :func:`predict_array`;
    ``threshold`` on the region probabilities (:func:`prob_to_regions`). The case is first matched to the
    model's modalities and preprocessing (:func:`match_case_to_model`; notes in ``info["notes"]``).
    ``trust``: check whether the case looks like the model's training data (one extra, mirrored pass
    of the segmentation; :mod:`m2cofs.inference.trust`), in ``info["trust"]``. ``fusion_guide``
    (default: the model's ``inference.fusion_guide``): ``none``, or the region (``ET``, ``TC``,
    ``WT``) of this pass's own segmentation inside which the rim source guides the fused volume,
    by ``fusion_guide_rule`` (``add``, ``max`` or ``enhance``) with ``fusion_guide_gain`` (defaults:
    the model's) (:func:`guide_fusion`; what was done, or why not, in ``info["fusion_guide"]``)."""
    t0 = time.time()
    case, source, notes = match_case_to_model(model, case, source)
    conv = out_convention or model.convention
    if len(conv.regions) != len(model.meta["regions"]) or list(conv.regions) != list(model.meta["regions"]):
        raise M2CofsError(f"--labels {conv.name} has regions {list(conv.regions)} but the model predicts {model.meta['regions']}")
    from m2cofs import inference  # the package's predict_array: the one a caller may have replaced

    raw = inference.predict_array(model, case.image, device, trunk=trunk, overlap=overlap, sw_batch_size=sw_batch_size)
    fused = label = None
    info: dict[str, Any] = {"notes": notes} if notes else {}
    pair = raw.pop("seg_prob_pair", None)  # the plain and left-right mirrored passes of mirror TTA
    if trust and "seg_prob" in raw:
        from m2cofs.inference.trust import case_trust

        info["trust"] = case_trust(model, case, raw["seg_prob"] if pair is None else pair[0], device, threshold,
                                   mirrored=None if pair is None else pair[1], trunk=trunk, overlap=overlap,
                                   sw_batch_size=sw_batch_size)
    weights = raw.pop("fusion_weights", None)
    if weights is not None and source is None:  # as the CLI does: the sources at full resolution
        source, why = read_source(case)
        if source is None:
            info.setdefault("notes", []).append(f"the fused volume is the model grid's, resampled: {why}; pass "
                                                "source= (dataset.prepared_with_source) for the input grid's")
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
        regions = prob_to_regions(raw.pop("seg_prob"), case.meta, threshold)
        inf = model.config.inference
        do_pp = inf.postprocess if postprocess is None else postprocess
        if do_pp:
            spacing = case.meta.original_spacing
            regions = postprocess_regions(regions, conv, spacing, inf.min_component_mm3, inf.keep_largest_wt,
                                          inf.wt_keep_fraction, inf.wt_select, inf.min_core_mm3, inf.et_min_mm3)
        label = regions_to_labels(regions, conv)  # binary uint8 masks decode as their float copies would
        info["postprocess"] = bool(do_pp)
        info["region_voxels"] = dict(zip(conv.regions, labels_to_regions(label, conv).reshape(len(conv.regions), -1).sum(1).tolist()))
    guide = fusion_guide or model.config.inference.fusion_guide
    if fused is not None and guide != "none":
        fused, info["fusion_guide"] = _guided(model, fused, label, conv, case, source, guide,
                                              fusion_guide_rule or model.config.inference.fusion_guide_rule,
                                              model.config.inference.fusion_guide_gain if fusion_guide_gain is None
                                              else fusion_guide_gain)
    return CasePrediction(case.id, fused, label, time.time() - t0, info)
