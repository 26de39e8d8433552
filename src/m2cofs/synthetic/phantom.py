"""One phantom in memory: :class:`Phantom` and :func:`generate_phantom`, composed of the steps
(grid and pose, anatomy, folding, tissue fractions, tumour, class maps, images) of the sibling
modules. The random streams: geometry, folding, tumour, texture, then one per modality."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from m2cofs.data.labels import get_convention
from m2cofs.data.modalities import parse_modality_list
from m2cofs.errors import M2CofsError
from m2cofs.synthetic.anatomy import _Anatomy, _brain_regions
from m2cofs.synthetic.classes import _class_maps, _make_label
from m2cofs.synthetic.contrast import DEFAULT_MODALITIES, SYNTH_MODALITIES, _form_images, _texture_gain
from m2cofs.synthetic.fields import _lowres_noise, _pv, _rotation
from m2cofs.synthetic.folding import _parenchyma
from m2cofs.synthetic.tumour import _add_tumour, _tumour_params, _tumour_sdfs

MIN_SIZE = 24
MAX_SIZE = 256


@dataclass
class Phantom:
    """One synthetic case.

    ``images`` maps modality -> float32 (X, Y, Z); ``label`` is the uint8 label map in
    ``convention`` (``None`` for ``none``); ``tissue`` the internal tissue classes
    (:data:`TISSUE_NAMES`); ``structure`` the MRBrainS13 9-class map; ``brainmask`` the
    intracranial mask (brain + CSF); ``bias`` the multiplicative bias field of each image;
    ``meta`` the drawn parameters (tumour centre in voxels, radii, spacing, ...).
    """

    images: dict[str, np.ndarray]
    label: np.ndarray | None
    tissue: np.ndarray
    brainmask: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    structure: np.ndarray | None = None
    bias: dict[str, np.ndarray] = field(default_factory=dict)
    convention: str = "brats2017"
    seed: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.tissue.shape)  # type: ignore[return-value]


def grid_shape(size: int) -> tuple[int, int, int]:
    """The grid of a phantom of edge ``size``: ``(size, size, 2*ceil(size/2.4))``."""
    return (int(size), int(size), int(2 * math.ceil(size / 2.4)))


def _check_args(size, seed, modalities, convention) -> tuple[list[str], str]:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise M2CofsError(f"--size must be an integer, got {size!r}")
    if size < MIN_SIZE or size > MAX_SIZE:
        raise M2CofsError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} voxels, got {size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise M2CofsError(f"--seed must be a non-negative integer, got {seed!r}")
    try:
        mods = parse_modality_list(list(modalities) if not isinstance(modalities, str) else modalities)
    except ValueError as exc:
        raise M2CofsError(str(exc)) from None
    if not mods:
        raise M2CofsError("--modalities: give at least one of " + ", ".join(SYNTH_MODALITIES))
    bad = [m for m in mods if m not in SYNTH_MODALITIES]
    if bad:
        raise M2CofsError(f"--modalities: cannot synthesise {', '.join(bad)}; "
                          f"choose from {', '.join(SYNTH_MODALITIES)}")
    if convention == "auto":
        raise M2CofsError("--labels auto is for reading data; choose a convention to synthesise")
    try:
        get_convention(convention)
    except ValueError as exc:
        raise M2CofsError(str(exc)) from None
    return mods, convention


def _draw_frame(rng: np.random.Generator, size: int) -> dict:
    """Grid, spacing, affine and head pose: ``shape, L, spacing, vox, affine, rot, origin``."""
    shape = grid_shape(size)
    L = size / 2.0 - 1.5  # half-extent of the anatomy (mm), less a margin that matters on small grids
    sxy = float(rng.uniform(0.95, 1.05))
    sz = 1.2 * float(rng.uniform(0.95, 1.05))
    spacing = (sxy, sxy, sz)
    vox = float(np.cbrt(sxy * sxy * sz))
    # world: affine maps voxel -> RAS mm; grid centre at a random scanner position
    gcen = rng.uniform(-20, 20, size=3)
    affine = np.diag([-sxy, -sxy, sz, 1.0])
    centre_idx = (np.array(shape) - 1) / 2.0
    affine[:3, 3] = gcen - affine[:3, :3] @ centre_idx
    # head: centre a little off the grid centre, small rotation; cerebrum centre above head centre
    rot = _rotation(rng, 5.0)
    head = gcen + rng.uniform(-0.03, 0.03, size=3) * L
    cer_offset = np.array([0.0, 0.01 * L, 0.24 * L])
    origin = head + rot @ cer_offset  # world position of the local origin
    return dict(shape=shape, L=L, spacing=spacing, vox=vox, affine=affine, rot=rot, origin=origin)


def _local_coords(frame: dict) -> list[np.ndarray]:
    """Local coordinates (mm) of every voxel: ``q = R^T (w - origin)``, ``w = affine @ idx``."""
    affine, shape, rot, origin = frame["affine"], frame["shape"], frame["rot"], frame["origin"]
    axes_w = [affine[a, a] * np.arange(shape[a], dtype=np.float64) + affine[a, 3] - origin[a] for a in range(3)]
    q = []
    for r in range(3):
        comp = [(rot[a, r] * axes_w[a]).astype(np.float32).reshape([-1 if i == a else 1 for i in range(3)])
                for a in range(3)]
        q.append((comp[0] + comp[1] + comp[2]).astype(np.float32))
    return q


def _healthy_fractions(trng: np.random.Generator, an: _Anatomy, x, y, z, reg: dict, d_par, shape) -> dict:
    """Fractions of the intracranial volume and of each healthy component (cortical thickness
    and external CSF vary smoothly: two draws from the texture stream ``trng``)."""
    vox = an.vox
    tex_thick = _lowres_noise(trng, shape, 6.0)
    T_loc = np.where(reg["in_cbl"], np.float32(an.T_cb), np.float32(an.T)) * (
        1.0 + 0.12 * np.clip(tex_thick, -1.7, 1.7))
    del tex_thick
    csf_t = np.float32(an.csf_ext) * (1.0 + 0.35 * np.clip(_lowres_noise(trng, shape, 5.0), -1.5, 1.5))
    f_icv = _pv(reg["d_brain"] - csf_t, vox)
    del csf_t
    f_par = np.minimum(_pv(d_par, vox), f_icv)
    f_bs = _pv(reg["d_bs"], vox)
    f_inner = np.minimum(np.maximum(_pv(d_par + T_loc, vox), f_bs), f_par)
    del T_loc
    f_vent = _pv(an.ventricles(x, y, z), vox) * f_inner
    f_deep = _pv(an.deep_gm(x, y, z), vox) * (f_inner - f_vent)
    return dict(icv=f_icv, csf=f_icv - f_par, vent=f_vent, cortex=f_par - f_inner, deep=f_deep,
                wm=f_inner - f_vent - f_deep)


def _phantom_meta(size, frame: dict, an: _Anatomy, tr: dict, mod_meta: dict) -> dict:
    inv = np.linalg.inv(frame["affine"])
    centre_world = frame["origin"] + frame["rot"] @ tr["centre"].astype(np.float64)
    return dict(
        size=size, shape=frame["shape"], spacing=frame["spacing"], cortex_thickness_mm=an.T, voxel_mm=frame["vox"],
        tumour_side="right" if tr["side"] > 0 else "left",
        tumour_centre_voxel=tuple(float(v) for v in (inv[:3, :3] @ centre_world + inv[:3, 3])),
        tumour_core_radius_mm=float(tr["rc"]), tumour_rim_mm=float(tr["rim"]),
        oedema_radius_mm=float(tr["ro"]), modalities=mod_meta,
    )


def generate_phantom(size: int = 64, seed: int = 0, modalities: Sequence[str] = DEFAULT_MODALITIES,
                     convention: str = "brats2017", background: str = "noise") -> Phantom:
    """Build one brain-like multi-modal phantom (see :mod:`m2cofs.synthetic`).

    ``background="zero"`` sets everything outside the (slightly dilated) brain mask to 0, like
    skull-stripped BraTS data; the default keeps the Rician noise floor.
    """
    mods, convention = _check_args(size, seed, modalities, convention)
    if background not in ("noise", "zero"):
        raise M2CofsError(f"background must be 'noise' or 'zero', got {background!r}")
    size = int(size)
    ss = np.random.SeedSequence(int(seed))
    (s_geom, s_fold, s_tum, s_tex, *s_mod) = ss.spawn(4 + len(SYNTH_MODALITIES))
    rng = np.random.default_rng(s_geom)
    frame = _draw_frame(rng, size)
    shape, vox = frame["shape"], frame["vox"]
    an = _Anatomy(rng, frame["L"], vox)
    x, y, z = _local_coords(frame)

    reg = _brain_regions(an, x, y, z)
    d_par = _parenchyma(np.random.default_rng(s_fold), an, x, y, z, reg, shape, frame["spacing"])
    trng = np.random.default_rng(s_tex)
    fr = _healthy_fractions(trng, an, x, y, z, reg, d_par, shape)
    del d_par
    tr = _tumour_params(np.random.default_rng(s_tum), an)
    _add_tumour(fr, _tumour_sdfs(trng, tr, x, y, z, shape, vox), vox)
    fr["bg"] = 1.0 - fr["icv"]
    order = ("bg", "csf", "vent", "cortex", "deep", "wm", "nec", "enh", "ed", "net")  # the components
    fracs = np.stack([fr[k] for k in order]).astype(np.float32)
    del fr
    np.clip(fracs, 0.0, 1.0, out=fracs)
    tissue, brainmask, structure = _class_maps(fracs, reg["d_cer"], reg["d_cbl"], reg["d_bs"], reg["in_cbl"], vox)
    del reg

    tex_gain = _texture_gain(trng, fracs, shape)
    images, biases, mod_meta = _form_images(s_mod, mods, fracs, tex_gain, brainmask, shape, background)
    label = _make_label(tissue, structure, convention)
    return Phantom(images={m: images[m] for m in mods}, label=label, tissue=tissue, brainmask=brainmask,
                   affine=frame["affine"], spacing=frame["spacing"], structure=structure,
                   bias={m: biases[m] for m in mods}, convention=convention, seed=int(seed),
                   meta=_phantom_meta(size, frame, an, tr, mod_meta))
