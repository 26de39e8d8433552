"""Synthetic brain-like multi-modal MRI phantoms with tumour and tissue labels.

:func:`generate_phantom` builds one case in memory; :func:`write_synthetic_dataset` writes N
cases in the BraTS-2021 layout (``OUT/<id>/<id>_{t1,t1ce,t2,flair,seg,brainmask}.nii.gz``); the
``m2cofs synth`` command calls it. The phantoms exist so that every part of m2cofs (loading,
preprocessing, training, fusion, evaluation) can be demonstrated and tested without real data.
They look like skull-stripped brain MRI, not like blobs, but they are not anatomy: no skull, no
vessels, no temporal horns, no mass effect.

Grid and affine
---------------
``size=S`` gives an ``S x S x nz`` grid with ``nz = 2*ceil(S/2.4)`` (64 -> 64x64x54,
96 -> 96x96x80, 128 -> 128x128x108): nominal voxels are 1.0 x 1.0 x 1.2 mm, so the slab covers
about the same extent (S mm) on every axis. Each case varies the spacing by up to +-5 % per
axis (x and y equal). The affine is BraTS-like ``LPS`` (voxel axes point Left, Posterior,
Superior, ``diag(-sx, -sy, sz)``) with a random scanner origin. The anatomy is defined in
world millimetres (x right, y anterior, z superior, head slightly rotated and shifted) and then
sampled through the affine, so it is anatomically correct whatever the orientation.

The phantom is scaled to the grid, not to a real head: its scale is ``L = S/2 - 1.5`` mm, so a
64-grid brain is ~50 mm long (anterior-posterior). Sizes below are in units of ``L``.

Anatomy (per case, random within the ranges)
--------------------------------------------
* Cerebrum: ellipsoid with semi-axes ~(0.62, 0.80, 0.56) L (+-6 %), wider at the back,
  flattened below, with a smooth random-harmonic surface deformation; two temporal lobes hang
  below it, each cut off by a Sylvian fissure; an interhemispheric fissure splits the
  hemispheres from the top down to the corpus callosum (and fully at the frontal and occipital
  poles); the occipital lobes rest on the cerebellum (tentorial CSF gap).
* Cortex: a grey-matter ribbon of thickness ``T = clip(0.05 L, 2, 4)`` voxels (+-20 %) under
  the pial surface, folded by sulci: CSF-filled sheets where a smooth band-pass random field
  crosses zero, sampled at the nearest surface point (so the sheets stand roughly
  perpendicular to the surface and bend a little with depth), ~5 T apart and 1.3–2.3 T deep,
  wider at the surface. On coarse grids (T clipped at 2 voxels, size < ~90) sulci are sparser
  and shallower so that white matter keeps a plausible share.
* White matter inside; lateral ventricles (two arched, horn-shaped tubes indented by the
  caudate heads, diverging posteriorly, random size), a slit-like third ventricle; deep grey
  nuclei (caudate, thalamus, putamen) with intensities between GM and WM.
* Cerebellum (posterior-inferior, with radial folia and a vermian notch) and a brainstem
  (with middle cerebellar peduncles and an anterior pontine bulge), cut flat at the bottom like
  skull-stripped data.
* A thin external CSF layer (~1 voxel) between the pial surface and the (absent) skull.
* Tumour in one hemisphere at a random position in the white matter: an irregular core
  (radius 0.12–0.22 L, at least 3.5 voxels) made of a necrotic centre, an enhancing rim
  (>= 1.8 voxels) and a non-enhancing sector with a bulge, surrounded by an irregular oedema halo
  (1.5–2.2x the core radius) that spreads only through white matter and deep grey matter, so
  it is finger-like, spares the cortex and may cross the corpus callosum.

Targets (checked by the tests): brain mask 10–25 % of the grid voxels (BraTS: ~17 %); brain
extent 50–92 % of the grid on every axis, with a background border on every side; of the
intracranial volume at size 64 (96 and up): CSF 12–32 % (10–28 %), GM 38–62 % (35–58 %), WM
12–38 % (15–40 %), tumour 0.3–35 %. GM is large and WM small compared with a real adult brain
(~45 / 35 %) because the cortex is at least two voxels thick on a small grid. Cortical ribbon
1.3–4 voxels thick (volume / half its surface). At sizes below ~48 the smallest structures (deep
grey nuclei, ventricles) can vanish from the hard label maps; every tissue and tumour class is
always present.

Tissue map (:attr:`Phantom.tissue`): 0 background, 1 CSF, 2 GM, 3 WM, 4 necrosis,
5 enhancing tumour, 6 oedema, 7 non-enhancing tumour core. :attr:`Phantom.structure` is the
same phantom in MRBrainS13's 9-class code (1 cortical GM, 2 basal ganglia, 3 WM, 4 lesion
(tumour), 5 external CSF, 6 ventricles, 7 cerebellum, 8 brainstem).

Label conventions (``convention``)
----------------------------------
===========  =================================================================================
brats2017    1 necrosis + non-enhancing core, 2 oedema, 4 enhancing (default)
brats2013    1 necrosis, 2 oedema, 3 non-enhancing core, 4 enhancing
brats2023    1 necrosis + non-enhancing core, 2 oedema, 3 enhancing
msd          1 oedema, 2 necrosis + non-enhancing core, 3 enhancing
mrbrains     1 CSF, 2 GM, 3 WM (tumour counted as WM); cerebellum and brainstem 0, as in the
             MRBrainS13 evaluation labels
mrbrains9    the 9-class structure map above
none         no label (``Phantom.label`` is None, no ``seg`` file)
===========  =================================================================================

The images do not depend on the convention or on which modalities are asked for: every random
draw has its own stream, so ``t1`` of a seed is the same in every call.

Image formation
---------------
Tissue *fractions* are computed from approximate signed distances with a one-voxel linear ramp
(analytic partial volume), each modality's image is the fraction-weighted sum of per-tissue
intensities (with +-4 % random contrast jitter, a 3 % smooth tissue texture, stronger in the
tumour), blurred by a Gaussian PSF (sigma 0.5 voxel), multiplied by a smooth per-modality bias
field (``exp`` of a random quadratic polynomial, 6–12 % standard deviation over the head) and a
random scanner gain (0.8–1.25), and made Rician by taking the magnitude of the image plus
complex Gaussian noise (sigma = mean(GM, WM) / 25..45). Background is the Rayleigh noise floor
(mean ~1.25 sigma, i.e. ~10–20), unless ``background="zero"``. Values are float32 scanner-like
units, roughly 0–1200.

Contrasts (before gain and jitter; the tests check the orderings):

=======  ====  ====  ====  ====  =========  ==========  ======  ===============
image    CSF   GM    WM    deep  necrosis   enhancing   oedema  non-enhancing
=======  ====  ====  ====  ====  =========  ==========  ======  ===============
t1       140   430   640   520   190        430         390     360
t1ce     150   450   650   535   170        1150        400     380
t2       1000  560   400   500   900        620         760     700
flair    70    500   380   450   320        600         850     720
t1_ir    20    380   750   530   60         350         280     300
pd       800   700   600   660   780        680         760     740
=======  ====  ====  ====  ====  =========  ==========  ======  ===============

Determinism: same ``(size, seed)`` gives bit-identical arrays. Case ``i`` of
:func:`write_synthetic_dataset` is ``generate_phantom(size, case_seed(seed, i), ...)``.

Speed (2-core CPU, generation + writing): ~0.3–0.5 s per case at size 64, ~1.5 s at 96, ~3 s at
128, ~30 s at 256.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from m2cofs.data.labels import get_convention
from m2cofs.data.modalities import parse_modality_list
from m2cofs.errors import M2CofsError

__all__ = [
    "Phantom", "generate_phantom", "write_synthetic_dataset", "case_seed", "case_id", "grid_shape",
    "SYNTH_MODALITIES", "DEFAULT_MODALITIES", "TISSUE_NAMES", "MIN_SIZE", "MAX_SIZE",
]

DEFAULT_MODALITIES = ("t1", "t1ce", "t2", "flair")
SYNTH_MODALITIES = ("t1", "t1ce", "t2", "flair", "t1_ir", "pd")  # fixed order: one random stream each
MIN_SIZE = 24
MAX_SIZE = 256

# Tissue classes (Phantom.tissue).
BG, CSF, GM, WM, NCR, ENH, EDEMA, NET = range(8)
TISSUE_NAMES = {BG: "background", CSF: "CSF", GM: "GM", WM: "WM", NCR: "necrosis",
                ENH: "enhancing", EDEMA: "oedema", NET: "non-enhancing core"}

# Components: finer than tissue classes (fraction maps are computed per component).
_C_BG, _C_CSF_EXT, _C_VENT, _C_CORTEX, _C_DEEP, _C_WM, _C_NCR, _C_ENH, _C_ED, _C_NET = range(10)
_N_COMP = 10
_COMP_TISSUE = np.array([BG, CSF, CSF, GM, GM, WM, NCR, ENH, EDEMA, NET], np.uint8)
# MRBrainS13 9-class code per component (cerebellum / brainstem are set from the region map).
_COMP_STRUCT = np.array([0, 5, 6, 1, 2, 3, 4, 4, 4, 4], np.uint8)

# Per-component intensities: bg, csf_ext, vent, cortex, deep GM, WM, necrosis, enhancing, oedema, non-enh.
_CONTRAST = {
    "t1":    (0, 140, 140, 430, 520, 640, 190, 430, 390, 360),
    "t1ce":  (0, 150, 150, 450, 535, 650, 170, 1150, 400, 380),
    "t2":    (0, 1000, 1000, 560, 500, 400, 900, 620, 760, 700),
    "flair": (0, 70, 70, 500, 450, 380, 320, 600, 850, 720),
    "t1_ir": (0, 20, 20, 380, 530, 750, 60, 350, 280, 300),
    "pd":    (0, 800, 800, 700, 660, 600, 780, 680, 760, 740),
}

# Tissue class -> label, per convention (tumour conventions; tissue conventions use the structure map).
_TUMOUR_LUT = {
    "brats2013": {NCR: 1, EDEMA: 2, NET: 3, ENH: 4},
    "brats2017": {NCR: 1, EDEMA: 2, NET: 1, ENH: 4},
    "brats2023": {NCR: 1, EDEMA: 2, NET: 1, ENH: 3},
    "msd":       {NCR: 2, EDEMA: 1, NET: 2, ENH: 3},
}


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


# ----------------------------------------------------------------------------------------------
# small helpers


def grid_shape(size: int) -> tuple[int, int, int]:
    """The grid of a phantom of edge ``size``: ``(size, size, 2*ceil(size/2.4))``."""
    return (int(size), int(size), int(2 * math.ceil(size / 2.4)))


def case_seed(seed: int, index: int) -> int:
    """The phantom seed of case ``index`` of a dataset written with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def case_id(index: int) -> str:
    return f"synth_{index:03d}"


