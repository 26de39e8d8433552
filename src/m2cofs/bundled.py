"""Models shipped inside the package, found by name (``m2cofs predict --model brats-t1ce-flair``).

Each bundled model is a folder ``m2cofs/weights/<name>/`` holding the model file
``model.safetensors`` with its sidecar (the same format as every m2cofs model, see
:mod:`m2cofs.checkpoint`) and ``card.json``: what the model expects and what it was measured to
do. :func:`render_card` turns the card into the Markdown model card (``MODEL_CARD.md`` beside it
is that rendering, kept equal by a test). Nothing here imports torch: ``m2cofs models`` stays
fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from m2cofs.errors import M2CofsError

DEFAULT_MODEL = "brats-t1ce-flair"
MODEL_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_MD = "MODEL_CARD.md"


@dataclass(frozen=True)
class BundledModel:
    name: str
    folder: Path
    card: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def modalities(self) -> list[str]:
        return list(self.card["modalities"])


def weights_root() -> Path:
    """The folder of the bundled models (``M2COFS_WEIGHTS`` overrides it, for tests)."""
    override = os.environ.get("M2COFS_WEIGHTS")
    return Path(override) if override else Path(str(resources.files("m2cofs").joinpath("weights")))


def list_models() -> list[BundledModel]:
    """Every bundled model (folders with a card and a model file), sorted by name."""
    root = weights_root()
    out = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            card_path = folder / CARD_FILE
            if not card_path.is_file() or not (folder / MODEL_FILE).is_file():
                continue
            try:
                card = json.loads(card_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise M2CofsError(f"unreadable model card ({exc})", card_path) from None
            out.append(BundledModel(folder.name, folder, card))
    return out


def get_model(name: str) -> BundledModel:
    for m in list_models():
        if m.name == name:
            return m
    known = ", ".join(m.name for m in list_models()) or "none installed"
    raise M2CofsError(f"unknown model {name!r}: not a file, and not a bundled model (known: {known}; "
                      "`m2cofs models` lists them)")


def resolve_model(spec: str | None) -> tuple[Path, BundledModel | None]:
    """``--model``: a path to a model file (or a run folder holding ``unified.ckpt``) wins over a
    bundled model of the same name; ``None`` means the default bundled model."""
    if spec is None:
        return get_model(DEFAULT_MODEL).path, get_model(DEFAULT_MODEL)
    path = Path(spec)
    if path.exists() or os.sep in spec or spec.endswith((".ckpt", ".safetensors")):
        return path, None
    model = get_model(spec)
    return model.path, model


# ------------------------------------------------------------------------------ the card
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "—" if v is None else str(v)


def _labels_written(card: dict[str, Any]) -> str:
    """The label values a prediction is written in (see m2cofs.data.labels.output_convention)."""
    own = card.get("label_convention", "?")
    if set(card.get("regions", [])) != {"ET", "TC", "WT"}:
        return f"the {own} convention"
    return f"the input naming's convention (BraTS 2023: brats2023; BraTS 2018-2021: brats2017; Decathlon: msd; else {own})"


def summary_line(m: BundledModel) -> str:
    c = m.card
    q = c.get("quality", {}).get("held_out", {})
    dice = ", ".join(f"{r} {_fmt(q.get('Dice/' + r))}" for r in c.get("regions", []))
    return (f"{m.name}{' (default)' if m.name == DEFAULT_MODEL else ''}: {c.get('description', '')}\n"
            f"    input: {', '.join(c['modalities'])} (any order: channels are matched by name); "
            f"grid {c.get('grid', '?')}; output labels: {_labels_written(c)} ({', '.join(c.get('regions', []))})\n"
            f"    trained on: {c.get('training', {}).get('summary', '?')}\n"
            f"    held-out Dice: {dice or '—'}  (details: m2cofs models --details {m.name})")


def render_card(m: BundledModel) -> str:
    """The model card as Markdown."""
    c = m.card
    t = c.get("training", {})
    lines = [f"# Model card: {m.name}", "", c.get("description", ""), "",
             "**Not for clinical use.** A research model trained on a handful of public cases on a CPU.", "",
             "## What it expects and gives", "",
             f"- Input: {', '.join(c['modalities'])}, co-registered, skull-stripped, on one grid "
             f"(BraTS-style; any voxel size: every case is resampled to the model grid {c.get('grid', '?')}).",
             f"- Output: the fused volume on the input's own grid, and a label map in "
             f"{_labels_written(c)} (regions {', '.join(c.get('regions', []))}; `--labels` chooses).",
             f"- Network: M²-CoFS, preset `{c.get('preset', '?')}` — {c.get('recipe', '')}",
             f"- File: `{MODEL_FILE}` ({c.get('size_mb', '?')} MB), SHA-256 `{c.get('sha256', '?')}`.", "",
             "## Training data", "",
             f"{t.get('summary', '')}", ""]
    for src in t.get("sources", []):
        lines.append(f"- **{src['folder']}** ({src['cases']} cases): {src['licence']}. Cite: {src['cite']}.")
    lines += ["", f"Held out (never seen in training): {', '.join(t.get('held_out', [])) or 'none'}.", "",
              "## How it was trained", "", "```bash", t.get("command", ""), "```", "",
              f"Commit: `{t.get('commit', '?')}`; {t.get('seconds', '?')} s on {t.get('machine', '?')}.", "",
              "## Measured quality", ""]
    q = c.get("quality", {})
    held = q.get("held_out", {})
    peers = q.get("compared", {})
    if held:
        lines += [f"On the held-out case ({q.get('held_out_case', '?')}; `results/{q.get('results', '?')}`)"
                  + (", beside what a user would pick instead (same case, same evaluation):" if peers else ":"), ""]
        names = [m.name, *peers]
        lines += ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        keys = list(dict.fromkeys([*held, *(k for p in peers.values() for k in p)]))
        lines += [f"| {k} | " + " | ".join(_fmt(src.get(k)) for src in (held, *peers.values())) + " |" for k in keys]
        lines.append("")
        if peers and q.get("compared_note"):
            lines += [q["compared_note"], ""]
    for note in q.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "## Known failure modes", ""] + [f"- {f}" for f in c.get("failure_modes", [])]
    return "\n".join(lines).rstrip() + "\n"
