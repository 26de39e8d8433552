"""Random training patches from preprocessed cases, reproducible for a seed.

Every patch is a pure function of ``(seed, stage, epoch, sample index)``: the case, the centre
(a labelled voxel with probability ``foreground_ratio`` when the case has labels, else a brain
voxel) and the augmentation (flips, small intensity scale/shift, and optionally an MRI bias field
and a gamma per modality). So a resumed run, a run with
more data-loading workers, and a run split over several processes (DDP) all see the same
patches — which is what makes ``--resume`` reproduce an uninterrupted run exactly and a
two-process run match one process on the same global batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.transforms import RandAdjustContrast, RandBiasField
from torch.utils.data import Dataset

from m2cofs.data.labels import LabelConvention, get_convention, labels_to_regions
from m2cofs.data.preprocess import PreparedCase


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def crop_or_pad(arr: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``arr[..., start:start+size]`` on the last three axes, zero-padded where it leaves the volume."""
    out = np.zeros((*arr.shape[:-3], *size), dtype=arr.dtype)
    src, dst = [], []
    for s, n, full in zip(start, size, arr.shape[-3:]):
        lo, hi = max(s, 0), min(s + n, full)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - s, lo - s + max(0, hi - lo)))
    out[(..., *dst)] = arr[(..., *src)]
    return out


def mri_intensity_augment(image: np.ndarray, rng: np.random.Generator, bias_field_prob: float = 0.0,
                          gamma_prob: float = 0.0, gamma_range: tuple[float, float] = (0.7, 1.5),
                          bias_coeff_range: tuple[float, float] = (-0.1, 0.1)) -> np.ndarray:
    """Scanner-like intensity changes of a ``(C, X, Y, Z)`` patch scaled to [0, 1], each modality drawn apart.

    With probability ``bias_field_prob`` a channel is multiplied by a smooth field (exp of a degree-3
    Legendre polynomial, MONAI :class:`~monai.transforms.RandBiasField`, signed coefficients so it
    brightens and darkens alike); with probability ``gamma_prob`` it goes through
    ``x ** gamma``, gamma uniform in ``gamma_range`` (MONAI
    :class:`~monai.transforms.RandAdjustContrast`, as nnU-Net's gamma augmentation). Background
    (0) stays 0 and the result is clipped to [0, 1]. All randomness comes from ``rng``.
    """
    if bias_field_prob <= 0 and gamma_prob <= 0:
        return image
    out = np.array(image, dtype=np.float32, copy=True)
    inside = out > 0
    for c in range(out.shape[0]):
        ch = out[c:c + 1]
        if rng.random() < bias_field_prob:
            t = RandBiasField(degree=3, coeff_range=bias_coeff_range, prob=1.0)
            t.set_random_state(seed=int(rng.integers(2 ** 31)))
            ch = np.asarray(t(ch))
        if rng.random() < gamma_prob:
            t = RandAdjustContrast(gamma=gamma_range, prob=1.0)
            t.set_random_state(seed=int(rng.integers(2 ** 31)))
            ch = np.asarray(t(np.clip(ch, 0.0, 1.0)))
        out[c] = np.where(inside[c], np.clip(ch[0], 0.0, 1.0), 0.0)
    return out


class PatchDataset(Dataset):
    """Map-style dataset of one epoch's patches: index ``i`` → patch ``i`` of the epoch.

    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``). Items:
    ``image`` (C, *patch) float32, ``target`` (R, *patch) float32 region masks (zeros when the
    case has no label), ``has_label`` (bool).
    """

    def __init__(self, cases: Sequence[PreparedCase], convention: LabelConvention, patch_size: Sequence[int],
                 samples_per_case: int = 4, foreground_ratio: float = 0.5, augment: bool = True,
                 seed: int = 0, stage_key: int = 0, bias_field_prob: float = 0.0, gamma_prob: float = 0.0):
        if not cases:
            raise ValueError("no training cases")
        self.cases = list(cases)
        self.convention = convention
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_case = samples_per_case
        self.foreground_ratio = foreground_ratio
        self.augment = augment
        self.bias_field_prob = bias_field_prob
        self.gamma_prob = gamma_prob
        self.seed = seed
        self.stage_key = stage_key
        self.epoch = 0
        self._fg_index = [np.flatnonzero(c.label.ravel() > 0) if c.label is not None else np.empty(0, np.int64)
                          for c in self.cases]
        self._brain_index = [np.flatnonzero(c.mask.ravel()) for c in self.cases]
        # each case's labels become regions in its own convention (its dataset folder's), when it has one
        self._conventions = [get_convention(c.meta.label_convention)
                             if getattr(c.meta, "label_convention", "") not in ("", "none") else convention
                             for c in self.cases]
        for c, conv in zip(self.cases, self._conventions):
            if list(conv.regions) != list(convention.regions):
                raise ValueError(f"case {c.id}: its {conv.name} labels have regions {list(conv.regions)}, "
                                 f"the training set's {convention.name} has {list(convention.regions)}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cases) * self.samples_per_case

    def case_of(self, index: int) -> int:
        perm = _rng(self.seed, self.stage_key, self.epoch, 7).permutation(len(self.cases))
        return int(perm[index % len(self.cases)])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ci = self.case_of(index)
        case = self.cases[ci]
        rng = _rng(self.seed, self.stage_key, self.epoch, index)
        shape = case.image.shape[1:]
        fg = self._fg_index[ci]
        pool = fg if (fg.size and rng.random() < self.foreground_ratio) else self._brain_index[ci]
        if pool.size:
            centre = np.unravel_index(int(pool[rng.integers(pool.size)]), shape)
        else:
            centre = tuple(s // 2 for s in shape)
        start = [int(c) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1)) for c, p in zip(centre, self.patch_size)]
        # keep the patch inside the volume where the volume is large enough
        start = [min(max(s, 0), max(full - p, 0)) if full >= p else (full - p) // 2
                 for s, p, full in zip(start, self.patch_size, shape)]
        image = crop_or_pad(case.image, start, self.patch_size)
        has_label = case.label is not None
        if has_label:
            regions = labels_to_regions(crop_or_pad(case.label, start, self.patch_size), self._conventions[ci])
        else:
            regions = np.zeros((len(self.convention.regions), *self.patch_size), np.uint8)
        if self.augment:
            for ax in range(3):
                if rng.random() < 0.5:
                    image = np.flip(image, axis=ax + 1)
                    regions = np.flip(regions, axis=ax + 1)
            image = mri_intensity_augment(image, rng, self.bias_field_prob, self.gamma_prob)
            scale = rng.uniform(0.9, 1.1, size=(image.shape[0], 1, 1, 1))
            shift = rng.uniform(-0.05, 0.05, size=(image.shape[0], 1, 1, 1))
            inside = image > 0
            image = np.where(inside, np.clip(image * scale + shift, 0.0, 1.0), 0.0)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "target": torch.from_numpy(np.ascontiguousarray(regions, dtype=np.float32)),
            "has_label": torch.tensor(has_label),
        }


def epoch_batches(n_samples: int, batch_size: int, seed: int, stage_key: int, epoch: int,
                  rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's batches of one epoch.

    The epoch's samples are shuffled once (for the seed, stage and epoch); the global batch
    ``t`` is samples ``[t·B·W, (t+1)·B·W)``; rank ``r`` takes every ``W``-th of them starting
    at ``r`` (as ``DistributedSampler`` does). Incomplete global batches are dropped.
    """
    order = _rng(seed, stage_key, epoch, 11).permutation(n_samples)
    global_bs = batch_size * world_size
    if n_samples < global_bs:  # fewer samples than one global batch: repeat the shuffled order
        order = np.resize(order, global_bs)
    n_batches = len(order) // global_bs
    batches = []
    for t in range(n_batches):
        chunk = order[t * global_bs:(t + 1) * global_bs]
        batches.append([int(i) for i in chunk[rank::world_size]])
    return batches
