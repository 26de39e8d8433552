"""The drawn geometry of one head: :class:`_Anatomy`, signed distances of its structures (mm)."""

from __future__ import annotations

import numpy as np

from m2cofs.synthetic.fields import _ellipsoid_sdf, _harmonics


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


def _brain_regions(an: _Anatomy, x, y, z) -> dict:
    """Signed distances of the cerebrum, brainstem, cerebellum and the whole brain; ``in_cbl``
    is where the cerebellum is nearer than the cerebrum."""
    d_cer = an.cerebrum(x, y, z)
    d_bs = an.brainstem(x, y, z)
    d_cbl = an.cerebellum(x, y, z, d_bs)
    d_brain = np.minimum(np.minimum(d_cer, d_cbl), d_bs)
    in_cbl = d_cbl < d_cer
    return dict(d_cer=d_cer, d_bs=d_bs, d_cbl=d_cbl, d_brain=d_brain, in_cbl=in_cbl)
