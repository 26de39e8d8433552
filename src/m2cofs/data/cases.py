"""What discovery finds: the file references of a case and of a dataset (no data is read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("auto", "brats2021", "brats2023", "msd", "mrbrains", "plain", "datalist")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_DEPTH = 4  # how deep below DATA to look for case files


@dataclass(frozen=True)
class ImageRef:
    """One image on disk; ``channel`` selects a volume of a 4-D file (Decathlon layout)."""

    path: Path
    channel: int | None = None

    def __str__(self) -> str:
        return str(self.path) if self.channel is None else f"{self.path}[channel {self.channel}]"


@dataclass
class CaseSpec:
    """What discovery found for one case: file references, not data."""

    id: str
    images: dict[str, ImageRef]  # canonical modality → image
    label: Path | None = None
    mask: Path | None = None
    notes: list[str] = field(default_factory=list)
    format: str = ""
    # The case's label convention and why (set by m2cofs.data.dataset.resolve_convention: per
    # dataset folder, or given with --labels); None until resolved.
    convention: str | None = None
    convention_reason: str = ""
    declared_convention: str | None = None  # a datalist entry's own "labels" (wins over inference)

    @property
    def modalities(self) -> list[str]:
        return list(self.images)


@dataclass
class DatasetSpec:
    """All cases found under one path, and how they were found."""

    root: Path
    format: str
    cases: list[CaseSpec]
    notes: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.cases]


def strip_nifti_suffix(name: str) -> str | None:
    """``"a_t1.nii.gz"`` → ``"a_t1"``; ``None`` when ``name`` is not a NIfTI file name."""
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return None
