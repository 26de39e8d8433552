"""``Predictor``: a model and its prediction settings, set once; then cases, or whole folders.

After nnU-Net v2's ``nnUNetPredictor``: construct it from a model (a :class:`LoadedModel`, a
model file, a run folder or a bundled model's name, as ``m2cofs predict --model`` takes them)
and the settings ``m2cofs predict`` takes; :meth:`Predictor.predict_case` predicts one prepared
case, :meth:`Predictor.predict_folder` does everything ``m2cofs predict`` does for a dataset
(``m2cofs predict`` is a thin wrapper around it)::

    from m2cofs.inference import Predictor

    p = Predictor("brats-t1ce-flair", device="cpu", log=None, progress=False)  # silent
    p.predict_folder("/data/test", "preds")          # OUT/<id>/<id>_{fused,seg}.nii.gz, predict.json

What it says goes through ``log(message, level)``: ``"info"`` lines (one per case before it
runs, and the closing ``wrote N case(s)``) and ``"note"`` lines (the model used, notes).
The default, :func:`print_log`, prints them as ``m2cofs predict`` does (info to stdout, notes to
stderr, beside the progress bar); ``log=None`` silences them, ``progress=False`` the bar.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from m2cofs.config import FUSION_GUIDE_MAX_GAIN, FUSION_GUIDE_RULES, FUSION_GUIDES
from m2cofs.data.labels import NAMING_CONVENTIONS, LabelConvention, get_convention, output_convention
from m2cofs.data.loading import Case
from m2cofs.data.preprocess import PreparedCase
from m2cofs.errors import M2CofsError
from m2cofs.inference.case import CasePrediction
from m2cofs.inference.fusion_output import needs_source
from m2cofs.inference.loading import LoadedModel, fusion_head_kind, load_model, prepare_for_inference
from m2cofs.inference.output_folder import (Staging, case_files, check_case_ids, check_prediction_folder,
                                            existing_outputs, locked, merge_record, move_into_place)
from m2cofs.inference.workload import DEFAULT_MAX_VOXELS, check_inputs

Log = Callable[[str, str], None]
"""``log(message, level)``, ``level`` ``"info"`` or ``"note"``."""


def print_log(message: str, level: str) -> None:
    """The default ``log``: ``"info"`` to stdout, anything else to stderr (which keeps errors,
    notes and the progress bar), written past a running progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stdout if level == "info" else sys.stderr)


def _quiet(message: str, level: str) -> None:
    pass


def resolve_device(device: str | torch.device) -> str | torch.device:
    """``"auto"``: CUDA when available, else the CPU. ``"cuda"`` (or ``"cuda:N"``) where this
    torch has no usable CUDA is refused (:class:`M2CofsError`): never a silent run on the CPU.
    Anything else as given."""
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        build = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                 else f"this torch ({torch.__version__}, CUDA {torch.version.cuda}) finds no usable GPU")
        raise M2CofsError(f"--device {device}: {build}; pass --device cpu (or auto), or install a CUDA build of "
                          "torch (https://pytorch.org/get-started/locally/)")
    return device


