"""The retinal vessel tree: arcades from the disc around the macula, nasal trunks,
bifurcations with Murray-like calibre, tapering and tortuosity.

Venules are wider and darker, arterioles thinner and lighter with a central
light reflex; both leave the disc in pairs (Hoover & Goldbaum-style trees are
not needed here: a steered random walk looks right at these sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medlocker.data.synth.anatomy import Eye
from medlocker.data.synth.canvas import Canvas

__all__ = ["VesselTree", "grow_vessels", "paint_vessels"]

_STEP = 0.025  # walk step, in FOV radii


@dataclass
class VesselTree:
    """Vessel centre lines: one ``[n, 3]`` array (x, y, width) per segment."""

    veins: list[np.ndarray] = field(default_factory=list)
    arteries: list[np.ndarray] = field(default_factory=list)


def _walk(
    rng: np.random.Generator, eye: Eye, x: float, y: float, angle: float, width: float,
    steps: int, arc: float, depth: int, out: list[np.ndarray],
) -> None:
    """One vessel from (x, y): a tortuous walk that tapers, bifurcates and stops at the
    FOV edge. ``arc`` > 0 steers it along a circle of that radius around the macula
    (the temporal arcades); 0 leaves it free."""
    step = _STEP * eye.fov_r
    jit = rng.normal(0.0, 1.0, steps)
    draws = rng.random((steps, 3))
    pts = [(x, y, width)]
    wiggle = 0.0
    tort = rng.uniform(0.04, 0.09)
    for k in range(steps):
        if arc > 0:
            dx, dy = x - eye.mac[0], y - eye.mac[1]
            d = math.hypot(dx, dy) + 1e-6
            past = (x - eye.mac[0]) * eye.side < -0.1 * eye.fov_r  # beyond the macula: let it go
            if not past:
                tan = math.atan2(dy, dx) + math.copysign(math.pi / 2, math.sin(angle - math.atan2(dy, dx)))
                tan -= math.copysign(1.0, math.sin(tan - math.atan2(dy, dx))) * 1.6 * (d - arc) / eye.fov_r
                angle += 0.18 * math.atan2(math.sin(tan - angle), math.cos(tan - angle))
        wiggle = 0.75 * wiggle + tort * jit[k]
        angle += wiggle
        x += step * math.cos(angle)
        y += step * math.sin(angle)
        width *= 0.985
        pts.append((x, y, width))
        if (x - eye.fov_c[0]) ** 2 + (y - eye.fov_c[1]) ** 2 > (1.02 * eye.fov_r) ** 2 or width < 0.0025:
            break
        if depth > 0 and k > 3 and steps - k > 5 and draws[k, 0] < 0.11:
            child = width * rng.uniform(0.5, 0.78)
            width *= 0.9  # the parent narrows after the fork
            sign = 1.0 if draws[k, 1] < 0.5 else -1.0
            _walk(rng, eye, x, y, angle + sign * rng.uniform(0.5, 1.1), child,
                  int((steps - k) * rng.uniform(0.35, 0.7)), 0.0, depth - 1, out)
    out.append(np.asarray(pts, np.float32))


def grow_vessels(rng: np.random.Generator, eye: Eye) -> VesselTree:
    """Four venule and four arteriole trunks (two arcades, two nasal) plus small
    macular branches, all from the disc."""
    tree = VesselTree()
    scale = rng.uniform(0.85, 1.15) * eye.fov_r
    arc = np.hypot(eye.mac[0] - eye.disc[0], eye.mac[1] - eye.disc[1]) * rng.uniform(0.7, 0.85)
    s = eye.side
    for out, width, shift in ((tree.veins, 0.028, 0.1), (tree.arteries, 0.02, -0.1)):
        trunks = (
            (-math.pi / 2 - s * (0.45 + shift), arc, 56),
            (math.pi / 2 + s * (0.45 + shift), arc, 56),
            (-math.pi / 2 + s * (0.6 + shift), 0.0, 36),
            (math.pi / 2 - s * (0.6 + shift), 0.0, 36),
            (math.pi * (s < 0) + rng.normal(0, 0.35), 0.0, 18),  # small macular branch
        )
        for k, (a0, arc_r, steps) in enumerate(trunks):
            a = a0 + rng.normal(0.0, 0.12)
            w = width * scale * (0.45 if k == 4 else rng.uniform(0.9, 1.1))
            x = eye.disc[0] + math.cos(a) * eye.disc_r * 0.25
            y = eye.disc[1] + math.sin(a) * eye.disc_r * 0.25
            _walk(rng, eye, x, y, a, w, steps, arc_r * rng.uniform(0.9, 1.1), 3, out)
    return tree


def paint_vessels(cv: Canvas, rng: np.random.Generator, img: np.ndarray, tree: VesselTree) -> None:
    """Darken the retina under the vessels, in place: venules dark red, arterioles
    lighter with a central reflex."""
    vein_l, vein_d = cv.layer()
    art_l, art_d = cv.layer()
    refl_l, refl_d = cv.layer()
    for path in tree.veins:
        cv.polyline(vein_d, path)
    for path in tree.arteries:
        cv.polyline(art_d, path)
        if path[0, 2] * cv.half >= 3.0:
            cv.polyline(refl_d, path, width_scale=0.3)
    vein = cv.alpha(vein_l, 0.003)
    art = cv.alpha(art_l, 0.003)
    refl = cv.alpha(refl_l, 0.003)
    vein_m = np.array([rng.uniform(0.72, 0.82), rng.uniform(0.42, 0.52), rng.uniform(0.5, 0.6)], np.float32)
    art_m = np.array([rng.uniform(0.9, 0.96), rng.uniform(0.68, 0.78), rng.uniform(0.72, 0.82)], np.float32)
    gain = np.stack([(1.0 - art * (1.0 - art_m[c])) * (1.0 - vein * (1.0 - vein_m[c])) for c in range(3)], axis=-1)
    img *= gain  # one same-shape multiply: broadcasting over channels is slow
    box = refl_l.getbbox()
    if box is not None:
        ys, xs = slice(box[1], box[3]), slice(box[0], box[2])
        img[ys, xs] += (refl[ys, xs] * rng.uniform(0.04, 0.08))[:, :, None]
