"""``m2cofs predict --model RUN/unified.ckpt --input DATA_OR_CASE --out OUT``: the arguments of
:class:`m2cofs.inference.Predictor` and its ``predict_folder``, which does the work."""

from __future__ import annotations

import argparse
from pathlib import Path

from m2cofs.commands._common import resample_arg
from m2cofs.config import FUSION_GUIDE_MAX_GAIN, FUSION_GUIDE_RULES, FUSION_GUIDES
from m2cofs.data.labels import CONVENTION_CHOICES
from m2cofs.data.layouts import FORMATS


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
    p.add_argument("--fusion-guide", choices=FUSION_GUIDES, default=None,
                   help="let T1ce guide the fused volume inside this region of the model's own segmentation, "
                        "smoothed (none: no guide; default: the model's inference.fusion_guide)")
    p.add_argument("--fusion-guide-rule", choices=FUSION_GUIDE_RULES, default=None,
                   help="add: T1ce on top of the fused volume (keeps both lesion contrasts; the paper's edge "
                        "metrics fall); max: towards T1ce only where it is brighter (little change); enhance: only "
                        "T1ce's excess over the region's median, the rim (the same contrasts for less range); "
                        "default: the model's inference.fusion_guide_rule")
    p.add_argument("--fusion-guide-gain", type=float, default=None, metavar="G",
                   help=f"how much of T1ce the guide adds, in [0, {FUSION_GUIDE_MAX_GAIN:g}] (default: the model's "
                        "inference.fusion_guide_gain)")
    p.add_argument("--no-trust-check", action="store_true",
                   help="skip the check of each case against the model's training data (saves the one extra, "
                        "mirrored pass of the segmentation; predict.json then has no trust signals)")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in OUT")
    p.add_argument("--max-voxels", type=int, default=None, metavar="N",
                   help="refuse a case larger than N voxels on the model grid (default 64000000: an untrusted "
                        "header's voxel size must not ask for hours of work)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Arguments → :class:`~m2cofs.inference.Predictor` → :meth:`~m2cofs.inference.Predictor.predict_folder`
    (torch is imported here, not at start-up, and only once :func:`check_before_loading` passed)."""
    check_before_loading(args)
    from m2cofs.inference import Predictor

    predictor = Predictor(args.model, device=args.device, labels=args.labels, postprocess=args.postprocess,
                          detail_transfer=args.detail_transfer, trunk=args.trunk, progress=not args.no_progress,
                          trust=not args.no_trust_check, fusion_guide=args.fusion_guide,
                          fusion_guide_rule=args.fusion_guide_rule, fusion_guide_gain=args.fusion_guide_gain,
                          **({"max_voxels": args.max_voxels} if args.max_voxels else {}))
    predictor.predict_folder(args.input, args.out, format=args.format,
                             ids=[i.strip() for i in args.ids.split(",")] if args.ids else None,
                             resample_to=resample_arg(args.resample_to), overwrite=args.overwrite,
                             preview=not args.no_preview)
    return 0


def check_before_loading(args: argparse.Namespace) -> None:
    """What can be refused without torch, in well under a second (as ``data check``): an output
    folder inside the input, a guide gain out of range, a model file that is not one (or a wrong
    name), an input path without cases, cases without the model's modalities. ``Predictor`` checks them all again."""
    from m2cofs.bundled import resolve_model
    from m2cofs.checkpoint import check_model_metadata, read_sidecar, resolve_model_file
    from m2cofs.data.conventions import check_cases_have
    from m2cofs.data.layouts import discover
    from m2cofs.errors import M2CofsError
    from m2cofs.io import is_inside

    out, data = Path(args.out), Path(args.input)
    gain = getattr(args, "fusion_guide_gain", None)
    if gain is not None and not 0 <= gain <= FUSION_GUIDE_MAX_GAIN:
        raise M2CofsError(f"--fusion-guide-gain must be in [0, {FUSION_GUIDE_MAX_GAIN:g}], not {gain:g}")
    if not data.exists():
        raise M2CofsError("no such file or folder", data)
    root = data if data.is_dir() else data.parent  # as training.run_folder.check_output_folder (torch-free here)
    if is_inside(out, root):
        raise M2CofsError(f"the output folder must not be the input folder or inside it ({root})", out)
    if out.exists() and not out.is_dir():
        raise M2CofsError("exists and is not a folder", out)
    path, _ = resolve_model(args.model)
    path = resolve_model_file(path)
    meta = read_sidecar(path)
    check_model_metadata(path, meta)
    spec = discover(data, args.format)
    ids = {i.strip() for i in args.ids.split(",")} if args.ids else None
    cases = [c for c in spec.cases if ids is None or c.id in ids]
    if isinstance(meta.get("modalities"), list):
        check_cases_have([str(m) for m in meta["modalities"]], cases)
