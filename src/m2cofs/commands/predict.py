"""``m2cofs predict --model RUN/unified.ckpt --input DATA_OR_CASE --out OUT``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from m2cofs.commands._common import resample_arg
from m2cofs.data.labels import CONVENTION_CHOICES
from m2cofs.data.layouts import FORMATS
from m2cofs.errors import M2CofsError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="fuse and segment cases with a trained model",
        description="One pass of the unified model per case: writes OUT/<id>/<id>_fused.nii.gz and "
                    "OUT/<id>/<id>_seg.nii.gz on the input's grid with its affine, and a PNG preview.")
    p.add_argument("--model", default=None,
                   help="model file (RUN/unified.ckpt), a run folder, or the name of a bundled model "
                        "(default: the bundled brats-t1ce-flair; `m2cofs models` lists them)")
    p.add_argument("--input", required=True, metavar="DATA_OR_CASE", help="dataset, case folder or datalist JSON")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="auto", choices=FORMATS, help="input layout (default auto)")
    p.add_argument("--labels", default=None, choices=[c for c in CONVENTION_CHOICES if c != "auto"],
                   help="label convention of the written segmentation (default: the model's)")
    p.add_argument("--resample-to", default=None, metavar="MODALITY", help="resample each case onto this modality's grid")
    p.add_argument("--ids", default=None, help="only these case ids (comma-separated)")
    pp = p.add_mutually_exclusive_group()
    pp.add_argument("--postprocess", dest="postprocess", action="store_true", default=None,
                    help="remove small components / keep the largest whole tumour (default: the model's setting)")
    pp.add_argument("--no-postprocess", dest="postprocess", action="store_false")
    p.add_argument("--detail-transfer", choices=("auto", "on", "off"), default=None,
                   help="add to the fused volume the sources' detail finer than the model grid (max-abs rule); "
                        "default: the model's inference.detail_transfer (auto: when the model grid is coarser)")
    p.add_argument("--trunk", choices=("window", "volume"), default=None,
                   help="window: the whole network in every sliding window, as trained (default: the model's "
                        "inference.trunk); volume: encoders, F and the fusion head once per voxel and only the "
                        "segmentation head in windows: the fused volume 3-4x faster and without seams, but the "
                        "segmentation much worse (for fusion)")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in OUT")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.data.labels import get_convention
    from m2cofs.data.preprocess import PreprocessConfig, restore
    from m2cofs.inference import fusion_head_kind, load_model, needs_source, predict_case
    from m2cofs.io import atomic_write_json, is_inside, save_nifti
    from m2cofs.training.pipeline import check_output_folder

    out = Path(args.out)
    check_output_folder(out, Path(args.input))
    if out.exists() and not out.is_dir():
        raise M2CofsError("exists and is not a folder", out)
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    from m2cofs.bundled import resolve_model

    model_path, bundled = resolve_model(args.model)
    model = load_model(model_path, device)
    if bundled is not None:
        grid = model.meta.get("preprocessing", {}).get("spacing")
        print(f"m2cofs predict: model: {bundled.name} (bundled{'; the default' if args.model is None else ''}; "
              f"{', '.join(model.modalities)}; grid {'x'.join(f'{v:g}' for v in grid) + ' mm' if grid else 'the input'}"
              f"; labels {model.convention.name})", file=sys.stderr)
    elif model.path != model_path:  # a run folder: its unified model
        print(f"m2cofs predict: note: --model {args.model} is a folder; using {model.path}", file=sys.stderr)
    pre = PreprocessConfig.from_dict(model.meta["preprocessing"])
    ids = [i.strip() for i in args.ids.split(",")] if args.ids else None
    ds = MultiModalDataset(args.input, args.format, modalities=model.modalities, resample_to=resample_arg(args.resample_to),
                           preprocess=pre, ids=ids, load_labels=False)
    _check_modalities(model, ds.cases)  # before the progress bar starts
    conv = get_convention(args.labels) if args.labels else model.convention
    existing = [cid for cid in ds.ids if (out / cid).exists()]
    if existing and not args.overwrite:
        raise M2CofsError(f"already holds outputs for {', '.join(existing[:3])}{'...' if len(existing) > 3 else ''}; "
                          "pass --overwrite to replace them", out)
    inputs = [model.path] + [f for c in ds.cases for f in _case_files(c)]
    for cid in existing:
        held = [f for f in inputs if is_inside(f, out / cid)]
        if held:
            raise M2CofsError(f"--overwrite would replace {out / cid}, which holds the input file {held[0]}", out)
    trunk = args.trunk or model.config.inference.trunk
    from m2cofs.reporting.provenance import model_provenance

    # model, model_sha256, model_kind, preset, model_version, training_data, training_cases, git_commit
    record = {**model_provenance(model.path, model.meta), "model_name": bundled.name if bundled else None, "modalities": model.modalities, "label_convention": conv.name,
              "tasks": model.tasks, "postprocess": None,
              "trunk": trunk, "cases": {}}
    # Every case is written into a hidden staging folder inside OUT and moved into place only once
    # all cases have succeeded: a failing or interrupted run leaves no partial output behind.
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    if trunk == "volume" and "segmentation" in model.tasks:
        print("m2cofs predict: note: --trunk volume segments much worse than the default sliding window "
              "(results/README.md); it is meant for the fused volume", file=sys.stderr)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    try:  # straight after mkdtemp: an interrupt or SIGTERM (the CLI makes it one) removes the staging folder
        t0 = time.time()
        setting = args.detail_transfer or model.config.inference.detail_transfer
        may_transfer = "fusion" in model.tasks and (setting != "off" or fusion_head_kind(model) == "weights")
        for i in tqdm(range(len(ds)), desc="predict", unit="case", disable=args.no_progress):
            if may_transfer:  # input-grid fusion needs the loaded case too: read the files once
                case, source = ds.prepared_with_source(i)
                if not needs_source(model, setting, case):
                    source = None
            else:
                case, source = ds.prepared(i), None
            info, notes = _grid_notes(model, case)
            tqdm.write(f"m2cofs predict: {info}", file=sys.stdout)  # stderr keeps errors, notes and the bar
            for note in notes:
                tqdm.write(f"m2cofs predict: {note}", file=sys.stderr)
            pred = predict_case(model, case, conv, device, args.postprocess, source=source, detail_transfer=setting,
                                trunk=trunk)
            del source
            folder = staging / case.id
            aff = np.array(case.meta.original_affine)
            header = case.meta.nifti_header()
            if pred.fused is not None:
                save_nifti(folder / f"{case.id}_fused.nii.gz", pred.fused, aff, header, dtype=np.float32)
            if pred.label is not None:
                save_nifti(folder / f"{case.id}_seg.nii.gz", pred.label, aff, header, dtype=np.uint8)
                record["postprocess"] = pred.info.get("postprocess")
            if not args.no_preview:
                from m2cofs.reporting.previews import save_case_preview

                sources = restore(case.image, case.meta, "image")
                save_case_preview(folder / f"{case.id}_preview.png", dict(zip(model.modalities, sources)), pred.fused,
                                  pred.label, conv, title=f"{case.id} — {model.meta.get('kind', 'model')}", affine=aff)
            record["cases"][case.id] = {"seconds": round(pred.seconds, 2), **pred.info}
        record["seconds"] = round(time.time() - t0, 2)
        if model.config.inference and record["postprocess"] is not None:
            inf = model.config.inference
            record["postprocess_settings"] = {"min_component_mm3": inf.min_component_mm3,
                                              "keep_largest_wt": inf.keep_largest_wt, "wt_keep_fraction": inf.wt_keep_fraction}
        for cid in ds.ids:
            _move_into_place(staging, cid, out)
        atomic_write_json(out / "predict.json", record)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {len(ds)} case(s) to {out}")
    return 0


STAGING_PREFIX = ".predict-partial-"


def _grid_notes(model, case) -> tuple[str, list[str]]:
    """What predict says of each case before it runs: a line with the model grid and the windows,
    and notes (a voxel size far from the ~1 mm the bundled and trained models saw)."""
    import math

    import numpy as np

    vox = np.sqrt((np.array(case.meta.original_affine)[:3, :3] ** 2).sum(0))
    grid = model.meta.get("preprocessing", {}).get("spacing")
    patch = list(model.config.data.patch_size)
    step = [max(1, int(p * (1 - model.config.inference.overlap))) for p in patch]
    windows = math.prod(max(1, math.ceil((s - p) / st) + 1) for s, p, st in zip(case.meta.shape, patch, step))
    grid_text = "x".join(f"{v:g}" for v in grid) + " mm" if grid else "the scans' own grid"
    info = (f"case {case.id}: voxels {'x'.join(f'{v:.2g}' for v in vox)} mm -> model grid {grid_text}, "
            f"{'x'.join(map(str, case.meta.shape))} voxels, {windows} window(s) of {'x'.join(map(str, patch))}")
    notes = []
    if vox.max() > 1.5 or vox.min() < 0.67:
        notes.append(f"note: case {case.id} has voxels of {'x'.join(f'{v:.2g}' for v in vox)} mm, far from the ~1 mm "
                     f"of the training data; it is resampled to {grid_text}, but check the result")
    return info, notes


def _check_modalities(model, cases) -> None:
    """Every case has every modality the model was trained on (checked on the file names found)."""
    for spec in cases:
        missing = [m for m in model.modalities if m not in spec.images]
        if missing:
            where = next(iter(spec.images.values())).path.parent if spec.images else None
            raise M2CofsError(f"the model needs modalities {', '.join(model.modalities)}; case {spec.id} has "
                              f"{', '.join(spec.images) or 'no image'} (no {', '.join(missing)} image)", where)


def _case_files(spec) -> list[Path]:
    return [r.path for r in spec.images.values()] + [p for p in (spec.label, spec.mask) if p is not None]


def _move_into_place(staging: Path, cid: str, out: Path) -> None:
    """Move ``staging/cid`` to ``out/cid`` (an old ``out/cid``, allowed by --overwrite, goes)."""
    new, target = staging / cid, out / cid
    if not new.exists():
        return
    if target.exists() or target.is_symlink():
        old = staging / f".old-{cid}"
        os.replace(target, old)
    os.replace(new, target)


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of killed predict runs (their process is gone) are removed."""
    for d in out.glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(d.name[len(STAGING_PREFIX):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue
