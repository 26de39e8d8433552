"""Canonical MRI modality names and their aliases.

Datasets name the same sequence differently: BraTS 2018–2021 ``t1ce``, BraTS 2023 ``t1c``, the
Medical Segmentation Decathlon ``T1gd``. m2cofs uses one canonical name per sequence:

========  ==================================================
name      aliases (case-, dash-, underscore-insensitive)
========  ==================================================
t1        t1, t1n, t1w, t1native
t1ce      t1ce, t1c, t1gd, t1post, t1contrast, t1wce, t1cegd
t2        t2, t2w
flair     flair, t2f, t2flair, t2wflair
t1_ir     t1ir (MRBrainS13 inversion recovery)
pd        pd, pdw
========  ==================================================
"""

from __future__ import annotations

import re

CANONICAL = ("t1", "t1ce", "t2", "flair", "t1_ir", "pd")

_ALIASES: dict[str, str] = {}
for _canon, _names in {
    "t1": ("t1", "t1n", "t1w", "t1native", "t1pre"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1post", "t1contrast", "t1wce", "t1cegd", "t1wgd"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "t2flair", "t2wflair"),
    "t1_ir": ("t1ir",),
    "pd": ("pd", "pdw"),
}.items():
    for _n in _names:
        _ALIASES[_n] = _canon


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.strip().lower())


def normalize_modality(name: str) -> str | None:
    """Return the canonical name for ``name`` (e.g. ``"T1Gd"`` → ``"t1ce"``), or ``None``."""
    return _ALIASES.get(_key(name))


def parse_modality_list(text: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """Parse ``"t1ce,flair"`` (or a list) into canonical names; ``None``/``""`` → ``None``.

    Raises :class:`ValueError` naming an unknown modality.
    """
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [i.strip() for i in items if i.strip()]
    if not items:
        return None
    out: list[str] = []
    for item in items:
        canon = normalize_modality(item)
        if canon is None:
            raise ValueError(
                f"unknown modality {item!r}; known: {', '.join(CANONICAL)} (and aliases such as t1c, t2f, t1gd)"
            )
        if canon in out:
            raise ValueError(f"modality {item!r} given twice")
        out.append(canon)
    return out
