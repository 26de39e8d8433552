"""``m2cofs demo --out DIR``: the main job on a real case, with the bundled model.

Default: the bundled model (:mod:`m2cofs.bundled`) predicts the real case it never saw in training
(found under ``--data``, by default ``../shared/data``) → evaluate → ``DIR/report/report.html``,
whose notes say the case was held out. Where that case is not present, a synthetic phantom takes
its place (and the report says so). Well under a minute of prediction on two CPU cores.

``--train``: the whole pipeline on phantoms instead: synth → data check → train (lite, all stages,
a short schedule) on all but the last cases → predict the held-out ones → evaluate. A few CPU
minutes, and not a good model (it says so).

Each step is the library or the sub-command itself (:class:`m2cofs.inference.Predictor` for
predict, :func:`~m2cofs.commands._common.run_command` for the others), not ``m2cofs.cli.main``:
an error or an interrupt in a step stops the demo, and ``m2cofs`` reports it once.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from m2cofs.commands._common import run_command
from m2cofs.errors import M2CofsError

# A schedule that shows every stage working in a few CPU minutes (not a good model: raise it).
DEMO_SETTINGS = [
    "data.spacing=null",  # phantoms are small already
    "data.samples_per_case=4",
    "train.epochs.stage0=1",
    "train.epochs.stage1=6",
    "train.epochs.stage2=2",
    "train.epochs.stage3=3",
    "train.checkpoint_every=25",
]
PARTS = ("data", "run", "pred", "report")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the bundled model on a real held-out case → report (--train: the whole "
                                    "pipeline on phantoms)",
                       description="Predicts with the bundled model on the real case it was not trained on and ends "
                                   "with an HTML report; with --train, runs the whole M²-CoFS pipeline (train, "
                                   "predict, evaluate) on synthetic phantoms instead.")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--data", default="../shared/data",
                   help="where to look for the bundled model's held-out case (default ../shared/data; a phantom "
                        "is used when it is not there)")
    p.add_argument("--train", action="store_true", help="train on phantoms and predict with that model instead")
    p.add_argument("--cases", type=int, default=6, help="synthetic cases (default 6; the last 2 are held out)")
    p.add_argument("--holdout", type=int, default=2, help="cases held out for prediction (default 2)")
    p.add_argument("--size", type=int, default=64, help="phantom grid edge (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra training overrides")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in OUT")
    p.set_defaults(func=run)


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.time()


def _clear_earlier_demo(out: Path, overwrite: bool) -> None:
    """Refuse an earlier demo in ``out`` (or, with ``overwrite``, remove it)."""
    existing = [p for p in PARTS if (out / p).exists()]
    if existing:
        if not overwrite:
            raise M2CofsError(f"already holds a demo ({', '.join(existing)}); pass --overwrite to replace it", out)
        for p in existing:
            shutil.rmtree(out / p)


def _find_case(root: Path, case_id: str) -> Path | None:
    """The folder of ``case_id`` in ``root`` or one level below (a folder of datasets)."""
    if not root.is_dir():
        return None
    for cand in (root / case_id, *(p / case_id for p in sorted(root.iterdir()) if p.is_dir())):
        if cand.is_dir():
            return cand
    return None


def _note_in_predict_json(pred: Path, note: str) -> None:
    """Add ``note`` to predict.json's ``report_notes`` (evaluate shows them on the report)."""
    import json

    from m2cofs.io import atomic_write_json

    path = pred / "predict.json"
    rec = json.loads(path.read_text(encoding="utf-8"))
    rec["report_notes"] = [*rec.get("report_notes", []), note]
    atomic_write_json(path, rec)


def run_bundled(args: argparse.Namespace) -> int:
    from m2cofs.bundled import DEFAULT_MODEL, get_model
    from m2cofs.inference import Predictor

    out = Path(args.out)
    parts = ("data", "pred", "report")
    _clear_earlier_demo(out, args.overwrite)
    data, pred, report = (out / p for p in parts)
    model = get_model(DEFAULT_MODEL)
    held = model.card["training"]["held_out"][0]
    t_all = time.time()
    case = _find_case(Path(args.data), held)
    if case is not None:
        note = (f"{held} is a real case that the bundled model {model.name} never saw in training "
                f"(held out from its 18 training cases; {case}).")
    else:
        _step(f"0/2 {held} not found under {args.data}: a synthetic phantom takes its place")
        code = run_command("synth", [str(data), "--cases", "1", "--size", "96", "--seed", str(args.seed)])
        if code:
            return code
        case = next(p for p in data.iterdir() if p.is_dir())
        note = (f"{case.name} is a synthetic phantom, not a real scan ({held}, the real held-out case, was not found "
                f"under {args.data}): the numbers say little about real MRI.")
    print(f"note: {note}")
    _step(f"1/2 predict {case.name} with the bundled model {model.name}")
    Predictor().predict_folder(case, pred)  # the default bundled model
    _note_in_predict_json(pred, note)
    _step("2/2 evaluate")
    code = run_command("evaluate", ["--pred", str(pred), "--data", str(case), "--out", str(report), "--quiet"])
    if code:
        return code
    print(f"\n== done in {time.time() - t_all:.0f} s")
    print(f"predictions: {pred}")
    print(f"report:      {(report / 'report.html').resolve()}")
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.train:
        return run_bundled(args)
    from m2cofs.inference import Predictor

    out = Path(args.out)
    if args.cases - args.holdout < 1 or args.holdout < 1:
        raise M2CofsError("--cases must exceed --holdout, and --holdout must be at least 1")
    _clear_earlier_demo(out, args.overwrite)
    data, run_dir, pred, report = (out / p for p in PARTS)
    t_all = time.time()
    timings = {}

    t = _step(f"1/5 synth: {args.cases} phantoms of size {args.size}")
    code = run_command("synth", [str(data), "--cases", str(args.cases), "--size", str(args.size), "--seed", str(args.seed)])
    timings["synth"] = time.time() - t
    if code:
        return code

    t = _step("2/5 data check")
    code = run_command("data", ["check", str(data)])
    timings["data check"] = time.time() - t
    if code:
        return code

    ids = sorted(p.name for p in data.iterdir() if p.is_dir())
    held = ids[-args.holdout:]
    t = _step(f"3/5 train (lite, stages 0-3) on {len(ids) - len(held)} cases; held out: {', '.join(held)}")
    settings = [x for s in [*DEMO_SETTINGS, *args.set] for x in ("--set", s)]
    code = run_command("train", ["--data", str(data), "--out", str(run_dir), "--preset", "lite",
                                 "--exclude", ",".join(held), *settings])
    timings["train"] = time.time() - t
    if code:
        return code

    t = _step("4/5 predict the held-out cases with the unified model")
    Predictor(run_dir / "unified.ckpt").predict_folder(data, pred, ids=held)
    timings["predict"] = time.time() - t
    smoke = ("demo --train: a model trained for a few CPU minutes on synthetic phantoms, to show every stage "
             "working; it is not a good model (expect low Dice). The bundled model is the one to use: m2cofs demo.")
    print(f"note: {smoke}")
    _note_in_predict_json(pred, smoke)

    t = _step("5/5 evaluate")
    code = run_command("evaluate", ["--pred", str(pred), "--data", str(data), "--out", str(report), "--quiet"])
    timings["evaluate"] = time.time() - t
    if code:
        return code

    print("\n== done in {:.0f} s ({})".format(time.time() - t_all, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"unified model: {run_dir / 'unified.ckpt'}")
    print(f"predictions:   {pred}")
    print(f"report:        {(report / 'report.html').resolve()}")
    return 0