def device_record(device: str | torch.device) -> dict[str, Any]:
    """The device the predictions were made on, for ``predict.json``: ``device`` (``cpu``,
    ``cuda:0``...) and the card's name on CUDA."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return {"device": dev.type}
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return {"device": f"cuda:{index}", "device_name": torch.cuda.get_device_name(index)}


class Predictor:
    """A model with the settings of ``m2cofs predict`` (see the module docstring).

    ``model``: a :class:`LoadedModel` (put on ``device`` in eval mode), or what ``--model``
    takes: a model file, a run folder (its ``unified.ckpt``) or a bundled model's name;
    ``None``: the default bundled model. ``labels``: the convention of the written segmentation;
    default (``None``): each case's own naming's in :meth:`predict_folder` (BraTS 2023 naming:
    ``brats2023``, ET = 3; BraTS 2018-2021 naming: ``brats2017``, ET = 4; see
    :func:`~m2cofs.data.labels.output_convention`), else (and in :meth:`predict_case`) the
    model's. ``postprocess`` (``None``: the model's setting), ``detail_transfer``
    (``auto``/``on``/``off``), ``trunk`` (``window``/``volume``), ``overlap`` and
    ``sw_batch_size`` of the sliding window (default for each: the model's ``inference``
    setting); ``threshold`` on the region probabilities. ``trust``: check each case against the
    model's training data (:mod:`m2cofs.inference.trust`; a warning for a case that looks out of
    domain, the signals in ``predict.json``). ``fusion_guide``: ``none`` or the predicted region
    (``ET``, ``TC``, ``WT``) inside which T1ce guides the fused volume, by ``fusion_guide_rule``
    (``add``, ``max``, ``enhance``) with ``fusion_guide_gain`` (in [0, 4]) (defaults: the model's
    ``inference`` settings;
    :func:`~m2cofs.inference.fusion_output.guide_fusion`).
    """

    def __init__(self, model: LoadedModel | str | Path | None = None, *, device: str | torch.device = "auto",
                 labels: str | LabelConvention | None = None, postprocess: bool | None = None,
                 detail_transfer: str | None = None, trunk: str | None = None, overlap: float | None = None,
                 sw_batch_size: int | None = None, threshold: float = 0.5, progress: bool = True,
                 log: Log | None = print_log, max_voxels: int = DEFAULT_MAX_VOXELS, trust: bool = True,
                 fusion_guide: str | None = None, fusion_guide_rule: str | None = None,
                 fusion_guide_gain: float | None = None):
        self.log: Log = log or _quiet
        self.progress = progress
        self.device = resolve_device(device)
        self.bundled = None  # the BundledModel, where ``model`` named one
        # the convention asked for; None: each case's naming's (see output_convention)
        self.labels: LabelConvention | None = get_convention(labels) if isinstance(labels, str) else labels
        if isinstance(model, LoadedModel):
            prepare_for_inference(model.net, self.device)
            self.model = model
        else:
            self.model = self._load(model)
        inf = self.model.config.inference
        self.convention = self.labels or self.model.convention  # what predict_case writes
        self.postprocess = postprocess
        self.detail_transfer = detail_transfer or inf.detail_transfer
        self.trunk = trunk or inf.trunk
        self.fusion_guide = fusion_guide or inf.fusion_guide
        self.fusion_guide_rule = fusion_guide_rule or inf.fusion_guide_rule
        self.fusion_guide_gain = inf.fusion_guide_gain if fusion_guide_gain is None else float(fusion_guide_gain)
        self.overlap, self.sw_batch_size, self.threshold = overlap, sw_batch_size, threshold
        self.max_voxels = max_voxels
        self.trust = trust
        for name, value, ok in (("detail_transfer", detail_transfer, ("auto", "on", "off")),
                                ("trunk", trunk, ("window", "volume")), ("fusion_guide", fusion_guide, FUSION_GUIDES),
                                ("fusion_guide_rule", fusion_guide_rule, FUSION_GUIDE_RULES)):
            if value is not None and value not in ok:
                raise ValueError(f"{name} must be one of {', '.join(ok)}, not {value!r}")
        if not 0 <= self.fusion_guide_gain <= FUSION_GUIDE_MAX_GAIN:
            raise ValueError(f"fusion_guide_gain must be in [0, {FUSION_GUIDE_MAX_GAIN:g}], not {fusion_guide_gain!r}")
        if overlap is not None and not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), not {overlap!r}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), not {threshold!r}")

    def _load(self, spec: str | Path | None) -> LoadedModel:
        from m2cofs.bundled import resolve_model

        path, self.bundled = resolve_model(None if spec is None else str(spec))
        model = load_model(path, self.device)
        if self.bundled is not None:
            grid = model.meta.get("preprocessing", {}).get("spacing")
            self.log(f"m2cofs predict: model: {self.bundled.name} (bundled{'; the default' if spec is None else ''}; "
                     f"{', '.join(model.modalities)}; grid {'x'.join(f'{v:g}' for v in grid) + ' mm' if grid else 'the input'}"
                     f"; labels {self._labels_text(model)})", "note")
        elif model.path != path:  # a run folder: its unified model
            self.log(f"m2cofs predict: note: --model {spec} is a folder; using {model.path}", "note")
        return model

    def _labels_text(self, model: LoadedModel) -> str:
        """The label convention written, as the header says it."""
        if self.labels is not None:
            return f"{self.labels.name} (--labels)"
        named = [f"{output_convention(n, model.convention)[0].name} for {n} naming" for n in NAMING_CONVENTIONS
                 if output_convention(n, model.convention)[0] is not model.convention]
        return f"{', '.join(named)}, else {model.convention.name}" if named else model.convention.name

    def case_convention(self, spec) -> tuple[LabelConvention, str]:
        """The convention a found case's segmentation is written in, and why: ``labels`` where
        given, else its file naming's (:func:`~m2cofs.data.labels.output_convention`)."""
        if self.labels is not None:
            return self.labels, "given with --labels"
        return output_convention(getattr(spec, "format", None), self.model.convention)

    # ------------------------------------------------------------------ one case
    def predict_case(self, case: PreparedCase, source: Case | None = None,
                     convention: LabelConvention | None = None) -> CasePrediction:
        """:func:`~m2cofs.inference.predict_case` with this predictor's model and settings:
        the fused volume and the label map on the case's original grid. ``source``, the case as
        loaded (``dataset.prepared_with_source``), lets the fused volume be made on the input
        grid (see :func:`~m2cofs.inference.needs_source`). ``convention``: the labels written
        (default: ``labels``, else the model's)."""
        from m2cofs import inference  # the package's predict_case: the one a caller may have replaced

        return inference.predict_case(self.model, case, convention or self.convention, self.device, self.postprocess,
                                      source=source, detail_transfer=self.detail_transfer, trunk=self.trunk, overlap=self.overlap,
                                      sw_batch_size=self.sw_batch_size, threshold=self.threshold, trust=self.trust,
                                      fusion_guide=self.fusion_guide, fusion_guide_rule=self.fusion_guide_rule,
                                      fusion_guide_gain=self.fusion_guide_gain)

    def case_summary(self, case: PreparedCase) -> tuple[str, list[str]]:
        """What is said of a case before it runs: a line with its voxels, the model grid and the
        windows, and notes (a voxel size far from the ~1 mm the bundled and trained models saw)."""
        model = self.model
        vox = case.meta.original_spacing
        grid = model.meta.get("preprocessing", {}).get("spacing")
        patch = list(model.config.data.patch_size)
        overlap = model.config.inference.overlap if self.overlap is None else self.overlap
        step = [max(1, int(p * (1 - overlap))) for p in patch]
        windows = math.prod(max(1, math.ceil((s - p) / st) + 1) for s, p, st in zip(case.meta.shape, patch, step))
        grid_text = "x".join(f"{v:g}" for v in grid) + " mm" if grid else "the scans' own grid"
        info = (f"case {case.id}: voxels {'x'.join(f'{v:.2g}' for v in vox)} mm -> model grid {grid_text}, "
                f"{'x'.join(map(str, case.meta.shape))} voxels, {windows} window(s) of {'x'.join(map(str, patch))}")
        notes = []
        if vox.max() > 1.5 or vox.min() < 0.67:
            notes.append(f"note: case {case.id} has voxels of {'x'.join(f'{v:.2g}' for v in vox)} mm, far from the "
                         f"~1 mm of the training data; it is resampled to {grid_text}, but check the result")
        return info, notes

    # ------------------------------------------------------------------ a folder
    def predict_folder(self, input: str | Path, out: str | Path, *, format: str = "auto",
                       ids: Sequence[str] | None = None, resample_to: str | None = None, overwrite: bool = False,
                       preview: bool = True) -> dict[str, Any]:
        """Predict every case of ``input`` (a dataset, a case folder or a datalist JSON, in
        ``format``; only ``ids`` where given, each resampled onto its ``resample_to`` modality's
        grid where given) into ``out``: ``OUT/<id>/<id>_fused.nii.gz`` (float32) and
        ``<id>_seg.nii.gz`` on the input's grid with its affine and header, ``<id>_preview.png``
        (``preview``), and ``OUT/predict.json``, which is also returned.

        Everything is checked before anything is written: an output folder inside the input,
        cases without the model's modalities, every input file (read once before the first
        prediction), the work each case asks for (at most ``max_voxels`` on the model grid),
        existing outputs (replaced only with ``overwrite``, and never where they hold an input
        file). Cases are written into this run's staging folder and moved into place only once
        all have succeeded; an error or an interrupt (``KeyboardInterrupt``; ``m2cofs predict``
        turns SIGTERM into one) removes the staging folder and nothing else. Other runs may
        write into ``out`` at the same time (:mod:`~m2cofs.inference.output_folder`); in a case
        folder only m2cofs's own files are replaced."""
        from m2cofs.data.dataset import MultiModalDataset
        from m2cofs.io import atomic_write_json, is_inside
        from m2cofs.inference.provenance import model_provenance

        model = self.model
        out = Path(out)
        check_prediction_folder(out, Path(input))
        ds = MultiModalDataset(input, format, modalities=model.modalities, resample_to=resample_to,
                               preprocess=model.preprocessing, ids=list(ids) if ids else None, load_labels=False)
        _check_modalities(model, ds.cases)
        check_case_ids(ds.ids, lambda cid: _case_folder(ds, cid))
        existing = existing_outputs(out, ds.ids)
        if existing and not overwrite:
            raise M2CofsError(f"already holds outputs for {', '.join(existing[:3])}{'...' if len(existing) > 3 else ''}; "
                              "pass --overwrite to replace them", out)
        inputs = [model.path] + [f for c in ds.cases for f in case_files(c)]
        for cid in existing:
            held = [f for f in inputs if is_inside(f, out / cid)]
            if held:
                raise M2CofsError(f"--overwrite would replace {out / cid}, which holds the input file {held[0]}", out)
        estimate = check_inputs(self, ds, resample_to)  # every file read, the work bounded: before anything is written
        self.log(f"m2cofs predict: {len(ds)} case(s), {estimate}", "info")
        # model, model_sha256, model_kind, preset, model_version, training_data, training_cases, git_commit
        record = {**model_provenance(model.path, model.meta), "model_name": self.bundled.name if self.bundled else None,
                  "modalities": model.modalities, "label_convention": None, "tasks": model.tasks,
                  **device_record(self.device), "postprocess": None, "trunk": self.trunk, "cases": {}}
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            staging = Staging(out)
        except OSError as exc:
            if created:
                _remove_if_empty(out)
            raise M2CofsError(f"cannot write to the output folder ({exc.strerror or exc})", out) from None
        if self.trunk == "volume" and "segmentation" in model.tasks:
            self.log("m2cofs predict: note: --trunk volume segments much worse than the default sliding window "
                     "(results/README.md); it is meant for the fused volume", "note")
        try:  # straight after making it: an interrupt or SIGTERM (the CLI makes it one) removes the staging folder
            self._predict_into(ds, staging.path, record, preview)
            with locked(out):  # other runs may have written into OUT meanwhile: checked again, under the lock
                raced = existing_outputs(out, [c for c in ds.ids if c not in existing])
                if raced and not overwrite:
                    raise M2CofsError(f"another run wrote outputs for {', '.join(raced[:3])}{'...' if len(raced) > 3 else ''} "
                                      "while this one ran; nothing of this run was kept: pass --overwrite to replace "
                                      "them", out)
                for cid in ds.ids:
                    move_into_place(staging.path, cid, out)
                record = merge_record(out, record)
                atomic_write_json(out / "predict.json", record)
        except BaseException:
            staging.remove()
            if created:
                _remove_if_empty(out)
            raise
        staging.remove()
        self.log(f"wrote {len(ds)} case(s) to {out}", "info")
        return record

    def _predict_into(self, ds, staging: Path, record: dict[str, Any], preview: bool) -> None:
        """Every case of ``ds`` written into ``staging/<id>``; ``record`` filled in."""
        from tqdm.auto import tqdm

        model = self.model
        t0 = time.time()
        may_transfer = "fusion" in model.tasks and (self.detail_transfer != "off" or fusion_head_kind(model) == "weights")
        written: list[str] = []
        for i in tqdm(range(len(ds)), desc="predict", unit="case", disable=not self.progress):
            if may_transfer or preview:  # input-grid fusion and the preview need the loaded case too
                case, loaded = ds.prepared_with_source(i)
                source = loaded if may_transfer and needs_source(model, self.detail_transfer, case) else None
            else:
                case, loaded, source = ds.prepared(i), None, None
            conv, why = self.case_convention(ds.cases[i])
            info, notes = self.case_summary(case)
            if "segmentation" in model.tasks:
                info += f"; labels {conv.name} ({why})"
            self.log(f"m2cofs predict: {info}", "info")  # stderr keeps errors, notes and the bar
            for note in notes:
                self.log(f"m2cofs predict: {note}", "note")
            pred = self.predict_case(case, source, conv)
            del source
            self._write_case(staging / case.id, case, pred, conv, loaded if preview else None)
            del loaded
            if pred.label is not None:
                record["postprocess"] = pred.info.get("postprocess")
                written.append(conv.name)
            record["cases"][case.id] = {"seconds": round(pred.seconds, 2), **pred.info}
            self._say_trust(case.id, pred.info.get("trust"))
            if pred.label is not None:
                record["cases"][case.id]["label_convention"] = conv.name
        names = list(dict.fromkeys(written))
        record["label_convention"] = names[0] if len(names) == 1 else ("per case" if names else None)
        record["seconds"] = round(time.time() - t0, 2)
        checked = {cid: c["trust"] for cid, c in record["cases"].items() if "trust" in c}
        if checked:
            flagged = [cid for cid, t in checked.items() if t.get("flags")]
            record["trust"] = {"checked": len(checked), "flagged": flagged,
                               "reference": next((t["reference"] for t in checked.values() if t.get("reference")), None)}
            if record["trust"]["reference"] is None:  # said in predict.json, not printed (a user's own model)
                record["trust"]["note"] = ("the model has no trust reference ranges (trust.json beside it): the cases "
                                           "were not checked against its training data; their signals are recorded")
            if flagged:
                self.log(f"m2cofs predict: warning: {len(flagged)} of {len(checked)} case(s) look out of domain "
                         f"(their segmentations are not to be trusted): {', '.join(flagged)}", "note")
        if model.config.inference and record["postprocess"] is not None:
            inf = model.config.inference
            record["postprocess_settings"] = {"min_component_mm3": inf.min_component_mm3,
                                              "keep_largest_wt": inf.keep_largest_wt, "wt_keep_fraction": inf.wt_keep_fraction,
                                              "wt_select": inf.wt_select, "min_core_mm3": inf.min_core_mm3,
                                              "et_min_mm3": inf.et_min_mm3, "tta_axes": list(inf.tta_axes)}
        for key in ("overlap", "sw_batch_size"):  # recorded only where set here, not taken from the model
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        if self.threshold != 0.5:
            record["threshold"] = self.threshold

    def _say_trust(self, case_id: str, trust: dict | None) -> None:
        """The trust check's verdict on a case: a warning where it looks out of domain."""
        from m2cofs.inference.trust import warning_line

        if not trust:
            return
        line = warning_line(case_id, trust)
        if line:
            self.log(f"m2cofs predict: {line}", "note")

    def _write_case(self, folder: Path, case: PreparedCase, pred: CasePrediction, conv: LabelConvention,
                    loaded: Case | None) -> None:
        """The case's fused volume and label map; its preview beside them where ``loaded`` (the
        case as read, at full resolution) is given."""
        from m2cofs.io import save_nifti

        aff = np.array(case.meta.original_affine)
        header = case.meta.nifti_header()
        if pred.fused is not None:
            save_nifti(folder / f"{case.id}_fused.nii.gz", pred.fused, aff, header, dtype=np.float32)
        if pred.label is not None:
            save_nifti(folder / f"{case.id}_seg.nii.gz", pred.label, aff, header, dtype=np.uint8)
        if loaded is not None:  # the sources as read, beside the fused volume on the same grid
            from m2cofs.previews import save_case_preview

            sources = {m: loaded.images[loaded.modalities.index(m)] for m in self.model.modalities}
            save_case_preview(folder / f"{case.id}_preview.png", sources, pred.fused, pred.label, conv,
                              title=f"{case.id} — {self.model.meta.get('kind', 'model')}", affine=aff)


def _case_folder(ds, cid: str):
    spec = next(c for c in ds.cases if c.id == cid)
    return next(iter(spec.images.values())).path.parent if spec.images else cid


def _remove_if_empty(folder: Path) -> None:
    """Remove a folder this run created, only where nothing is in it (another run may use it)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _check_modalities(model: LoadedModel, cases) -> None:
    """Every case has every modality the model was trained on (checked on the file names found)."""
    from m2cofs.data.conventions import check_cases_have

    check_cases_have(model.modalities, cases)
