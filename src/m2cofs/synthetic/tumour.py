"""The tumour: its drawn parameters, its signed distances and its component fractions.

An irregular core (necrotic centre, enhancing rim, a non-enhancing sector with a bulge) in one
hemisphere's white matter, inside an irregular oedema halo that spreads only through white and
deep grey matter.
"""

from __future__ import annotations

import numpy as np

from m2cofs.synthetic.anatomy import _Anatomy
from m2cofs.synthetic.fields import _harmonics, _lowres_noise, _pv


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



def _tumour_sdfs(trng: np.random.Generator, tr: dict, x, y, z, shape, vox: float) -> dict:
    """Signed distances (mm) of the core, necrosis, non-enhancing bulge and oedema, and the
    cosine to the non-enhancing direction. Two draws from the texture stream ``trng``."""
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
    return dict(d_tum=d_tum, d_nec=d_nec, d_lob=d_lob, d_tum_all=d_tum_all, d_oed=d_oed, cosang=cosang)


def _add_tumour(fr: dict, sd: dict, vox: float) -> None:
    """Put the tumour (signed distances ``sd``) into the healthy fractions ``fr`` in place: the
    core displaces every tissue, the oedema only white and deep grey matter."""
    f_tum = np.minimum(_pv(sd["d_tum_all"], vox), fr["icv"])
    f_nec = np.minimum(_pv(sd["d_nec"], vox), f_tum)
    f_solid = f_tum - f_nec
    net_share = np.clip((sd["cosang"] - 0.3) / 0.15, 0.0, 1.0)
    net_share = np.maximum(net_share, np.clip(_pv(sd["d_lob"], vox) - _pv(sd["d_tum"], vox), 0.0, 1.0))
    f_net = f_solid * net_share
    f_enh = f_solid - f_net
    keep = 1.0 - f_tum
    for k in ("csf", "vent", "cortex", "deep", "wm"):
        fr[k] *= keep
    p_oed = _pv(sd["d_oed"], vox)
    fr["ed"] = p_oed * (fr["wm"] + fr["deep"])
    fr["wm"] *= 1.0 - p_oed
    fr["deep"] *= 1.0 - p_oed
    fr.update(nec=f_nec, enh=f_enh, net=f_net)