def _pv(d: np.ndarray, vox: float) -> np.ndarray:
    """Fraction inside for a signed distance ``d`` (mm, negative inside): 1-voxel linear ramp."""
    out = np.multiply(d, np.float32(-1.0 / vox), dtype=np.float32)
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _ellipsoid_sdf(x, y, z, a: float, b: float, c: float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid (first-order, good near it)."""
    xn, yn, zn = x / a, y / b, z / c
    rho = np.sqrt(xn * xn + yn * yn + zn * zn)
    grad = np.sqrt((xn / a) ** 2 + (yn / b) ** 2 + (zn / c) ** 2)
    return ((rho - 1.0) * rho / np.maximum(grad, 1e-6)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean, unit standard deviation (float32)."""
    n = rng.standard_normal(shape).astype(np.float32)
    n = ndi.gaussian_filter(n, sigma, mode="wrap")
    n -= n.mean()
    n /= max(float(n.std()), 1e-6)
    return n


def _lowres_noise(rng: np.random.Generator, shape, sigma_vox: float) -> np.ndarray:
    """Smooth noise on ``shape`` with correlation ``sigma_vox`` voxels, made on a coarse grid and
    zoomed (fast for large sigmas). Unit standard deviation."""
    f = max(1, int(sigma_vox // 2))
    small = tuple(max(4, int(math.ceil(s / f)) + 2) for s in shape)
    n = _smooth_noise(rng, small, sigma_vox / f)
    if f == 1:
        out = n[1:shape[0] + 1, 1:shape[1] + 1, 1:shape[2] + 1].copy()
    else:  # sample the coarse field at the fine-grid positions (linear)
        coords = np.meshgrid(*[np.arange(s, dtype=np.float32) / f + 1.0 for s in shape], indexing="ij", sparse=True)
        out = ndi.map_coordinates(n, np.broadcast_arrays(*coords), order=1, mode="nearest").astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


def _harmonics(rng: np.random.Generator, k: int, fmin: float, fmax: float, amp: float):
    """Random smooth function on the unit sphere: sum of k plane waves cos(w.u + phi)."""
    dirs = rng.standard_normal((k, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.uniform(fmin, fmax, size=(k, 1))
    w = (dirs * freqs).astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi, size=k).astype(np.float32)
    a = (rng.standard_normal(k) * amp / math.sqrt(k / 2)).astype(np.float32)

    def f(ux, uy, uz):
        out = np.zeros(np.broadcast_shapes(np.shape(ux), np.shape(uy), np.shape(uz)), np.float32)
        for i in range(k):
            out += a[i] * np.cos(w[i, 0] * ux + w[i, 1] * uy + w[i, 2] * uz + phi[i])
        return out

    return f


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ang = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# ----------------------------------------------------------------------------------------------
# anatomy


class _Anatomy:
    """The drawn geometry of one head; signed-distance functions of local coordinates (mm).

    Local coordinates: origin at the cerebrum centre, x right, y anterior, z superior.
    """

    def __init__(self, rng: np.random.Generator, L: float, vox: float):
        u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        self.L, self.vox = L, vox
        self.a = 0.62 * L * u(0.94, 1.06)
        self.b = 0.77 * L * u(0.95, 1.05)
        self.c = 0.56 * L * u(0.95, 1.05)
        self.shape_h = _harmonics(rng, 10, 1.0, 3.5, 0.035)
        self.widen_back = u(0.04, 0.12)
        self.T = float(np.clip(0.05 * L / vox, 2.0, 4.0)) * vox  # cortical thickness, mm
        self.atrophy = u(0.8, 1.5)  # widens sulci, fissure, ventricles, external CSF
        # fissure
        self.fiss_hw = 0.55 * vox * self.atrophy
        # ventricles (one per side: centre x, size factor)
        vs = u(0.9, 1.4) * (0.85 + 0.15 * self.atrophy)
        self.vent = []
        for s in (-1, 1):
            f = vs * u(0.9, 1.1)
            self.vent.append(dict(s=s, x0=0.10 * L * u(0.9, 1.1), y0=-0.02 * L + u(-0.02, 0.02) * L,
                                  z0=0.04 * L, hl=0.36 * L * u(0.92, 1.08), wx=max(0.07 * L * f, 1.2 * vox),
                                  wz=max(0.065 * L * f, 1.2 * vox), drop=0.07 * L * u(0.8, 1.2),
                                  div=0.05 * L * u(0.6, 1.4)))
        self.vent_top = 0.04 * L + 0.075 * L * vs * 1.1
        self.third = dict(c=(0.0, -0.08 * L, -0.06 * L), r=(max(0.45 * vox, 0.012 * L * vs), 0.10 * L, 0.06 * L))
        cc_thick = max(1.5 * vox, 0.05 * L)
        self.fiss_z0 = self.vent_top + cc_thick + self.T
        # deep grey nuclei: (centre, semi-axes), per side
        def nucleus(cx, cy, cz, rx, ry, rz):  # centre and semi-axes in units of L, jittered
            c = tuple(v * L + u(-0.015, 0.015) * L for v in (cx, cy, cz))
            return c, tuple(v * L * u(0.92, 1.08) for v in (rx, ry, rz))

        self.deep = []
        for s in (-1, 1):
            self.deep += [nucleus(s * 0.16, 0.08, -0.03, 0.055, 0.18, 0.08),  # caudate
                          nucleus(s * 0.08, -0.10, -0.09, 0.075, 0.13, 0.075),  # thalamus
                          nucleus(s * 0.26, 0.04, -0.06, 0.05, 0.15, 0.09)]  # putamen
        # small grids: keep every structure at least about two voxels across
        self.deep = [(c, tuple(max(v, 1.1 * vox) for v in r)) for (c, r) in self.deep]
        self.caudates = [self.deep[0], self.deep[3]]
        # cerebellum
        self.cbl_c = (0.0, -0.42 * L * u(0.95, 1.05), -0.42 * L * u(0.95, 1.05))
        self.cbl_r = (0.45 * L * u(0.92, 1.08), 0.28 * L * u(0.92, 1.08), 0.20 * L * u(0.92, 1.08))
        self.tent_gap = 0.9 * vox
        self.T_cb = max(2.0 * vox, 0.8 * self.T)
        self.folia_phase = u(0, 2 * np.pi)
        # brainstem: capsule from p1 (midbrain) to p2 (below the field of view)
        self.bs_p1 = np.array([0.0, -0.10 * L, -0.10 * L])
        self.bs_p2 = np.array([0.0, -0.06 * L + u(-0.03, 0.03) * L, -1.2 * L])
        self.bs_r = 0.10 * L * u(0.9, 1.1)
        # external CSF thickness
        self.csf_ext = vox * u(0.6, 1.1) * (0.8 + 0.3 * self.atrophy) * float(np.clip(L / 48.0, 0.7, 1.2))
        # temporal lobes (hang below the frontal/parietal hull, lateral to the brainstem),
        # separated from it by the Sylvian fissure
        self.temporal = []
        for s in (-1, 1):
            centre = (s * 0.37 * L * u(0.95, 1.05), -0.04 * L + u(-0.03, 0.03) * L, -0.27 * L * u(0.93, 1.07))
            radii = (0.20 * L * u(0.92, 1.08), 0.42 * L * u(0.92, 1.08), 0.19 * L * u(0.92, 1.08))
            self.temporal.append((centre, radii))
        self.syl_hw = 0.4 * vox * self.atrophy
        self.syl_depth = 0.12 * L * u(0.85, 1.15)
        self.bs_cut = -0.95 * L * u(0.95, 1.05)  # the medulla is cut flat (foramen magnum)

    # --- signed distances (mm, negative inside); x, y, z broadcastable arrays in local mm
    def cerebrum_ellipsoid(self, x, y, z):
        yn = y / self.b
        a = self.a * (1.0 - self.widen_back * yn)
        c = self.c * (0.80 + 0.20 * np.tanh(3.0 * (z / self.c + 0.1)))
        xn, zn = x / a, z / c
        rho = np.sqrt(xn * xn + yn * yn + zn * zn) + 1e-6
        delta = 0.06 * np.tanh(self.shape_h(xn / rho, yn / rho, zn / rho) / 0.06)  # bounded: stays in the grid
        grad = np.sqrt((xn / a) ** 2 + (yn / self.b) ** 2 + (zn / c) ** 2) / rho
        return ((rho - (1.0 + delta)) / np.maximum(grad, 1e-6)).astype(np.float32)

    def fissure(self, x, y, z):
        """Signed distance of the interhemispheric slab (negative inside the fissure)."""
        yn = np.abs(y / self.b)
        zf = self.fiss_z0 - 1.5 * self.c * np.clip((yn - 0.5) / 0.4, 0.0, 1.0) ** 1.5
        ax = np.abs(x) - self.fiss_hw
        az = zf - z
        outside = np.sqrt(np.maximum(ax, 0) ** 2 + np.maximum(az, 0) ** 2)
        return (outside + np.minimum(np.maximum(ax, az), 0)).astype(np.float32)

    def hull(self, x, y, z):
        """Cerebral hull: main ellipsoid and temporal lobes, with the Sylvian clefts."""
        d = self.cerebrum_ellipsoid(x, y, z)
        for (c, r) in self.temporal:
            dt = _ellipsoid_sdf(x - c[0], y - c[1], z - c[2], *r)
            cleft = np.maximum(np.abs(d - dt) * 0.5 - self.syl_hw, -np.maximum(d, dt) - self.syl_depth)
            d = np.maximum(np.minimum(d, dt), -cleft)
        return d

    def cerebrum(self, x, y, z):
        d = np.maximum(self.hull(x, y, z), -self.fissure(x, y, z))
        # the tentorium: the occipital lobes rest on the cerebellum
        return np.maximum(d, -(self.cerebellum_shape(x, y, z) - self.tent_gap))

    def cerebellum_shape(self, x, y, z):
        cx, cy, cz = self.cbl_c
        rx, ry, rz = self.cbl_r
        yy = y - cy
        # posterior midline notch (vermis) between the two hemispheres
        ry_eff = ry * (1.0 - 0.15 * np.exp(-((x / (0.12 * self.L)) ** 2)) * (yy < 0))
        return _ellipsoid_sdf(x - cx, yy, z - cz, rx, ry_eff, rz)

    def cerebellum(self, x, y, z, d_bs):
        # the fourth ventricle / cistern separates it from the brainstem
        return np.maximum(self.cerebellum_shape(x, y, z), -(d_bs - self.tent_gap))

    def brainstem(self, x, y, z):
        p1, p2 = self.bs_p1, self.bs_p2
        v = p2 - p1
        t = ((x - p1[0]) * v[0] + (y - p1[1]) * v[1] + (z - p1[2]) * v[2]) / float(v @ v)
        t = np.clip(t, 0.0, 1.0)
        dx, dy, dz = x - (p1[0] + t * v[0]), y - (p1[1] + t * v[1]), z - (p1[2] + t * v[2])
        # the pons bulges anteriorly
        zz = p1[2] + t * v[2]
        bulge = 0.035 * self.L * np.exp(-(((zz + 0.40 * self.L) / (0.12 * self.L)) ** 2))
        r = self.bs_r + bulge * (dy > 0)
        d = np.sqrt(dx * dx + dy * dy + dz * dz) - r
        # middle cerebellar peduncles: short tubes from the pons into each cerebellar hemisphere
        for s in (-1, 1):
            q1 = np.array([s * 0.05 * self.L, -0.12 * self.L, -0.40 * self.L])
            q2 = np.array([s * 0.22 * self.L, -0.30 * self.L, -0.40 * self.L])
            w = q2 - q1
            tt = np.clip(((x - q1[0]) * w[0] + (y - q1[1]) * w[1] + (z - q1[2]) * w[2]) / float(w @ w), 0.0, 1.0)
            dp = np.sqrt((x - q1[0] - tt * w[0]) ** 2 + (y - q1[1] - tt * w[1]) ** 2 + (z - q1[2] - tt * w[2]) ** 2)
            d = np.minimum(d, dp - 0.06 * self.L)
        return np.maximum(d, self.bs_cut - z).astype(np.float32)

    def ventricles(self, x, y, z):
        d = None
        for v in self.vent:
            yr = y - v["y0"]
            t = yr / v["hl"]
            xc = v["s"] * (v["x0"] - v["div"] * t)  # diverge posteriorly (t < 0)
            zc = v["z0"] - v["drop"] * t * t
            # frontal horn larger; wider at the roof than at the floor (triangular in coronal slices)
            # and tilted so that the lateral angle points down (horn-like in coronal slices)
            zr = z - zc + 0.45 * v["s"] * (x - xc)
            wx = v["wx"] * (1.0 + 0.25 * t) * (1.0 + 0.45 * np.clip(zr / v["wz"], -1.0, 1.0))
            di = _ellipsoid_sdf(x - xc, yr, zr, wx, v["hl"], v["wz"])
            d = di if d is None else np.minimum(d, di)
        (cx, cy, cz), (rx, ry, rz) = self.third["c"], self.third["r"]
        d = np.minimum(d, _ellipsoid_sdf(x - cx, y - cy, z - cz, rx, ry, rz))
        # the caudate heads indent the lateral ventricles (crescent in coronal slices)
        for (c, r) in self.caudates:
            d = np.maximum(d, -_ellipsoid_sdf(x - c[0], y - c[1], z - c[2], *r))
        return d

    def deep_gm(self, x, y, z):
        d = None
        for (c, r) in self.deep:
            di = _ellipsoid_sdf(x - c[0], y - c[1], z - c[2], *r)
            d = di if d is None else np.minimum(d, di)
        return d


def _tumour_params(rng: np.random.Generator, an: _Anatomy) -> dict:
    """Draw a tumour centre (local mm) inside one hemisphere's white matter, and its radii."""
    L, vox = an.L, an.vox
    side = 1 if rng.random() < 0.5 else -1
    best = None
    for attempt in range(400):
        # small grids: shrink the draw, then tolerate tumours closer to cortex / ventricles / midline
        shrink = 1.0 if attempt < 100 else (0.75 if attempt < 200 else 0.5)
        tol = 0.0 if attempt < 150 else 0.25 * vox * (attempt - 150) / 25
        rc_ = max(3.5 * vox, rng.uniform(0.12, 0.22) * L * shrink)
        p_ = np.array([side * rng.uniform(0.15, 0.55) * an.a,
                       rng.uniform(-0.6, 0.6) * an.b,
                       rng.uniform(-0.2, 0.55) * an.c], np.float32)
        x, y, z = (np.array([v], np.float32) for v in p_)
        margin = min(-float(an.cerebrum(x, y, z)[0]) - (an.T + 0.7 * rc_ + vox),  # inside, below the cortex
                     float(an.ventricles(x, y, z)[0]) - 0.45 * rc_,  # off the ventricles
                     abs(float(p_[0])) - (an.fiss_hw + 0.6 * rc_))  # off the midline
        if best is None or margin > best[0]:
            best = (margin, rc_, p_)
        if margin >= -tol:
            break
    _, rc, p = best
    rim = max(1.8 * vox, rng.uniform(0.25, 0.4) * rc)
    return dict(
        side=side, centre=p, rc=rc, rim=rim,
        nec_offset=(rng.standard_normal(3) * 0.15 * (rc - rim)).astype(np.float32),
        ro=max(rc + 1.5 * vox, min(rc * rng.uniform(1.5, 2.2), rc + 0.4 * an.a)),
        net_dir=(lambda v: v / np.linalg.norm(v))(rng.standard_normal(3)).astype(np.float32),
        shape_core=_harmonics(rng, 8, 1.0, 3.0, 0.12),
        shape_oed=_harmonics(rng, 10, 1.0, 4.0, 0.22),
    )


# ----------------------------------------------------------------------------------------------
# the phantom


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


def generate_phantom(size: int = 64, seed: int = 0, modalities: Sequence[str] = DEFAULT_MODALITIES,
                     convention: str = "brats2017", background: str = "noise") -> Phantom:
    """Build one brain-like multi-modal phantom (see the module docstring).

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

    an = _Anatomy(rng, L, vox)

    # local coordinates of every voxel: q = R^T (w - origin), w = affine @ idx
    axes_w = [affine[a, a] * np.arange(shape[a], dtype=np.float64) + affine[a, 3] - origin[a] for a in range(3)]
    q = []
    for r in range(3):
        comp = [(rot[a, r] * axes_w[a]).astype(np.float32).reshape([-1 if i == a else 1 for i in range(3)])
                for a in range(3)]
        q.append((comp[0] + comp[1] + comp[2]).astype(np.float32))
    x, y, z = q

    # --- big structures
    d_cer = an.cerebrum(x, y, z)
    d_bs = an.brainstem(x, y, z)
    d_cbl = an.cerebellum(x, y, z, d_bs)
    d_brain = np.minimum(np.minimum(d_cer, d_cbl), d_bs)
    in_cbl = d_cbl < d_cer

    # --- sulci: CSF sheets where a smooth band-pass random field crosses zero, sampled at the
    # nearest pial-surface point (so the sheets are roughly perpendicular to the surface, tilted
    # by KAPPA), down to a random depth; the cerebellum gets radial folia instead.
    frng = np.random.default_rng(s_fold)
    T = an.T
    KAPPA = 0.3
    # On coarse grids the ribbon is relatively thick (T is at least 2 voxels): there, fold less
    # (sparser, shallower sulci) so that white matter keeps a plausible share.
    fine = float(np.clip(0.05 * L / T, 0.0, 1.0))  # 1 when T is not clipped (size >= ~90)
    period = (5.0 + 1.5 * (1.0 - fine) / 0.35) * T  # sulcus-to-sulcus distance on the surface, mm
    depth_f = 1.8 - 0.4 * (1.0 - fine) / 0.35
    d_s = ndi.gaussian_filter(d_brain, 1.5)
    g = np.gradient(d_s, *spacing)
    del d_s
    gn = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2) + np.float32(1e-6)
    step = -(1.0 - KAPPA) * np.minimum(d_brain, 0.0) / gn  # move outwards by |d| (mm)
    del gn
    # noise volume on a coarser grid (2 mm-ish cells) covering the image grid
    f = max(1.0, period / 8.0 / vox)
    nshape = tuple(int(math.ceil(n / f)) + 3 for n in shape)
    sig = (period / 4.0) / (f * vox)
    w = frng.standard_normal(nshape).astype(np.float32)
    fold_vol = ndi.gaussian_filter(w, sig, mode="wrap") - ndi.gaussian_filter(w, 2.0 * sig, mode="wrap")
    fold_vol /= max(float(fold_vol.std()), 1e-6)
    depth_vol = ndi.gaussian_filter(frng.standard_normal(nshape).astype(np.float32), 2.0 * sig, mode="wrap")
    depth_vol /= max(float(depth_vol.std()), 1e-6)
    del w
    coords = []
    for ax in range(3):
        idx = np.arange(shape[ax], dtype=np.float32).reshape([-1 if i == ax else 1 for i in range(3)])
        coords.append((idx + step * g[ax] / np.float32(spacing[ax])) / np.float32(f) + 1.0)
    del g, step
    coords = np.broadcast_arrays(*coords)
    fold = ndi.map_coordinates(fold_vol, coords, order=1, mode="nearest").astype(np.float32)
    depthn = ndi.map_coordinates(depth_vol, coords, order=1, mode="nearest").astype(np.float32)
    del coords, fold_vol, depth_vol
    g = np.gradient(fold, *spacing)
    gmag = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    del g
    dist0 = np.abs(fold) / np.maximum(gmag, np.float32(1e-3 / vox))
    del fold, gmag
    # cerebellum: radial folia in the sagittal plane around a focus in front of the cerebellum
    fy = an.cbl_c[1] + 0.6 * an.cbl_r[1]
    fz = an.cbl_c[2] + 0.1 * an.cbl_r[2]
    ry, rz = y - np.float32(fy), z - np.float32(fz)
    rr = np.sqrt(ry * ry + rz * rz) + np.float32(1e-3)
    theta = np.arctan2(rz, -ry) + np.float32(0.08) * np.sin(x * np.float32(2 * np.pi / (0.5 * an.cbl_r[0])))
    r_typ = 1.3 * an.cbl_r[1]
    dtheta = (3.2 * an.T_cb) / r_typ
    ph = (theta - an.folia_phase) / dtheta
    dist_cb = (np.abs(ph - np.round(ph)) * dtheta * rr).astype(np.float32)
    del ry, rz, rr, theta, ph
    dist0 = np.where(in_cbl, dist_cb, dist0)
    del dist_cb
    # depth 1.6..2.8 T (cerebellum 2.2 T); half width larger at the surface
    depth = np.float32(T) * (depth_f + 0.5 * np.clip(depthn, -1, 1))
    depth = np.where(in_cbl, np.float32(2.2 * an.T_cb), depth)
    del depthn
    rel = np.clip(1.0 + d_brain / depth, 0.0, 1.0)  # 1 at the surface, 0 at the sulcal fundus
    half_w = np.float32(0.18 * vox * an.atrophy) * (1.0 + 1.5 * rel * rel)
    sdf_sulc = np.maximum(dist0 - half_w, -d_brain - depth)
    sdf_sulc = np.maximum(sdf_sulc, -d_bs)  # no sulci in the brainstem
    del dist0, rel, half_w
    d_par = np.maximum(d_brain, -sdf_sulc)
    del sdf_sulc

    # cortical thickness varies smoothly (+-20 %)
    trng = np.random.default_rng(s_tex)
    tex_thick = _lowres_noise(trng, shape, 6.0)
    T_loc = np.where(in_cbl, np.float32(an.T_cb), np.float32(T)) * (1.0 + 0.12 * np.clip(tex_thick, -1.7, 1.7))
    del tex_thick

    # --- fractions
    csf_t = np.float32(an.csf_ext) * (1.0 + 0.35 * np.clip(_lowres_noise(trng, shape, 5.0), -1.5, 1.5))
    f_icv = _pv(d_brain - csf_t, vox)
    del csf_t
    f_par = np.minimum(_pv(d_par, vox), f_icv)
    f_bs = _pv(d_bs, vox)
    f_inner = np.minimum(np.maximum(_pv(d_par + T_loc, vox), f_bs), f_par)
    del T_loc
    d_vent = an.ventricles(x, y, z)
    d_deep = an.deep_gm(x, y, z)
    f_vent = _pv(d_vent, vox) * f_inner
    f_deep = _pv(d_deep, vox) * (f_inner - f_vent)
    f_wm = f_inner - f_vent - f_deep
    f_cortex = f_par - f_inner
    f_csf = f_icv - f_par

    # --- tumour
    tr = _tumour_params(np.random.default_rng(s_tum), an)
    c = tr["centre"]
    tx, ty, tz = x - c[0], y - c[1], z - c[2]
    tdist = np.sqrt(tx * tx + ty * ty + tz * tz) + np.float32(1e-3)
    ux, uy, uz = tx / tdist, ty / tdist, tz / tdist
    core_shape = 1.0 + tr["shape_core"](ux, uy, uz)
    lump = _lowres_noise(trng, shape, max(1.5, 0.35 * tr["rc"] / vox))
    d_tum = tdist - np.float32(tr["rc"]) * core_shape + np.float32(0.12 * tr["rc"]) * lump
    no = tr["nec_offset"]
    ndist = np.sqrt((tx - no[0]) ** 2 + (ty - no[1]) ** 2 + (tz - no[2]) ** 2)
    rn = tr["rc"] - tr["rim"]
    d_nec = ndist - np.float32(rn) * core_shape + np.float32(0.10 * rn) * lump
    d_nec = np.maximum(d_nec, d_tum + np.float32(0.6 * tr["rim"]))  # keep a rim everywhere
    nd = tr["net_dir"]
    cosang = ux * nd[0] + uy * nd[1] + uz * nd[2]
    lob_c = nd * np.float32(0.9 * tr["rc"])
    d_lob = np.sqrt((tx - lob_c[0]) ** 2 + (ty - lob_c[1]) ** 2 + (tz - lob_c[2]) ** 2) - np.float32(0.55 * tr["rc"])
    d_tum_all = np.minimum(d_tum, d_lob)
    oed_shape = 1.0 + tr["shape_oed"](ux, uy, uz)
    d_oed = tdist - np.float32(tr["ro"]) * oed_shape + np.float32(0.25 * tr["ro"]) * _lowres_noise(
        trng, shape, max(1.5, 0.25 * tr["ro"] / vox))
    del tx, ty, tz, ux, uy, uz, ndist, core_shape, oed_shape, lump, tdist

    f_tum = np.minimum(_pv(d_tum_all, vox), f_icv)
    f_nec = np.minimum(_pv(d_nec, vox), f_tum)
    f_solid = f_tum - f_nec
    net_share = np.clip((cosang - 0.3) / 0.15, 0.0, 1.0)
    net_share = np.maximum(net_share, np.clip(_pv(d_lob, vox) - _pv(d_tum, vox), 0.0, 1.0))
    f_net = f_solid * net_share
    f_enh = f_solid - f_net
    keep = 1.0 - f_tum
    f_csf *= keep
    f_vent *= keep
    f_cortex *= keep
    f_deep *= keep
    f_wm *= keep
    p_oed = _pv(d_oed, vox)
    f_ed = p_oed * (f_wm + f_deep)
    f_wm *= 1.0 - p_oed
    f_deep *= 1.0 - p_oed
    del cosang, net_share, keep, p_oed, d_tum, d_nec, d_lob, d_tum_all, d_oed, f_solid
    f_bg = 1.0 - f_icv

    fracs = np.stack([f_bg, f_csf, f_vent, f_cortex, f_deep, f_wm, f_nec, f_enh, f_ed, f_net]).astype(np.float32)
    del f_bg, f_csf, f_vent, f_cortex, f_deep, f_wm, f_nec, f_enh, f_ed, f_net, f_par, f_inner, f_icv
    np.clip(fracs, 0.0, 1.0, out=fracs)
    comp = np.argmax(fracs, axis=0).astype(np.uint8)
    tissue = _COMP_TISSUE[comp]
    brainmask = tissue > 0
    structure = _COMP_STRUCT[comp]
    # cerebellum (its GM/WM) and brainstem (outside the cerebrum) from the region maps
    region_bs = (d_bs < 0) & (d_cer > 0)
    region_cbl = in_cbl & ~region_bs & (d_cbl < 0.5 * vox)
    structure[region_cbl & np.isin(comp, (_C_CORTEX, _C_WM, _C_DEEP))] = 7
    structure[region_bs & np.isin(comp, (_C_CORTEX, _C_WM, _C_DEEP))] = 8
    del d_cer, d_cbl, d_bs, d_brain, d_par, in_cbl, d_vent, d_deep, region_bs, region_cbl

    # --- images
    texture = _lowres_noise(trng, shape, 1.5)
    tumour_w = fracs[_C_NCR] + fracs[_C_ENH] + fracs[_C_ED] + fracs[_C_NET]
    tex_gain = (1.0 + (0.03 + 0.05 * tumour_w) * np.clip(texture, -3, 3)).astype(np.float32)
    del texture, tumour_w
    # normalised coordinates for the bias polynomial (grid-centred)
    grid_c = [((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) / (n / 2.0)) for n in shape]
    gx, gy, gz = (grid_c[a].reshape([-1 if i == a else 1 for i in range(3)]) for a in range(3))
    images: dict[str, np.ndarray] = {}
    biases: dict[str, np.ndarray] = {}
    mod_meta: dict[str, dict] = {}
    for m, s_m in zip(SYNTH_MODALITIES, s_mod):
        mrng = np.random.default_rng(s_m)
        jitter = mrng.uniform(0.96, 1.04, size=_N_COMP)
        mu = (np.asarray(_CONTRAST[m], np.float64) * jitter).astype(np.float32)
        gain = float(np.exp(mrng.uniform(np.log(0.8), np.log(1.25))))
        coef = mrng.standard_normal(9)
        bias_sd = float(mrng.uniform(0.06, 0.12))
        snr = float(mrng.uniform(25, 45))
        if m not in mods:
            continue
        terms = [gx, gy, gz, gx * gx - 1 / 3, gy * gy - 1 / 3, gz * gz - 1 / 3, gx * gy, gx * gz, gy * gz]
        poly = np.zeros(shape, np.float32)
        for cf, t in zip(coef, terms):
            poly += np.float32(cf) * t
        inside = poly[brainmask]
        poly -= inside.mean()
        poly *= np.float32(bias_sd / max(float(inside.std()), 1e-6))
        bias = np.exp(poly).astype(np.float32)
        del poly
        clean = np.tensordot(mu, fracs, axes=(0, 0)).astype(np.float32)
        clean *= tex_gain
        clean = ndi.gaussian_filter(clean, 0.5)
        clean *= bias
        clean *= np.float32(gain)
        sigma = np.float32(gain * 0.5 * (mu[_C_CORTEX] + mu[_C_WM]) / snr)
        n1 = mrng.standard_normal(shape, dtype=np.float32)
        n2 = mrng.standard_normal(shape, dtype=np.float32)
        clean += sigma * n1
        n2 *= sigma
        img = np.sqrt(clean * clean + n2 * n2).astype(np.float32)
        if background == "zero":
            img[~ndi.binary_dilation(brainmask, iterations=1)] = 0.0
        images[m] = img
        biases[m] = bias
        mod_meta[m] = dict(gain=gain, noise_sigma=float(sigma), bias_sd=bias_sd, snr=snr)

    label = _make_label(tissue, structure, convention)
    inv = np.linalg.inv(affine)
    centre_world = origin + rot @ tr["centre"].astype(np.float64)
    meta = dict(
        size=size, shape=shape, spacing=spacing, cortex_thickness_mm=T, voxel_mm=vox,
        tumour_side="right" if tr["side"] > 0 else "left",
        tumour_centre_voxel=tuple(float(v) for v in (inv[:3, :3] @ centre_world + inv[:3, 3])),
        tumour_core_radius_mm=float(tr["rc"]), tumour_rim_mm=float(tr["rim"]),
        oedema_radius_mm=float(tr["ro"]), modalities=mod_meta,
    )
    return Phantom(images={m: images[m] for m in mods}, label=label, tissue=tissue, brainmask=brainmask,
                   affine=affine, spacing=spacing, structure=structure,
                   bias={m: biases[m] for m in mods}, convention=convention, seed=int(seed), meta=meta)


def _make_label(tissue: np.ndarray, structure: np.ndarray, convention: str) -> np.ndarray | None:
    if convention == "none":
        return None
    if convention == "mrbrains9":
        return structure.copy()
    if convention == "mrbrains":
        s2t = np.array([0, 2, 2, 3, 3, 1, 1, 0, 0], np.uint8)  # structure code -> CSF/GM/WM (7, 8 -> 0)
        return s2t[structure]
    lut = np.zeros(8, np.uint8)
    for cls, value in _TUMOUR_LUT[convention].items():
        lut[cls] = value
    return lut[tissue]


# ----------------------------------------------------------------------------------------------
# writing


def write_synthetic_dataset(out: str | Path, cases: int = 4, size: int = 64, seed: int = 0,
                            modalities: Sequence[str] = DEFAULT_MODALITIES, convention: str = "brats2017",
                            progress: bool = False, overwrite: bool = False,
                            background: str = "noise") -> list[Path]:
    """Write ``cases`` phantoms to ``out`` in the BraTS-2021 layout; return the case folders.

    Each case folder ``out/synth_NNN`` holds ``synth_NNN_<modality>.nii.gz`` (float32),
    ``synth_NNN_seg.nii.gz`` (uint8, not for ``convention="none"``) and
    ``synth_NNN_brainmask.nii.gz`` (uint8). Files are written atomically. Refuses (with
    :class:`M2CofsError`) to replace an existing case folder unless ``overwrite=True``.
    """
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise M2CofsError(f"--cases must be a positive integer, got {cases!r}")
    mods, convention = _check_args(size, seed, modalities, convention)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise M2CofsError("exists and is not a folder", out)
    ids = [case_id(i) for i in range(int(cases))]
    for cid in ids:
        if (out / cid).exists() and not (out / cid).is_dir():
            raise M2CofsError("exists and is not a case folder", out / cid)
    if out.is_dir() and not overwrite:
        clash = [cid for cid in ids if (out / cid).is_dir() and any((out / cid).iterdir())]
        if clash:
            more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
            raise M2CofsError(f"already contains case {clash[0]}{more}; use --overwrite to replace", out)
    from m2cofs.io import save_nifti

    folders: list[Path] = []
    for i, cid in enumerate(ids):
        t0 = time.perf_counter()
        ph = generate_phantom(size, case_seed(seed, i), mods, convention, background=background)
        folder = out / cid
        folder.mkdir(parents=True, exist_ok=True)
        written = set()
        for m, img in ph.images.items():
            save_nifti(folder / f"{cid}_{m}.nii.gz", img, ph.affine, dtype=np.float32)
            written.add(m)
        if ph.label is not None:
            save_nifti(folder / f"{cid}_seg.nii.gz", ph.label, ph.affine, dtype=np.uint8)
            written.add("seg")
        save_nifti(folder / f"{cid}_brainmask.nii.gz", ph.brainmask.astype(np.uint8), ph.affine, dtype=np.uint8)
        written.add("brainmask")
        # overwrite: drop this writer's files that the new case does not have (e.g. an old seg)
        for part in (*SYNTH_MODALITIES, "seg", "brainmask"):
            if part not in written:
                (folder / f"{cid}_{part}.nii.gz").unlink(missing_ok=True)
        folders.append(folder)
        if progress:
            print(f"{cid}: {ph.shape[0]}x{ph.shape[1]}x{ph.shape[2]} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)
    return folders
