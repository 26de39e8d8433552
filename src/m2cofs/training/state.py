"""In-stage checkpoint files (``RUN/checkpoints/<stage>.pt``): written atomically, read with
``weights_only=True`` (tensors and plain values only, never a pickled object)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from m2cofs.errors import M2CofsError
from m2cofs.io import atomic_write_bytes


def save_training_state(path: Path, state: dict) -> None:
    """Write an in-stage checkpoint atomically."""
    # Serialised in memory first: torch.save reports a full disk as an opaque RuntimeError, a
    # Python write as OSError(ENOSPC), which atomic_write_bytes turns into a clear error.
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_training_state(path: Path) -> dict:
    """Read an in-stage checkpoint (``weights_only=True``: tensors and plain values only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads, truncation, ...
        raise M2CofsError(f"cannot load the training checkpoint safely ({str(exc).splitlines()[0][:120]})", path) from None
