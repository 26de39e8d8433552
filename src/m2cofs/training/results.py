"""What the stages of a run hand on: :class:`StageResults`, and the flat, prefixed tensor
mappings the stage files hold (:func:`prefixed`, :func:`part`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

Weights = dict[str, torch.Tensor]


@dataclass
class StageResults:
    """The weight sets of one run, each ``None`` until the stage that produces it has run (or
    its results were read from RUN/stages). Names follow the paper: θ fusion-module (F) weights,
    ψ fusion head, φ segmentation head, ω SI importance."""

    theta0: Optional[Weights] = None  # F's seeded initialisation, the start of both Stage-I paths
    # Stage I
    theta_f: Optional[Weights] = None  # θF, trained on fusion
    omega_f: Optional[Weights] = None  # its SI importance
    psi_1: Optional[Weights] = None  # ψ trained with θF
    theta_s: Optional[Weights] = None  # θS, trained on segmentation
    omega_s: Optional[Weights] = None
    phi_1: Optional[Weights] = None  # φ trained with θS
    # Stage II
    theta_sf: Optional[Weights] = None  # θS→F: θS adapted to fusion
    psi_2: Optional[Weights] = None
    theta_fs: Optional[Weights] = None  # θF→S: θF adapted to segmentation
    phi_2: Optional[Weights] = None
    # Stage III
    theta_u: Optional[Weights] = None  # θU, the unified weights


def prefixed(**parts: Weights) -> Weights:
    """``prefixed(fusion=θ, seg_head=φ)`` → one flat mapping ``{"fusion.…": …, "seg_head.…": …}``."""
    return {f"{prefix}.{k}": v for prefix, state in parts.items() for k, v in state.items()}


def part(tensors: Weights, prefix: str) -> Weights:
    """The inverse of :func:`prefixed` for one prefix: ``part(t, "fusion")`` → ``{"…": …}``."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
