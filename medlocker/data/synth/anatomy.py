"""The eye: field-of-view geometry, the retinal background, optic disc and macula.

Colours are reflectances in [0, 1] before the camera (``camera.py``) lights and
records them; the base red-orange follows ``skimage.data.retina()`` inside its
field of view (median RGB about 208, 80, 57).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medlocker.data.synth.canvas import Canvas

__all__ = ["Eye", "draw_eye", "paint_retina"]


@dataclass(frozen=True)
class Eye:
    """Where the anatomy of one image lies (normalised units)."""

    fov_c: tuple[float, float]
    fov_r: float
    side: float  # +1: disc right of the macula (a left eye as photographed), -1: left
    disc: tuple[float, float]
    disc_r: float
    mac: tuple[float, float]

    def fibre_angle(self, x: float, y: float) -> float:
        """Direction of the nerve fibres at (x, y): radial from the disc."""
        return math.atan2(y - self.disc[1], x - self.disc[0])

    def off_disc(self, x: float, y: float, margin: float = 1.4) -> bool:
        return (x - self.disc[0]) ** 2 + (y - self.disc[1]) ** 2 > (margin * self.disc_r) ** 2

    def point(self, rng: np.random.Generator, rmin: float, rmax: float, quadrant: int | None = None) -> tuple[float, float]:
        """A random point off the disc, at ``rmin..rmax`` of the FOV radius, optionally in
        ``quadrant`` 0..3 (counted from the macula-disc axis)."""
        for _ in range(30):
            r = math.sqrt(rng.uniform(rmin**2, rmax**2)) * self.fov_r
            if quadrant is None:
                t = rng.uniform(0.0, 2.0 * math.pi)
            else:
                t = (quadrant + rng.uniform(0.08, 0.92)) * (math.pi / 2.0)
            x, y = self.fov_c[0] + r * math.cos(t), self.fov_c[1] + r * math.sin(t)
            if self.off_disc(x, y):
                break
        return x, y


def draw_eye(rng: np.random.Generator) -> Eye:
    """Random anatomy: field of view (size and position vary by camera), disc and macula."""
    fov_c = (rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04))
    fov_r = rng.uniform(0.86, 0.97) if rng.random() < 0.75 else rng.uniform(0.99, 1.08)  # some FOVs are cropped
    side = float(rng.choice((-1.0, 1.0)))
    disc_r = rng.uniform(0.1, 0.13) * fov_r
    disc = (fov_c[0] + side * rng.uniform(0.40, 0.50) * fov_r, fov_c[1] + rng.uniform(-0.08, 0.06) * fov_r)
    mac = (disc[0] - side * rng.uniform(0.42, 0.5) * fov_r, disc[1] + rng.uniform(0.02, 0.08) * fov_r)
    return Eye(fov_c, fov_r, side, disc, disc_r, mac)


def paint_retina(cv: Canvas, rng: np.random.Generator, eye: Eye) -> np.ndarray:
    """The fundus reflectance without vessels or lesions: ``[s, s, 3]`` float32.

    Choroidal pattern (a fractal field plus the network of choroidal vessels,
    tigroid in some eyes), nerve-fibre striation radiating from the disc and
    strongest along the arcades, the optic disc with its cup, the macula with
    its fovea.
    """
    u, v = cv.u, cv.v
    red = rng.uniform(0.86, 0.95)
    base = np.array([red, red * rng.uniform(0.35, 0.44), red * rng.uniform(0.23, 0.31)], np.float32)

    # Choroid: fractal mottling everywhere, plus the choroidal vessel network (ridges of a
    # smooth field) seen through a thin pigment epithelium in tigroid eyes.
    mottle = cv.field(rng, 192, beta=2.2)
    ridges = np.exp(-((cv.field(rng, 40) / 0.22) ** 2))
    tigroid = rng.uniform(0.01, 0.03) if rng.random() < 0.7 else rng.uniform(0.05, 0.12)
    m = rng.uniform(0.04, 0.065)
    ridges -= 0.3

    # Nerve-fibre striation: fine streaks radial from the disc; a pale sheen near it and
    # along the arcades above and below.
    du, dv = u - eye.disc[0], v - eye.disc[1]
    theta = np.arctan2(dv, du)
    dist = np.sqrt(du * du + dv * dv)
    table = np.linspace(-math.pi, math.pi, 661)
    lines = np.zeros(661)
    for k in (150, 330):  # two scales of fibre bundles, summed into one table
        noise = rng.standard_normal(k + 1)
        noise[-1] = noise[0]
        lines += np.interp(table, np.linspace(-math.pi, math.pi, k + 1), noise)
    streaks = np.interp(theta, table, lines).astype(np.float32)
    along = np.abs(np.sin(theta)) ** 2 * np.exp(-np.maximum(dist - eye.disc_r, 0.0) / (0.45 * eye.fov_r))
    sheen = rng.uniform(0.03, 0.08) * along * (1.0 + 0.35 * streaks)
    img = np.stack([  # planes first, then one interleave: cheaper than per-channel writes
        base[ch] * (1.0 + m * wm * mottle + tigroid * wt * ridges) + ws * sheen
        for ch, (wm, wt, ws) in enumerate(((0.6, 0.25, 0.15), (1.0, 1.0, 0.35), (1.1, 1.3, 0.35)))
    ], axis=-1)

    # Optic disc: a pale yellow-white ellipse, taller than wide, and its brighter cup.
    ys, xs = cv.window(eye.disc[0], eye.disc[1], 1.6 * eye.disc_r)
    wu, wv = u[:, xs] - eye.disc[0], v[ys, :] - eye.disc[1]
    edge = 0.012 * eye.fov_r
    dd = np.sqrt((wu / 0.88) ** 2 + wv**2)
    disc_a = 1.0 / (1.0 + np.exp((dd - eye.disc_r) / (0.5 * edge)))
    halo_a = np.exp(-(((dd - eye.disc_r) / (0.4 * eye.disc_r)) ** 2)) * (dd > eye.disc_r)
    cup_off = eye.side * -0.15 * eye.disc_r
    cup_d = np.sqrt(((wu - cup_off) / 0.9) ** 2 + wv**2)
    cup_a = 1.0 / (1.0 + np.exp((cup_d - eye.disc_r * rng.uniform(0.3, 0.55)) / (0.4 * edge)))
    disc_col = np.array([1.0, rng.uniform(0.72, 0.84), rng.uniform(0.45, 0.6)], np.float32)
    win = img[ys, xs]
    win += (disc_col - win) * (rng.uniform(0.75, 0.92) * disc_a)[:, :, None]
    win += (np.array([1.0, 0.95, 0.85], np.float32) - win) * (rng.uniform(0.4, 0.75) * cup_a)[:, :, None]
    win += (np.array([0.95, 0.6, 0.42], np.float32) - win) * (rng.uniform(0.1, 0.3) * halo_a)[:, :, None]

    # Macula: a broad darker, more pigmented zone; the fovea a small darker pit.
    msig = rng.uniform(0.12, 0.16) * eye.fov_r
    ys, xs = cv.window(eye.mac[0], eye.mac[1], 3.0 * msig)
    md2 = (u[:, xs] - eye.mac[0]) ** 2 + (v[ys, :] - eye.mac[1]) ** 2
    dark = rng.uniform(0.75, 1.0) * (np.exp(-md2 / (2 * msig * msig)) + 0.4 * np.exp(-md2 / (2 * (0.22 * msig) ** 2)))
    img[ys, xs] *= 1.0 - np.minimum(dark, 1.0)[:, :, None] * np.array([0.2, 0.5, 0.6], np.float32)
    return img
