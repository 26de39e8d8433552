"""Package a training run as the bundled model and fill its card from measured files.

    python results/bundled/package.py weights RUN/unified.ckpt COMMIT
        float32 run -> float16 src/m2cofs/weights/brats-t1ce-flair/model.safetensors (+ sidecar)
    python results/bundled/package.py card COMPARE_RESULTS_JSON
        card.json: checksum, size, held-out numbers (results/bundled/heldout_summary.json, the
        packaged float16 file) and the peers beside them (the compare run's per-case results of the
        same held-out case); then MODEL_CARD.md re-rendered.

Everything else on the card (recipe, command, notes, failure modes) is written by hand in card.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "src/m2cofs/weights/brats-t1ce-flair"
HELDOUT = ROOT / "results/bundled/heldout_summary.json"
# compare's method name -> the card's column, and which metrics that column reports
PEERS = {
    "segresnet": ("SegResNet-16, same time", ("Dice/", "HD95/")),
    "mean": ("mean fusion", ("volume/", "retention/")),
    "copy1": ("copy T1ce", ("volume/", "retention/")),
    "copy2": ("copy FLAIR", ("volume/", "retention/")),
}
CARD_METRICS = ("Dice/", "HD95/", "volume/Q_MI", "volume/Q_TE", "volume/Q_NCIE", "volume/Q_G", "volume/MI",
                "volume/VIF", "retention/")


def _keep(key: str, prefixes=CARD_METRICS) -> bool:
    return any(key.startswith(p) for p in prefixes)


def weights(run_ckpt: str, commit: str) -> None:
    from m2cofs.checkpoint import load_model_file, save_model_file

    tensors, meta = load_model_file(run_ckpt)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "sha256")}
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
    card = json.loads((FOLDER / "card.json").read_text(encoding="utf-8"))
    meta.update(stored_dtype="float16", git_commit=commit, training_data=card["training"]["summary"],
                trained_from=f"{run_ckpt} (float32), cast to float16 for the package")
    out = save_model_file(FOLDER / "model.safetensors", half, meta)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def card(compare_results: str) -> None:
    from m2cofs.bundled import get_model, render_card
    from m2cofs.checkpoint import read_sidecar
    from m2cofs.io import atomic_write_json, atomic_write_text

    path = FOLDER / "card.json"
    c = json.loads(path.read_text(encoding="utf-8"))
    side = read_sidecar(FOLDER / "model.safetensors")
    c["sha256"] = side["sha256"]
    c["size_mb"] = round((FOLDER / "model.safetensors").stat().st_size / 1e6, 1)
    summary = json.loads(HELDOUT.read_text())
    (case,) = summary["cases"]["ids"]
    q = c.setdefault("quality", {})
    q["held_out_case"] = case
    q["held_out"] = {k: v["mean"] for k, v in summary["metrics"].items() if _keep(k)}
    per_case = json.loads(Path(compare_results).read_text())["per_case"]
    q["compared"] = {label: {k: v for k, v in per_case[name][case].items() if _keep(k, prefixes)}
                     for name, (label, prefixes) in PEERS.items() if case in per_case.get(name, {})}
    atomic_write_json(path, c)
    atomic_write_text(FOLDER / "MODEL_CARD.md", render_card(get_model("brats-t1ce-flair")))
    print(f"card: {len(q['held_out'])} metrics of the model, peers {', '.join(q['compared']) or 'none'}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"weights": weights, "card": card}[cmd](*args)
