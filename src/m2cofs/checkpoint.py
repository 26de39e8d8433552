"""Model files: safetensors weights + a JSON sidecar, never pickles.

``unified.ckpt`` is a safetensors file (tensors only: loading it cannot run code). Beside it,
``unified.ckpt.json`` records what the weights are for — preset and configuration, input
modalities, label convention and regions, preprocessing, m2cofs version — and the file's
SHA-256. :func:`load_model_file` refuses a file that is not safetensors (a pickle, say), a
missing or mismatched sidecar, and a checksum that does not match, each with a clear error.
The same metadata is also embedded in the safetensors header, and must be: a file without it,
or whose two copies disagree, is refused (the sidecar's checksum alone can be recomputed by
anyone who edits it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from m2cofs import __version__
from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    import torch
# torch (safetensors.torch) is imported where tensors are read or written, not here: a model's
# sidecar can be checked without it (m2cofs predict refuses a wrong model file in well under 1 s)

FORMAT = "m2cofs-model"


# Provenance a sidecar may record although the metadata embedded in the weights lacks it (the
# bundled model's commit and training data, from its card): the weights stay as they were.
ADDED_PROVENANCE = ("git_commit", "training_data")


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically."""
    from safetensors.torch import save

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # Serialised in memory, then written by Python: a full disk is then a plain OSError (ENOSPC)
    # that atomic_write_bytes turns into a clear error, with any previous file left intact.
    atomic_write_bytes(path, save(clean, metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (e.g. a pickle) is refused without being executed."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise M2CofsError("file not found", path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise M2CofsError(f"is not a safetensors weight file{_pickle_hint(path)}: {str(exc).splitlines()[0][:100]}", path) from None


def _pickle_hint(path: Path) -> str:
    """Say so when a file that should be safetensors starts like a pickle or a torch.save zip."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return ""
    pickled = head[:1] == b"\x80" or head == b"PK"
    return " (it looks like a pickle / torch.save file, which m2cofs never loads)" if pickled else ""


def save_model_file(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``path`` (safetensors) and its JSON sidecar with the checksum. Returns ``path``."""
    path = Path(path)
    meta = {"format": FORMAT, "version": __version__, **meta}
    save_tensors(path, tensors, {"m2cofs": json.dumps(meta, sort_keys=True)})
    atomic_write_json(sidecar_path(path), {**meta, "sha256": sha256_file(path)})
    return path


UNIFIED = "unified.ckpt"  # a training run's product: RUN/unified.ckpt (m2cofs.training.pipeline)
MODEL_SUFFIXES = (".ckpt", ".safetensors")


def resolve_model_file(path: str | Path) -> Path:
    """The model file that ``path`` names: ``path`` itself, or ``path/unified.ckpt`` when ``path``
    is a training run's folder. A folder without one, a sidecar or any other file that is not a
    model file is refused with a message that names the file to pass instead."""
    path = Path(path)
    if path.is_dir():
        if (path / UNIFIED).is_file():
            return path / UNIFIED
        others = sorted(p.name for p in path.iterdir() if p.suffix in MODEL_SUFFIXES and p.is_file())
        found = f"; model files in it: {', '.join(others)}" if others else "; it holds no model file (*.ckpt)"
        raise M2CofsError(f"is a folder, not a model file, and has no {UNIFIED} (the unified model a finished "
                          f"training run writes){found}", path)
    _refuse_non_model_file(path)
    return path


def _refuse_non_model_file(path: Path) -> None:
    """Sidecars (``X.ckpt.json``), READMEs and other files that cannot be a model file."""
    if not path.is_file() or sidecar_path(path).is_file():
        return
    if path.suffix == ".json":
        model = path.with_name(path.name[: -len(".json")])
        if model.suffix in MODEL_SUFFIXES:
            hint = f"pass {model} instead" if model.is_file() else f"its model file {model.name} is missing"
            raise M2CofsError(f"is a model's sidecar (its metadata), not the model file: {hint}", path)
    if path.suffix not in MODEL_SUFFIXES:
        unified = path.parent / UNIFIED
        hint = f"; pass {unified} instead" if unified.is_file() else \
            f" (a model file is a {' or '.join(MODEL_SUFFIXES)} file with its .json sidecar beside it, e.g. RUN/{UNIFIED})"
        raise M2CofsError(f"is not a model file{hint}", path)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of a model file, checked against the file's checksum."""
    path = Path(path)
    side = sidecar_path(path)
    if path.is_dir():
        resolve_model_file(path)  # says what the folder lacks
        raise M2CofsError(f"is a folder, not a model file: pass {path / UNIFIED}", path)
    if not path.is_file():
        raise M2CofsError("model file not found", path)
    if not side.is_file():
        _refuse_non_model_file(path)
        raise M2CofsError(f"has no sidecar {side.name}: cannot tell what the weights are for", path)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise M2CofsError(f"unreadable sidecar ({exc})", side) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise M2CofsError("is not an m2cofs model sidecar", side)
    if meta.get("sha256") != sha256_file(path):
        raise M2CofsError(f"checksum does not match {side.name}: the weights were changed or the sidecar belongs to another file", path)
    return meta


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, shapes, metadata), read without torch."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= 100 << 20:
                raise ValueError("header size out of range")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise M2CofsError(f"is not a safetensors weight file{_pickle_hint(path)} ({exc})", path) from None
    if not isinstance(header, dict):
        raise M2CofsError("is not a safetensors weight file (its header is no mapping)", path)
    return header


def check_model_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """The sidecar ``meta`` (checksum already checked) against the copy embedded in the weights,
    and the modality count against the weights' encoders: torch-free, so ``predict`` refuses a
    tampered or mismatched model file before anything else."""
    path = Path(path)
    header = safetensors_header(path)
    embedded = (header.get("__metadata__") or {}).get("m2cofs")
    # the sidecar's checksum proves only that it was written for this file, by anyone: the copy
    # embedded in the weights is the proof that the metadata is the one they were saved with
    if embedded is None:
        raise M2CofsError(f"carries no embedded metadata: {sidecar_path(path).name} cannot be checked against the "
                          "weights (m2cofs writes both; re-save the model with m2cofs)", path)
    try:
        emb = json.loads(embedded)
    except (json.JSONDecodeError, TypeError):
        raise M2CofsError("has unreadable metadata embedded in the weights", path) from None
    # the checksum, and provenance a sidecar may add after the fact to weights that lack it
    side = {k: v for k, v in meta.items()
            if k != "sha256" and not (k in ADDED_PROVENANCE and isinstance(emb, dict) and k not in emb)}
    if emb != side:
        diff = sorted(k for k in set(emb) | set(side) if emb.get(k) != side.get(k)) if isinstance(emb, dict) else []
        raise M2CofsError(f"metadata embedded in the weights does not match {sidecar_path(path).name}"
                          f"{' (' + ', '.join(diff[:5]) + ')' if diff else ''}: refusing both", path)
    encoders = {k.split(".")[1] for k in header if k.startswith("encoders.") and k.count(".") > 1}
    mods = meta.get("modalities")
    if encoders and isinstance(mods, list) and len(encoders) != len(mods):
        raise M2CofsError(f"weights hold {len(encoders)} encoder(s) but the sidecar names {len(mods)} modalities: "
                          "the checkpoint belongs to another preset or modality count", path)


def load_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a model file written by :func:`save_model_file`."""
    path = Path(path)
    meta = read_sidecar(path)
    tensors = load_tensors(path)
    check_model_metadata(path, meta)
    return tensors, meta
