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

# The package: classes (tissue classes, components, label maps by convention), fields (partial
# volume, ellipsoid distance, smooth random fields), anatomy (the head's geometry), folding
# (sulci and folia), tumour, contrast (image formation), phantom (Phantom, generate_phantom)
# and writer (write_synthetic_dataset). Every name below was importable from the one module
# m2cofs.synthetic was before it became a package, and still is.

from m2cofs.synthetic.anatomy import _Anatomy
from m2cofs.synthetic.classes import (
    _C_BG,
    _C_CORTEX,
    _C_CSF_EXT,
    _C_DEEP,
    _C_ED,
    _C_ENH,
    _C_NCR,
    _C_NET,
    _C_VENT,
    _C_WM,
    _COMP_STRUCT,
    _COMP_TISSUE,
    _N_COMP,
    _TUMOUR_LUT,
    BG,
    CSF,
    EDEMA,
    ENH,
    GM,
    NCR,
    NET,
    TISSUE_NAMES,
    WM,
    _make_label,
)
from m2cofs.synthetic.contrast import _CONTRAST, DEFAULT_MODALITIES, SYNTH_MODALITIES
from m2cofs.synthetic.fields import _ellipsoid_sdf, _harmonics, _lowres_noise, _pv, _rotation, _smooth_noise
from m2cofs.synthetic.phantom import MAX_SIZE, MIN_SIZE, Phantom, _check_args, generate_phantom, grid_shape
from m2cofs.synthetic.tumour import _tumour_params
from m2cofs.synthetic.writer import case_id, case_seed, write_synthetic_dataset

__all__ = [
    "Phantom", "generate_phantom", "write_synthetic_dataset", "case_seed", "case_id", "grid_shape",
    "SYNTH_MODALITIES", "DEFAULT_MODALITIES", "TISSUE_NAMES", "MIN_SIZE", "MAX_SIZE",
]
