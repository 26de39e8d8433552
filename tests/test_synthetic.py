"""Synthetic brain phantoms: determinism, anatomy, MRI contrasts, labels, files and errors."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from m2cofs.data.labels import CONVENTIONS, labels_to_regions
from m2cofs.errors import M2CofsError
from m2cofs.synthetic import (
    CSF,
    EDEMA,
    ENH,
    GM,
    NCR,
    NET,
    SYNTH_MODALITIES,
    WM,
    case_seed,
    generate_phantom,
    grid_shape,
    write_synthetic_dataset,
)

MODS = ("t1", "t1ce", "t2", "flair")


@pytest.fixture(scope="module")
def ph64():
    return generate_phantom(64, seed=3, modalities=MODS, convention="brats2013")


@pytest.fixture(scope="module")
def ph96():
    return generate_phantom(96, seed=1, modalities=MODS, convention="mrbrains9")


def _pure(tissue: np.ndarray, cls: int, min_voxels: int = 30) -> np.ndarray:
    """Voxels of ``cls`` away from partial volume (eroded once, unless too little is left)."""
    m = tissue == cls
    e = ndi.binary_erosion(m)
    return e if e.sum() >= min_voxels else m


def _means(ph, mod: str) -> dict[int, float]:
    img = ph.images[mod]
    return {k: float(img[_pure(ph.tissue, k)].mean()) for k in (CSF, GM, WM, NCR, ENH, EDEMA, NET)}


# --- determinism and variation ------------------------------------------------------------------


def test_same_seed_is_bit_identical():
    a = generate_phantom(48, seed=7)
    b = generate_phantom(48, seed=7)
    for m in MODS:
        assert a.images[m].dtype == np.float32
        assert np.array_equal(a.images[m], b.images[m])
    assert np.array_equal(a.label, b.label) and np.array_equal(a.tissue, b.tissue)
    assert np.array_equal(a.affine, b.affine) and a.spacing == b.spacing


def test_images_do_not_depend_on_modality_subset_or_convention():
    full = generate_phantom(40, seed=2, modalities=MODS, convention="brats2017")
    one = generate_phantom(40, seed=2, modalities=("FLAIR",), convention="mrbrains")
    assert list(one.images) == ["flair"]
    assert np.array_equal(full.images["flair"], one.images["flair"])
    assert np.array_equal(full.tissue, one.tissue)


# The phantom of (32, seed 0) as it has been since the phantoms were written (checked bit for bit
# when synthetic.py became a package, #17): pure random draws to ~1e-12, drawn geometry to 1e-9,
# voxel counts and image means loosely enough to survive last-bit differences between platforms,
# tightly enough that any reordered draw, stream or formula fails.
_PINNED_32_0 = dict(
    spacing=(1.044293755288288, 1.044293755288288, 1.1779604582862597),
    centre=(17.681893698414108, 13.26896509780538, 17.933290892022285),
    radii=(3.8047553447800624, 1.9567313201726038, 6.8728541852686575),  # core, rim, oedema (mm)
    draws={"t1": (0.9618657637367168, 0.11872610388896893, 36.08931974933476),  # gain, bias_sd, snr
           "t1ce": (1.0633392697505084, 0.108864228333304, 36.13299405731452),
           "t2": (0.8958901236767546, 0.08320628583051684, 32.41224105153266),
           "flair": (0.8858923028915999, 0.06856543806318477, 40.75959782430594),
           "t1_ir": (0.8011581354136034, 0.09784128546150966, 31.134644460442647),
           "pd": (0.9779011555231235, 0.06980669793472404, 38.50715994158264)},
    tissue=(25471, 980, 1772, 88, 19, 142, 129, 71),
    structure=(25471, 1627, 0, 43, 361, 971, 9, 145, 45),
    means={"t1": 52.78954312589355, "t1ce": 65.169245581008, "t2": 84.24893439867586,
           "flair": 47.93397441552536, "t1_ir": 41.09112422144712, "pd": 101.10363740259137},
)


def test_phantom_is_unchanged():
    ref = _PINNED_32_0
    ph = generate_phantom(32, seed=0, modalities=SYNTH_MODALITIES, convention="brats2013")
    m = ph.meta
    assert ph.spacing == pytest.approx(ref["spacing"], rel=1e-12)
    assert m["tumour_side"] == "left"
    assert m["tumour_centre_voxel"] == pytest.approx(ref["centre"], rel=1e-9)
    radii = (m["tumour_core_radius_mm"], m["tumour_rim_mm"], m["oedema_radius_mm"])
    assert radii == pytest.approx(ref["radii"], rel=1e-9)
    for mod, draws in ref["draws"].items():
        got = m["modalities"][mod]
        assert (got["gain"], got["bias_sd"], got["snr"]) == pytest.approx(draws, rel=1e-12), mod
    for got, want in ((ph.tissue, ref["tissue"]), (ph.structure, ref["structure"])):
        counts = np.bincount(got.ravel(), minlength=len(want))
        assert np.all(np.abs(counts - np.array(want)) <= 2), (counts.tolist(), want)
    assert np.array_equal(ph.label, np.array([0, 0, 0, 0, 1, 4, 2, 3], np.uint8)[ph.tissue])  # brats2013
    for mod, mean in ref["means"].items():
        assert float(ph.images[mod].astype(np.float64).mean()) == pytest.approx(mean, rel=1e-5), mod


def test_package_keeps_the_module_names():
    import m2cofs.synthetic as synthetic

    names = ("Phantom generate_phantom write_synthetic_dataset case_seed case_id grid_shape SYNTH_MODALITIES "
             "DEFAULT_MODALITIES TISSUE_NAMES MIN_SIZE MAX_SIZE BG CSF GM WM NCR ENH EDEMA NET _N_COMP "
             "_COMP_TISSUE _COMP_STRUCT _CONTRAST _TUMOUR_LUT _Anatomy _tumour_params _check_args _make_label "
             "_pv _ellipsoid_sdf _smooth_noise _lowres_noise _harmonics _rotation").split()
    assert [n for n in names if not hasattr(synthetic, n)] == []
    assert set(synthetic.__all__) <= set(names)


def test_different_seeds_and_cases_give_different_layouts():
    seeds = [case_seed(0, i) for i in range(3)] + [case_seed(1, 0)]
    assert len(set(seeds)) == 4
    phs = [generate_phantom(64, s, modalities=("t1",)) for s in seeds]
    centres = [np.array(p.meta["tumour_centre_voxel"]) for p in phs]
    for i in range(len(phs)):
        for j in range(i + 1, len(phs)):
            a, b = phs[i], phs[j]
            assert not np.array_equal(a.tissue, b.tissue)
            # the brains themselves differ (shape, size), not only the noise or the tumour
            inter = np.logical_and(a.brainmask, b.brainmask).sum()
            dice = 2 * inter / (a.brainmask.sum() + b.brainmask.sum())
            assert dice < 0.99
            assert np.linalg.norm(centres[i] - centres[j]) > 1.0 or a.meta["tumour_side"] != b.meta["tumour_side"]
            assert a.meta["tumour_core_radius_mm"] != b.meta["tumour_core_radius_mm"]
            assert a.spacing != b.spacing
    spread = np.ptp(np.array(centres), axis=0)
    assert spread.max() > 5  # tumours land in different places, not in one 'best' spot


# --- grid, affine, anatomy ----------------------------------------------------------------------


def test_grid_and_affine(ph64):
    assert grid_shape(64) == (64, 64, 54) and grid_shape(96) == (96, 96, 80)
    assert ph64.shape == (64, 64, 54)
    for img in ph64.images.values():
        assert img.shape == ph64.shape
    sx, sy, sz = ph64.spacing
    assert sx == sy and 0.94 < sx < 1.06 and 1.12 < sz < 1.27 and sx != 1.0
    assert np.allclose(np.abs(np.diag(ph64.affine)[:3]), ph64.spacing)
    assert nib.aff2axcodes(ph64.affine) == ("L", "P", "S")  # like BraTS
    assert np.abs(ph64.affine[:3, 3]).max() > 1.0  # a real origin, not 0


def test_brain_size_and_border(ph64, ph96):
    for ph in (ph64, ph96):
        frac = ph.brainmask.mean()
        assert 0.10 < frac < 0.25, frac
        idx = np.argwhere(ph.brainmask)
        lo, hi = idx.min(0), idx.max(0)
        extent = (hi - lo + 1) / np.array(ph.shape)
        assert np.all(extent > 0.5) and np.all(extent < 0.92), extent
        assert np.all(lo >= 1) and np.all(hi <= np.array(ph.shape) - 2)  # background border


@pytest.mark.parametrize("which,limits", [
    ("ph64", dict(csf=(0.12, 0.32), gm=(0.38, 0.62), wm=(0.12, 0.38))),
    ("ph96", dict(csf=(0.10, 0.28), gm=(0.35, 0.58), wm=(0.15, 0.40))),
])
def test_tissue_volumes_plausible(which, limits, request):
    ph = request.getfixturevalue(which)
    icv = ph.brainmask.sum()
    got = {"csf": (ph.tissue == CSF).sum() / icv, "gm": (ph.tissue == GM).sum() / icv,
           "wm": (ph.tissue == WM).sum() / icv}
    for k, (lo, hi) in limits.items():
        assert lo < got[k] < hi, (k, got)
    tumour = np.isin(ph.tissue, (NCR, ENH, EDEMA, NET)).sum() / icv
    assert 0.003 < tumour < 0.35


def test_cortical_ribbon_is_a_few_voxels_thick(ph96):
    from skimage import measure

    cortex = ph96.structure == 1
    verts, faces, _, _ = measure.marching_cubes(cortex.astype(np.float32), 0.5)
    thickness = 2 * cortex.sum() / measure.mesh_surface_area(verts, faces)  # volume / half the surface
    assert 1.3 < thickness < 4.0, thickness
    assert 2.0 <= ph96.meta["cortex_thickness_mm"] / ph96.meta["voxel_mm"] <= 4.0


def test_anatomy_has_every_structure(ph96):
    # MRBrainS13 codes: cortex, basal ganglia, WM, lesion, external CSF, ventricles, cerebellum, brainstem
    assert set(np.unique(ph96.structure)) == set(range(9))
    assert set(np.unique(ph96.label)) == set(range(9))  # mrbrains9 label = structure map
    # ventricles are near the centre, external CSF is outside
    cen = np.argwhere(ph96.brainmask).mean(0)
    vent = np.argwhere(ph96.structure == 6).mean(0)
    assert np.linalg.norm((vent - cen) / np.array(ph96.shape)) < 0.15


def test_tumour_in_one_hemisphere(ph64):
    core = np.isin(ph64.tissue, (NCR, ENH, NET))
    c = np.argwhere(core).mean(0)
    t = np.array(ph64.meta["tumour_centre_voxel"])
    assert np.linalg.norm(c - t) < 4
    # the midline of the head: the brain's centre along x (voxel axis 0 points left)
    mid = np.argwhere(ph64.brainmask)[:, 0].mean()
    side = "left" if c[0] > mid else "right"
    assert side == ph64.meta["tumour_side"]


# --- contrasts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ph64", "ph96"])
def test_tissue_contrasts_follow_mri(which, request):
    ph = request.getfixturevalue(which)
    t1, t1ce, t2, flair = (_means(ph, m) for m in MODS)
    assert t1[WM] > t1[GM] > t1[CSF]
    assert t2[CSF] > t2[GM] > t2[WM]
    assert flair[GM] > flair[WM] > flair[CSF]
    # oedema: bright on T2 and FLAIR, slightly dark on T1
    assert flair[EDEMA] > flair[GM] and flair[EDEMA] > flair[WM]
    assert t2[EDEMA] > t2[GM] > t2[WM]
    assert t1[EDEMA] < t1[WM]
    # enhancing tumour: the brightest tissue on T1ce only
    assert all(t1ce[ENH] > t1ce[k] for k in (CSF, GM, WM, NCR, EDEMA, NET))
    assert t1ce[ENH] / t1ce[WM] > 1.3 * (t1[ENH] / t1[WM])
    assert t1[ENH] < t1[WM]
    # necrosis dark on T1ce and bright on T2 (its centre: the rim's glow blurs into small cores)
    ncr = ph.tissue == NCR
    assert np.percentile(ph.images["t1ce"][ncr], 25) < t1ce[GM]
    assert t2[NCR] > t2[GM]


def test_bias_field_and_rician_noise(ph96):
    bm = ph96.brainmask
    wm = _pure(ph96.tissue, WM)
    cen = np.argwhere(bm).mean(0)
    idx = np.argwhere(wm)
    for m, img in ph96.images.items():
        bias = ph96.bias[m]
        assert 0.03 < float(bias[bm].std()) < 0.2  # a real, moderate bias field
        # low frequency: a 2-voxel Gaussian blur barely changes it; a few % per voxel at most
        assert np.abs(bias - ndi.gaussian_filter(bias, 2.0))[bm].max() < 0.01
        assert np.abs(np.diff(bias, axis=0))[bm[1:] & bm[:-1]].max() < 0.04
        vals = img[wm]
        assert vals.std() > 0.02 * vals.mean()  # noise + bias inside pure white matter
        # low-frequency variation: white-matter means differ between octants of the brain
        octant = ((idx - cen) > 0) @ np.array([1, 2, 4])
        means = np.array([vals[octant == o].mean() for o in range(8) if (octant == o).sum() > 20])
        assert means.max() / means.min() > 1.03, (m, means)
        # Rician background: magnitude of complex Gaussian noise -> Rayleigh (mean/std ~ 1.91)
        far = ~ndi.binary_dilation(bm, iterations=3)
        bg = img[far]
        assert bg.min() >= 0 and 0 < bg.mean() < 0.1 * vals.mean()
        assert 1.7 < bg.mean() / bg.std() < 2.15


def test_zero_background_option():
    ph = generate_phantom(32, seed=1, modalities=("t2",), background="zero")
    outside = ~ndi.binary_dilation(ph.brainmask, iterations=1)
    assert (ph.images["t2"][outside] == 0).all() and ph.images["t2"][ph.brainmask].min() > 0


# --- labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("conv", [c for c in CONVENTIONS if c != "none"])
def test_every_label_of_the_convention_is_present(conv):
    spec = CONVENTIONS[conv]
    for seed in (0, 1):
        ph = generate_phantom(48, seed=seed, modalities=("t1",), convention=conv)
        assert ph.label.dtype == np.uint8 and ph.label.shape == ph.shape
        values = set(np.unique(ph.label).tolist())
        assert values == set(spec.values), (conv, seed, values)
        if spec.nested:  # ET ⊂ TC ⊂ WT
            et, tc, wt = labels_to_regions(ph.label, spec).astype(bool)
            assert et.any() and not (et & ~tc).any() and not (tc & ~wt).any() and (wt & ~tc).any()


def test_conventions_agree_with_each_other_and_the_tissue_map():
    labs = {c: generate_phantom(40, seed=4, modalities=("t1",), convention=c) for c in
            ("brats2013", "brats2017", "brats2023", "msd", "mrbrains")}
    t = labs["brats2017"].tissue
    et = {c: labels_to_regions(p.label, CONVENTIONS[c])[0] for c, p in labs.items() if c != "mrbrains"}
    for c in et:
        assert np.array_equal(et[c], (t == ENH).astype(np.uint8))
    assert np.array_equal(labs["brats2013"].label == 3, t == NET)
    mr = labs["mrbrains"].label
    assert (mr[np.isin(t, (NCR, ENH, EDEMA, NET))] == 3).all()  # tumour counted as WM
    assert generate_phantom(32, seed=4, modalities=("t1",), convention="none").label is None


def test_small_grid_still_has_all_tumour_labels():
    for seed in range(3):
        ph = generate_phantom(24, seed=seed, modalities=("t1ce",), convention="brats2013")
        assert set(np.unique(ph.label).tolist()) == {0, 1, 2, 3, 4}
        assert set(np.unique(ph.tissue).tolist()) == set(range(8))


# --- writing ------------------------------------------------------------------------------------


def test_write_dataset_layout_and_reload(tmp_path):
    out = tmp_path / "synth"
    t0 = time.perf_counter()
    folders = write_synthetic_dataset(out, cases=4, size=64, seed=5)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20, elapsed  # a few seconds on a laptop
    assert [f.name for f in folders] == ["synth_000", "synth_001", "synth_002", "synth_003"]
    for i, folder in enumerate(folders):
        cid = folder.name
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(f"{cid}_{k}.nii.gz" for k in (*MODS, "seg", "brainmask"))
        ph = generate_phantom(64, case_seed(5, i), MODS, "brats2017")
        for m in MODS:
            img = nib.load(str(folder / f"{cid}_{m}.nii.gz"))
            assert img.shape == ph.shape
            assert np.allclose(img.affine, ph.affine, atol=1e-5)
            data = np.asanyarray(img.dataobj)
            assert data.dtype == np.float32 and np.array_equal(data, ph.images[m])
        seg = nib.load(str(folder / f"{cid}_seg.nii.gz"))
        assert np.asanyarray(seg.dataobj).dtype == np.uint8
        assert set(np.unique(np.asanyarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}
        assert np.array_equal(np.asanyarray(seg.dataobj), ph.label)
        mask = np.asanyarray(nib.load(str(folder / f"{cid}_brainmask.nii.gz")).dataobj)
        assert np.array_equal(mask.astype(bool), ph.brainmask)
    # the cases differ
    a = np.asanyarray(nib.load(str(folders[0] / "synth_000_seg.nii.gz")).dataobj)
    b = np.asanyarray(nib.load(str(folders[1] / "synth_001_seg.nii.gz")).dataobj)
    assert not np.array_equal(a, b)


def test_write_subset_and_no_labels(tmp_path):
    folders = write_synthetic_dataset(tmp_path / "o", cases=1, size=32, modalities=["t1c", "T2F"], convention="none")
    assert sorted(p.name for p in folders[0].iterdir()) == [
        "synth_000_brainmask.nii.gz", "synth_000_flair.nii.gz", "synth_000_t1ce.nii.gz"]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "o"
    write_synthetic_dataset(out, cases=2, size=24)
    with pytest.raises(M2CofsError, match="synth_000.*overwrite"):
        write_synthetic_dataset(out, cases=1, size=24)
    # other content in OUT is fine as long as no case would be replaced
    (out / "notes.txt").write_text("x")
    write_synthetic_dataset(out / "more", cases=1, size=24)
    # overwrite replaces, and drops files the new case does not have (the old seg)
    write_synthetic_dataset(out, cases=2, size=24, seed=9, convention="none", modalities=("t1",), overwrite=True)
    assert sorted(p.name for p in (out / "synth_000").iterdir()) == [
        "synth_000_brainmask.nii.gz", "synth_000_t1.nii.gz"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(M2CofsError, match="not a folder"):
        write_synthetic_dataset(tmp_path / "file", cases=1, size=24)


@pytest.mark.parametrize("kwargs,match", [
    (dict(cases=0), "cases"),
    (dict(cases=-2), "cases"),
    (dict(size=23), "size"),
    (dict(size=16.5), "size"),
    (dict(seed=-1), "seed"),
    (dict(modalities=("t1", "t3")), "t3"),
    (dict(modalities=()), "modalit"),
    (dict(modalities=("t1", "T1")), "twice"),
    (dict(convention="brats2099"), "brats2099"),
    (dict(convention="auto"), "auto"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(M2CofsError, match=match):
        write_synthetic_dataset(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()
