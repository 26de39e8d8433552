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
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from m2cofs.data.labels import LabelConvention, get_convention
from m2cofs.data.loading import Case
from m2cofs.data.preprocess import PreparedCase
from m2cofs.errors import M2CofsError
from m2cofs.inference.case import CasePrediction
from m2cofs.inference.fusion_output import needs_source
from m2cofs.inference.loading import LoadedModel, fusion_head_kind, load_model, prepare_for_inference
from m2cofs.inference.output_folder import (case_files, check_prediction_folder, make_staging, move_into_place,
                                            remove_stale_staging)

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
    """``"auto"`` and ``"cuda"``: CUDA when available, else the CPU; anything else as given."""
    if isinstance(device, str) and device in ("auto", "cuda", "cpu"):
        return "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    return device


class Predictor:
    """A model with the settings of ``m2cofs predict`` (see the module docstring).

    ``model``: a :class:`LoadedModel` (put on ``device`` in eval mode), or what ``--model``
    takes: a model file, a run folder (its ``unified.ckpt``) or a bundled model's name;
    ``None``: the default bundled model. ``labels``: the convention of the written segmentation
    (default: the model's). ``postprocess`` (``None``: the model's setting), ``detail_transfer``
    (``auto``/``on``/``off``), ``trunk`` (``window``/``volume``), ``overlap`` and
    ``sw_batch_size`` of the sliding window (default for each: the model's ``inference``
    setting); ``threshold`` on the region probabilities. ``trust``: check each case against the
    model's training data (:mod:`m2cofs.inference.trust`; a warning for a case that looks out of
    domain, the signals in ``predict.json``).
    """

    def __init__(self, model: LoadedModel | str | Path | None = None, *, device: str | torch.device = "auto",
                 labels: str | LabelConvention | None = None, postprocess: bool | None = None,
                 detail_transfer: str | None = None, trunk: str | None = None, overlap: float | None = None,
                 sw_batch_size: int | None = None, threshold: float = 0.5, progress: bool = True,
                 log: Log | None = print_log, trust: bool = True):
        self.log: Log = log or _quiet
        self.progress = progress
        self.device = resolve_device(device)
        self.bundled = None  # the BundledModel, where ``model`` named one
        if isinstance(model, LoadedModel):
            prepare_for_inference(model.net, self.device)
            self.model = model
        else:
            self.model = self._load(model)
        inf = self.model.config.inference
        self.convention = get_convention(labels) if isinstance(labels, str) else (labels or self.model.convention)
        self.postprocess = postprocess
        self.detail_transfer = detail_transfer or inf.detail_transfer
        self.trunk = trunk or inf.trunk
        self.overlap, self.sw_batch_size, self.threshold = overlap, sw_batch_size, threshold
        self.trust = trust
        for name, value, ok in (("detail_transfer", detail_transfer, ("auto", "on", "off")),
                                ("trunk", trunk, ("window", "volume"))):
            if value is not None and value not in ok:
                raise ValueError(f"{name} must be one of {', '.join(ok)}, not {value!r}")
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
                     f"; labels {model.convention.name})", "note")
        elif model.path != path:  # a run folder: its unified model
            self.log(f"m2cofs predict: note: --model {spec} is a folder; using {model.path}", "note")
        return model

    # ------------------------------------------------------------------ one case
    def predict_case(self, case: PreparedCase, source: Case | None = None) -> CasePrediction:
        """:func:`~m2cofs.inference.predict_case` with this predictor's model and settings:
        the fused volume and the label map on the case's original grid. ``source``, the case as
        loaded (``dataset.prepared_with_source``), lets the fused volume be made on the input
        grid (see :func:`~m2cofs.inference.needs_source`)."""
        from m2cofs import inference  # the package's predict_case: the one a caller may have replaced

        return inference.predict_case(self.model, case, self.convention, self.device, self.postprocess, source=source,
                                      detail_transfer=self.detail_transfer, trunk=self.trunk, overlap=self.overlap,
                                      sw_batch_size=self.sw_batch_size, threshold=self.threshold, trust=self.trust)

    def case_summary(self, case: PreparedCase) -> tuple[str, list[str]]:
        """What is said of a case before it runs: a line with its voxels, the model grid and the
        windows, and notes (a voxel size far from the ~1 mm the bundled and trained models saw)."""
        model = self.model
        vox = np.sqrt((np.array(case.meta.original_affine)[:3, :3] ** 2).sum(0))
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
        cases without the model's modalities, existing outputs (replaced only with
        ``overwrite``, and never where they hold an input file). Cases are written into a
        staging folder and moved into place only once all have succeeded; an error or an
        interrupt (``KeyboardInterrupt``; ``m2cofs predict`` turns SIGTERM into one) removes it,
        and ``out`` too where this call created it."""
        from m2cofs.data.dataset import MultiModalDataset
        from m2cofs.io import atomic_write_json, is_inside
        from m2cofs.inference.provenance import model_provenance

        model, conv = self.model, self.convention
        out = Path(out)
        check_prediction_folder(out, Path(input))
        ds = MultiModalDataset(input, format, modalities=model.modalities, resample_to=resample_to,
                               preprocess=model.preprocessing, ids=list(ids) if ids else None, load_labels=False)
        _check_modalities(model, ds.cases)
        existing = [cid for cid in ds.ids if (out / cid).exists()]
        if existing and not overwrite:
            raise M2CofsError(f"already holds outputs for {', '.join(existing[:3])}{'...' if len(existing) > 3 else ''}; "
                              "pass --overwrite to replace them", out)
        inputs = [model.path] + [f for c in ds.cases for f in case_files(c)]
        for cid in existing:
            held = [f for f in inputs if is_inside(f, out / cid)]
            if held:
                raise M2CofsError(f"--overwrite would replace {out / cid}, which holds the input file {held[0]}", out)
        # model, model_sha256, model_kind, preset, model_version, training_data, training_cases, git_commit
        record = {**model_provenance(model.path, model.meta), "model_name": self.bundled.name if self.bundled else None,
                  "modalities": model.modalities, "label_convention": conv.name, "tasks": model.tasks,
                  "postprocess": None, "trunk": self.trunk, "cases": {}}
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        if self.trunk == "volume" and "segmentation" in model.tasks:
            self.log("m2cofs predict: note: --trunk volume segments much worse than the default sliding window "
                     "(results/README.md); it is meant for the fused volume", "note")
        staging = make_staging(out)
        try:  # straight after making it: an interrupt or SIGTERM (the CLI makes it one) removes the staging folder
            self._predict_into(ds, staging, record, preview)
            for cid in ds.ids:
                move_into_place(staging, cid, out)
            atomic_write_json(out / "predict.json", record)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        self.log(f"wrote {len(ds)} case(s) to {out}", "info")
        return record

    def _predict_into(self, ds, staging: Path, record: dict[str, Any], preview: bool) -> None:
        """Every case of ``ds`` written into ``staging/<id>``; ``record`` filled in."""
        from tqdm.auto import tqdm

        model = self.model
        t0 = time.time()
        may_transfer = "fusion" in model.tasks and (self.detail_transfer != "off" or fusion_head_kind(model) == "weights")
        for i in tqdm(range(len(ds)), desc="predict", unit="case", disable=not self.progress):
            if may_transfer:  # input-grid fusion needs the loaded case too: read the files once
                case, source = ds.prepared_with_source(i)
                if not needs_source(model, self.detail_transfer, case):
                    source = None
            else:
                case, source = ds.prepared(i), None
            info, notes = self.case_summary(case)
            self.log(f"m2cofs predict: {info}", "info")  # stderr keeps errors, notes and the bar
            for note in notes:
                self.log(f"m2cofs predict: {note}", "note")
            pred = self.predict_case(case, source)
            del source
            self._write_case(staging / case.id, case, pred, preview)
            if pred.label is not None:
                record["postprocess"] = pred.info.get("postprocess")
            record["cases"][case.id] = {"seconds": round(pred.seconds, 2), **pred.info}
            self._say_trust(case.id, pred.info.get("trust"))
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
                                              "keep_largest_wt": inf.keep_largest_wt, "wt_keep_fraction": inf.wt_keep_fraction}
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

    def _write_case(self, folder: Path, case: PreparedCase, pred: CasePrediction, preview: bool) -> None:
        from m2cofs.data.preprocess import restore
        from m2cofs.io import save_nifti

        aff = np.array(case.meta.original_affine)
        header = case.meta.nifti_header()
        if pred.fused is not None:
            save_nifti(folder / f"{case.id}_fused.nii.gz", pred.fused, aff, header, dtype=np.float32)
        if pred.label is not None:
            save_nifti(folder / f"{case.id}_seg.nii.gz", pred.label, aff, header, dtype=np.uint8)
        if preview:
            from m2cofs.previews import save_case_preview

            sources = restore(case.image, case.meta, "image")
            save_case_preview(folder / f"{case.id}_preview.png", dict(zip(self.model.modalities, sources)), pred.fused,
                              pred.label, self.convention, title=f"{case.id} — {self.model.meta.get('kind', 'model')}",
                              affine=aff)


def _check_modalities(model: LoadedModel, cases) -> None:
    """Every case has every modality the model was trained on (checked on the file names found)."""
    for spec in cases:
        missing = [m for m in model.modalities if m not in spec.images]
        if missing:
            where = next(iter(spec.images.values())).path.parent if spec.images else None
            raise M2CofsError(f"the model needs modalities {', '.join(model.modalities)}; case {spec.id} has "
                              f"{', '.join(spec.images) or 'no image'} (no {', '.join(missing)} image)", where)
