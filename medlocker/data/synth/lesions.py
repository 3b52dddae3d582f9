"""DR lesions: each painter draws one lesion type into the image and returns its mask.

The mask is exactly where that type was painted (its alpha above a threshold
inside the field of view), so filling the masked pixels removes the lesion.
Sizes are in FOV units, large enough to survive resizing to 224 px and mostly
to 64 px:

- MA: tiny sharp dark-red dots, mostly at the posterior pole;
- HE: dot/blot haemorrhages (irregular dark-red blobs) and flame haemorrhages,
  elongated along the nerve fibres;
- EX: waxy yellow specks with sharp edges, in clusters and circinate rings;
- SE: fuzzy pale cotton-wool spots near the arcades;
- NV: tufts of fine tortuous vessels on the disc (NVD) or along a vein (NVE).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from medlocker.data.synth.anatomy import Eye
from medlocker.data.synth.canvas import Canvas
from medlocker.data.synth.grades import GRADE_LESIONS, LESION_COUNTS
from medlocker.data.synth.vessels import VesselTree

__all__ = ["paint_lesions"]


def paint_lesions(
    cv: Canvas, rng: np.random.Generator, img: np.ndarray, eye: Eye, tree: VesselTree, grade: int, fov: np.ndarray,
) -> dict[str, np.ndarray]:
    """Paint the lesions of ``grade`` into ``img`` (in place); returns code -> bool mask,
    one non-empty mask per type of ``GRADE_LESIONS[grade]``."""
    masks: dict[str, np.ndarray] = {}
    for code in GRADE_LESIONS[grade]:
        low, high = LESION_COUNTS[grade][code]
        n = int(rng.integers(low, high + 1))
        alpha, threshold, apply, anchor = _PAINTERS[code](cv, rng, eye, tree, grade, n)
        box = _box(alpha)
        if box is not None:
            ys, xs = box
            img[ys, xs] = apply(img[ys, xs], alpha[ys, xs])
        mask = (alpha > threshold) & fov
        if not mask.any():  # tiny images: keep the ground truth honest
            mask[cv.pixel(*anchor)] = True
        masks[code] = mask
    return masks


def _box(alpha: np.ndarray) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _darken(mult: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def apply(img: np.ndarray, a: np.ndarray) -> np.ndarray:
        return img * (1.0 - a[:, :, None] * (1.0 - mult))

    return apply


def _tint(colour: np.ndarray, opacity: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def apply(img: np.ndarray, a: np.ndarray) -> np.ndarray:
        return img + (colour - img) * (opacity * a)[:, :, None]

    return apply


def _posterior(rng: np.random.Generator, eye: Eye, spread: float) -> tuple[float, float]:
    """A point around the macula (the posterior pole), off the disc, inside 0.85 FOV."""
    x, y = eye.mac[0] + rng.normal(0, spread * eye.fov_r), eye.mac[1] + rng.normal(0, spread * eye.fov_r)
    if (x - eye.fov_c[0]) ** 2 + (y - eye.fov_c[1]) ** 2 > (0.85 * eye.fov_r) ** 2 or not eye.off_disc(x, y):
        x, y = eye.point(rng, 0.0, 0.85)
    return x, y


def _ma(cv, rng, eye, tree, grade, n):
    layer, draw = cv.layer()
    for _ in range(n):
        x, y = _posterior(rng, eye, 0.3) if rng.random() < 0.7 else eye.point(rng, 0.1, 0.85)
        r = rng.uniform(0.011, 0.017) * eye.fov_r
        cv.blob(draw, rng, x, y, r, r * rng.uniform(0.8, 1.0), rng.uniform(0, math.pi), 0.05)
    mult = np.array([rng.uniform(0.56, 0.68), rng.uniform(0.2, 0.3), rng.uniform(0.25, 0.35)], np.float32)
    return cv.alpha(layer, 0.0015), 0.3, _darken(mult), (x, y)


def _he(cv, rng, eye, tree, grade, n):
    layer, draw = cv.layer()
    if grade == 2:
        quads = rng.choice(4, size=int(rng.integers(1, 4)), replace=False)
        places = [int(quads[k % len(quads)]) for k in range(n)]
    else:  # severe: haemorrhages in all four quadrants
        places = [q for q in range(4) for _ in range(n)]
    for q in places:
        x, y = eye.point(rng, 0.15, 0.85, q)
        if rng.random() < 0.35:  # flame: along the fibres, feathered
            a = rng.uniform(0.035, 0.06) * eye.fov_r
            ang = eye.fibre_angle(x, y) + rng.normal(0, 0.15)
            cv.blob(draw, rng, x, y, a, a * rng.uniform(0.22, 0.35), ang, 0.08)
        else:  # dot / blot: one to three overlapping irregular blobs
            r = rng.uniform(0.016, 0.036) * eye.fov_r
            for _ in range(int(rng.integers(1, 4))):
                cv.blob(draw, rng, x + rng.normal(0, r * 0.4), y + rng.normal(0, r * 0.4),
                        r * rng.uniform(0.7, 1.0), r * rng.uniform(0.55, 0.9), rng.uniform(0, math.pi), 0.3)
    mult = np.array([rng.uniform(0.58, 0.7), rng.uniform(0.18, 0.28), rng.uniform(0.22, 0.32)], np.float32)
    return cv.alpha(layer, 0.003), 0.3, _darken(mult), (x, y)


def _ex(cv, rng, eye, tree, grade, n):
    layer, draw = cv.layer()
    for _ in range(n):
        cx, cy = _posterior(rng, eye, 0.25) if rng.random() < 0.6 else eye.point(rng, 0.15, 0.7)
        spread = rng.uniform(0.04, 0.08) * eye.fov_r
        ring = rng.random() < 0.4  # circinate ring around a leaking focus
        for _ in range(int(rng.integers(6, 15))):
            if ring:
                t = rng.uniform(0, 2 * math.pi)
                rad = spread * rng.uniform(0.85, 1.15)
                x, y = cx + rad * math.cos(t), cy + rad * math.sin(t)
            else:
                x, y = cx + rng.normal(0, spread * 0.55), cy + rng.normal(0, spread * 0.55)
            r = rng.uniform(0.007, 0.017) * eye.fov_r
            cv.blob(draw, rng, x, y, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi), 0.35)
    colour = np.array([1.0, rng.uniform(0.86, 0.95), rng.uniform(0.35, 0.5)], np.float32)
    return cv.alpha(layer, 0.0012), 0.3, _tint(colour, rng.uniform(0.8, 0.92)), (x, y)


def _se(cv, rng, eye, tree, grade, n):
    layer, draw = cv.layer()
    for _ in range(n):
        x, y = eye.point(rng, 0.15, 0.6)
        r = rng.uniform(0.03, 0.05) * eye.fov_r
        for _ in range(int(rng.integers(2, 4))):
            cv.blob(draw, rng, x + rng.normal(0, r * 0.35), y + rng.normal(0, r * 0.35),
                    r * rng.uniform(0.6, 1.0), r * rng.uniform(0.45, 0.8), rng.uniform(0, math.pi), 0.3)
    colour = np.array([0.97, rng.uniform(0.88, 0.95), rng.uniform(0.78, 0.88)], np.float32)
    return cv.alpha(layer, 0.011), 0.2, _tint(colour, rng.uniform(0.65, 0.85)), (x, y)


def _nv(cv, rng, eye, tree, grade, n):
    layer, draw = cv.layer()
    for k in range(n):
        if k == 0 and rng.random() < 0.5:  # on the disc
            cx = eye.disc[0] + rng.normal(0, eye.disc_r * 0.4)
            cy = eye.disc[1] + rng.normal(0, eye.disc_r * 0.4)
        else:  # along a vein, inside the posterior pole
            path = tree.veins[int(rng.integers(len(tree.veins)))]
            cx, cy, _ = (float(c) for c in path[int(rng.integers(len(path)))])
            if (cx - eye.fov_c[0]) ** 2 + (cy - eye.fov_c[1]) ** 2 > (0.75 * eye.fov_r) ** 2:
                cx, cy = eye.point(rng, 0.25, 0.7)
        spread = rng.uniform(0.045, 0.07) * eye.fov_r
        step = 0.009 * eye.fov_r
        for _ in range(int(rng.integers(18, 28))):  # short looping vessels: a "sea fan"
            x, y = cx + rng.normal(0, spread * 0.5), cy + rng.normal(0, spread * 0.5)
            m = int(rng.integers(6, 12))
            ang = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.choice((-0.55, 0.55)) + rng.normal(0, 0.45, m))
            path = np.empty((m + 1, 3), np.float32)
            path[:, 0] = x + np.concatenate(([0.0], np.cumsum(step * np.cos(ang))))
            path[:, 1] = y + np.concatenate(([0.0], np.cumsum(step * np.sin(ang))))
            path[:, 2] = 0.009 * eye.fov_r
            cv.polyline(draw, path)
    mult = np.array([rng.uniform(0.8, 0.92), rng.uniform(0.3, 0.4), rng.uniform(0.35, 0.45)], np.float32)
    return cv.alpha(layer, 0.002), 0.3, _darken(mult), (cx, cy)


_PAINTERS = {"MA": _ma, "HE": _he, "EX": _ex, "SE": _se, "NV": _nv}
