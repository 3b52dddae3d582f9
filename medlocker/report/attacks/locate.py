"""Find the public logo in a public image, at any scale and rotation.

The logo file and the renderer are public, so an attacker looks for the logo
itself: normalised cross-correlation (``cv2.TM_CCOEFF_NORMED``) of the image
with the logo's colours, weighted by its alpha, over a pyramid of sizes
(area 1 % to 6.25 % of the image, the public size rule's range; smaller templates match noise) and
rotations (every 15 degrees), first on a 2x downsample (full resolution for logos under 20 px a side), then refined at full
resolution around the best match (sizes within ~8 %, angles within 6 degrees).
An alpha blend is affine in the logo on a smooth background, so the correlation
peaks at the logo whatever its opacity.

:func:`logo_layer` renders what the attacker believes is there -- the logo's
alpha and colours in image coordinates -- which the removal attacks use as
their mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from medlocker.report.metrics import check_image
from medlocker.watermark.logo import MAX_LOGO_SCALE, logo_size, resize_logo

__all__ = ["Located", "SCALES", "ANGLES", "warp_logo", "locate_logo", "logo_layer", "box_iou"]

Box = tuple[int, int, int, int]

SCALES: tuple[float, ...] = tuple(float(s) for s in np.geomspace(0.01, MAX_LOGO_SCALE, 8))
"""Logo areas (fractions of the image) of the coarse search."""
ANGLES: tuple[float, ...] = tuple(float(a) for a in range(-180, 180, 15))
"""Rotations (degrees, counter-clockwise) of the coarse search."""

_MIN_SIDE = 5  # smaller templates match noise
_MIN_COARSE_SIDE = 10
_MIN_STD = 6.0  # levels: windows flatter than this under the logo's alpha cannot hold a blended logo  # templates matched on the downsample keep at least this many px a side
_REFINE_SCALES = (0.84, 0.92, 1.0, 1.08, 1.17)
_REFINE_ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)


@dataclass(frozen=True)
class Located:
    """Where the attacker believes the logo is.

    Attributes:
        size: ``(w, h)`` of the logo before rotation, in px.
        angle: rotation in degrees, counter-clockwise, about the logo's centre.
        origin: ``(x, y)`` of the top-left corner of the rotated logo's canvas.
        canvas: ``(w, h)`` of that canvas (the rotated logo's bounding square).
        score: the normalised cross-correlation there (1 = perfect).
    """

    size: tuple[int, int]
    angle: float
    origin: tuple[int, int]
    canvas: tuple[int, int]
    score: float

    @property
    def box(self) -> Box:
        """The canvas box ``(x0, y0, x1, y1)``; for angle 0 the logo's own box."""
        x, y = self.origin
        return x, y, x + self.canvas[0], y + self.canvas[1]


def warp_logo(logo: np.ndarray, size: tuple[int, int], angle: float) -> np.ndarray:
    """The RGBA logo resized to ``size`` and rotated by ``angle`` on the smallest canvas that holds it."""
    w, h = int(size[0]), int(size[1])
    tpl = resize_logo(logo, w, h)
    if angle % 360 == 0:
        return tpl
    rad = math.radians(angle)
    cw = int(math.ceil(abs(w * math.cos(rad)) + abs(h * math.sin(rad))))
    ch = int(math.ceil(abs(w * math.sin(rad)) + abs(h * math.cos(rad))))
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(angle), 1.0)
    m[0, 2] += (cw - w) / 2
    m[1, 2] += (ch - h) / 2
    return cv2.warpAffine(tpl, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def locate_logo(
    img: np.ndarray,
    logo: np.ndarray,
    *,
    scales: Sequence[float] = SCALES,
    angles: Sequence[float] = ANGLES,
    coarse: int = 2,
) -> Located:
    """The best match of ``logo`` in ``img`` over ``scales`` x ``angles``, refined at full resolution.

    Args:
        img: uint8 ``[H, W, 3]`` public image.
        logo: the public RGBA logo.
        scales: logo areas as fractions of the image (coarse pyramid).
        angles: rotations in degrees (coarse pyramid).
        coarse: downsampling factor of the coarse search (1 = none).

    Raises:
        ValueError: no size of the pyramid fits the image.
    """
    img = check_image(img)
    hw = img.shape[:2]
    sizes = sorted({_size(logo, hw, s) for s in scales} - {None})
    if not sizes:
        raise ValueError(f"no logo size of the pyramid fits an image of {hw[0]}x{hw[1]}")
    small = img if coarse == 1 else cv2.resize(img, (hw[1] // coarse, hw[0] // coarse), interpolation=cv2.INTER_AREA)
    best = None
    for size in sizes:
        down = coarse if min(size) // coarse >= _MIN_COARSE_SIDE else 1  # small templates match noise when shrunk
        for angle in angles:
            hit = _match(small if down == coarse else img, warp_logo(logo, size, angle), down)
            if hit is not None and (best is None or hit[0] > best[0]):
                best = (hit[0], size, angle, (hit[1] * down, hit[2] * down))
    if best is None:
        raise ValueError(f"no logo size of the pyramid fits an image of {hw[0]}x{hw[1]}")
    _, (w0, h0), a0, (x0, y0) = best
    found = None
    for f in _REFINE_SCALES:
        size = (max(_MIN_SIDE, round(w0 * f)), max(_MIN_SIDE, round(h0 * f)))
        for da in _REFINE_ANGLES:
            tpl = warp_logo(logo, size, a0 + da)
            th, tw = tpl.shape[:2]
            pad = 2 * coarse + round(abs(w0 * f - w0)) + 4
            wx0, wy0 = max(0, x0 - pad), max(0, y0 - pad)
            wx1, wy1 = min(hw[1], x0 + tw + pad), min(hw[0], y0 + th + pad)
            hit = _match(img[wy0:wy1, wx0:wx1], tpl, 1)
            if hit is not None and (found is None or hit[0] > found.score):
                found = Located(size=size, angle=float(a0 + da), origin=(wx0 + hit[1], wy0 + hit[2]),
                                canvas=(tw, th), score=float(hit[0]))
    if found is None:  # the window was too small for every refined size: keep the coarse match
        tpl = warp_logo(logo, (w0, h0), a0)
        found = Located(size=(w0, h0), angle=float(a0), origin=(x0, y0), canvas=(tpl.shape[1], tpl.shape[0]),
                        score=float(best[0]))
    return found


def logo_layer(logo: np.ndarray, where: Located, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha [H, W] in 0..1, colour [H, W, 3] in 0..255)`` of the logo placed as ``where`` says."""
    h, w = int(shape[0]), int(shape[1])
    alpha = np.zeros((h, w), np.float64)
    colour = np.zeros((h, w, 3), np.float64)
    tpl = warp_logo(logo, where.size, where.angle).astype(np.float64)
    x, y = where.origin
    sx0, sy0 = max(0, -x), max(0, -y)
    dx0, dy0 = max(0, x), max(0, y)
    dx1, dy1 = min(w, x + tpl.shape[1]), min(h, y + tpl.shape[0])
    if dx1 > dx0 and dy1 > dy0:
        part = tpl[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
        alpha[dy0:dy1, dx0:dx1] = part[..., 3] / 255.0
        colour[dy0:dy1, dx0:dx1] = part[..., :3]
    return alpha, colour


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when both are empty)."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _size(logo: np.ndarray, hw: tuple[int, int], scale: float) -> tuple[int, int] | None:
    try:
        w, h = logo_size(logo, hw, scale=float(scale))
    except ValueError:
        return None
    return (w, h) if min(w, h) >= 2 * _MIN_SIDE else None


def _match(img: np.ndarray, tpl: np.ndarray, down: int) -> tuple[float, int, int] | None:
    """Best ``(score, x, y)`` of the RGBA template ``tpl`` (shrunk by ``down``) in ``img``, or None if it does not fit."""
    if down > 1:
        th, tw = max(1, tpl.shape[0] // down), max(1, tpl.shape[1] // down)
        tpl = cv2.resize(tpl, (tw, th), interpolation=cv2.INTER_AREA)
    th, tw = tpl.shape[:2]
    if th > img.shape[0] or tw > img.shape[1] or min(th, tw) < _MIN_SIDE:
        return None
    weight = np.repeat(tpl[..., 3:].astype(np.float32) / 255.0, 3, axis=2)
    if not weight.any():
        return None
    x = img.astype(np.float32)
    res = cv2.matchTemplate(x, tpl[..., :3].astype(np.float32), cv2.TM_CCOEFF_NORMED, mask=weight)
    # Flat patches (the black border around the field of view, the rim) leave the correlation
    # undefined or let a few levels of noise correlate perfectly: OpenCV returns NaN, inf, values
    # outside [-1, 1], or high scores on windows with almost no contrast. A logo blended at any
    # opacity the packer allows brings contrast of its own, so such windows are not candidates.
    w1 = np.ascontiguousarray(weight[..., 0])
    total = float(w1.sum())
    var = np.zeros(res.shape[:2], np.float64)
    for c in range(x.shape[2]):  # the alpha-weighted variance of each channel under the template
        xc = np.ascontiguousarray(x[..., c])
        mean = cv2.matchTemplate(xc, w1, cv2.TM_CCORR).astype(np.float64) / total
        var += cv2.matchTemplate(xc * xc, w1, cv2.TM_CCORR) / total - mean * mean
    flat = var / x.shape[2] < _MIN_STD**2
    res[~np.isfinite(res) | (np.abs(res) > 1.0 + 1e-3) | flat] = -1.0
    _, score, _, (x, y) = cv2.minMaxLoc(res)
    return float(score), int(x), int(y)
