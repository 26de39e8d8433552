"""Image formation: per-modality contrasts, tissue texture, PSF, bias field, gain, Rician noise.

Each modality of :data:`SYNTH_MODALITIES` has its own random stream, drawn in full whether or
not the modality is asked for, so an image does not depend on which others are made.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from m2cofs.synthetic.classes import _C_CORTEX, _C_ED, _C_ENH, _C_NCR, _C_NET, _C_WM, _N_COMP
from m2cofs.synthetic.fields import _lowres_noise

DEFAULT_MODALITIES = ("t1", "t1ce", "t2", "flair")
SYNTH_MODALITIES = ("t1", "t1ce", "t2", "flair", "t1_ir", "pd")  # fixed order: one random stream each

# Per-component intensities: bg, csf_ext, vent, cortex, deep GM, WM, necrosis, enhancing, oedema, non-enh.
_CONTRAST = {
    "t1":    (0, 140, 140, 430, 520, 640, 190, 430, 390, 360),
    "t1ce":  (0, 150, 150, 450, 535, 650, 170, 1150, 400, 380),
    "t2":    (0, 1000, 1000, 560, 500, 400, 900, 620, 760, 700),
    "flair": (0, 70, 70, 500, 450, 380, 320, 600, 850, 720),
    "t1_ir": (0, 20, 20, 380, 530, 750, 60, 350, 280, 300),
    "pd":    (0, 800, 800, 700, 660, 600, 780, 680, 760, 740),
}


def _texture_gain(trng: np.random.Generator, fracs: np.ndarray, shape) -> np.ndarray:
    """Multiplicative tissue texture: 3 % everywhere, up to 8 % in the tumour."""
    texture = _lowres_noise(trng, shape, 1.5)
    tumour_w = fracs[_C_NCR] + fracs[_C_ENH] + fracs[_C_ED] + fracs[_C_NET]
    return (1.0 + (0.03 + 0.05 * tumour_w) * np.clip(texture, -3, 3)).astype(np.float32)


def _bias_terms(shape) -> list:
    """The nine terms of the quadratic bias polynomial in grid-centred normalised coordinates."""
    grid_c = [((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) / (n / 2.0)) for n in shape]
    gx, gy, gz = (grid_c[a].reshape([-1 if i == a else 1 for i in range(3)]) for a in range(3))
    return [gx, gy, gz, gx * gx - 1 / 3, gy * gy - 1 / 3, gz * gz - 1 / 3, gx * gy, gx * gz, gy * gz]


def _bias_field(coef: np.ndarray, bias_sd: float, terms: list, brainmask: np.ndarray, shape) -> np.ndarray:
    """``exp`` of the polynomial, scaled to standard deviation ``bias_sd`` over the head."""
    poly = np.zeros(shape, np.float32)
    for cf, t in zip(coef, terms):
        poly += np.float32(cf) * t
    inside = poly[brainmask]
    poly -= inside.mean()
    poly *= np.float32(bias_sd / max(float(inside.std()), 1e-6))
    return np.exp(poly).astype(np.float32)


def _draw_contrast(mrng: np.random.Generator, m: str) -> dict:
    """One modality's drawn parameters: jittered intensities, gain, bias and SNR."""
    jitter = mrng.uniform(0.96, 1.04, size=_N_COMP)
    mu = (np.asarray(_CONTRAST[m], np.float64) * jitter).astype(np.float32)
    gain = float(np.exp(mrng.uniform(np.log(0.8), np.log(1.25))))
    coef = mrng.standard_normal(9)
    bias_sd = float(mrng.uniform(0.06, 0.12))
    snr = float(mrng.uniform(25, 45))
    return dict(mu=mu, gain=gain, coef=coef, bias_sd=bias_sd, snr=snr)


def _modality_image(mrng: np.random.Generator, p: dict, fracs: np.ndarray, tex_gain: np.ndarray,
                    bias: np.ndarray, brainmask: np.ndarray, shape, background: str):
    """The image of one modality and its noise sigma: PSF, bias, gain, then Rician noise."""
    mu, gain = p["mu"], p["gain"]
    clean = np.tensordot(mu, fracs, axes=(0, 0)).astype(np.float32)
    clean *= tex_gain
    clean = ndi.gaussian_filter(clean, 0.5)
    clean *= bias
    clean *= np.float32(gain)
    sigma = np.float32(gain * 0.5 * (mu[_C_CORTEX] + mu[_C_WM]) / p["snr"])
    n1 = mrng.standard_normal(shape, dtype=np.float32)
    n2 = mrng.standard_normal(shape, dtype=np.float32)
    clean += sigma * n1
    n2 *= sigma
    img = np.sqrt(clean * clean + n2 * n2).astype(np.float32)
    if background == "zero":
        img[~ndi.binary_dilation(brainmask, iterations=1)] = 0.0
    return img, sigma


def _form_images(s_mod, mods, fracs: np.ndarray, tex_gain: np.ndarray, brainmask: np.ndarray, shape,
                 background: str):
    """``(images, biases, meta)`` of the modalities ``mods`` (each from its stream in ``s_mod``)."""
    terms = None
    images: dict[str, np.ndarray] = {}
    biases: dict[str, np.ndarray] = {}
    mod_meta: dict[str, dict] = {}
    for m, s_m in zip(SYNTH_MODALITIES, s_mod):
        mrng = np.random.default_rng(s_m)
        p = _draw_contrast(mrng, m)
        if m not in mods:
            continue
        terms = _bias_terms(shape) if terms is None else terms
        bias = _bias_field(p["coef"], p["bias_sd"], terms, brainmask, shape)
        images[m], sigma = _modality_image(mrng, p, fracs, tex_gain, bias, brainmask, shape, background)
        biases[m] = bias
        mod_meta[m] = dict(gain=p["gain"], noise_sigma=float(sigma), bias_sd=p["bias_sd"], snr=p["snr"])
    return images, biases, mod_meta
