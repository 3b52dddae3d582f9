"""Logo-removal attacks by someone without a licence, from the public image alone.

The logo is visible and the logo file and the rendering code are public, so an
attacker can find the logo box by template matching and then either

* *inpaint* the logo away (OpenCV Telea or Navier-Stokes, ``cv2.inpaint``), or
* *invert the blend*: the stored pixel is
  ``y = (x * (65025 - A) + L * A + 32512) // 65025`` with ``A = alpha * opacity``
  (:func:`medlocker.watermark.render_exact`), so once the box and the opacity are
  known, ``x ~ (65025 * y - L * A) / (65025 - A)``. The opacity is secret; the
  attacker picks the one whose recovered patch is smoothest (least total
  variation), since fundus background under a logo is smooth and a wrong
  opacity leaves the logo's edges in (too low) or amplifies them inverted
  (too high).

``*_oracle`` attacks are given the true placement instead of estimating it: an
upper bound on what any attacker achieves, and the inverse-blend oracle shows
why the parameter list is kept secret. The licensed path is exact and is not an
attack: the report lists it with PSNR ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from medlocker.report.attacks.inpaint import dilate, inpaint_mask
from medlocker.report.attacks.invert import estimate_opacity as estimate_map_opacity
from medlocker.report.metrics import check_image, psnr
from medlocker.watermark.logo import MAX_LOGO_SCALE, logo_size, resize_logo

__all__ = [
    "ATTACKS",
    "BlendEstimate",
    "estimate_logo_box",
    "estimate_opacity",
    "estimate_blend",
    "inpaint",
    "inverse_blend",
    "remove",
    "attacker_psnr",
]

Box = tuple[int, int, int, int]

ATTACKS: tuple[str, ...] = (
    "inpaint_telea",
    "inpaint_ns",
    "inverse_blend",
    "inpaint_telea_oracle",
    "inverse_blend_oracle",
)
"""Removal attacks :func:`remove` knows; ``*_oracle`` ones need the true placement."""

_FULL = 65025  # 255 * 255: the renderer's fixed-point unit
_MIN_SIDE = 6
_COARSE_SCALES = tuple(float(s) for s in np.geomspace(0.01, MAX_LOGO_SCALE, 12))


@dataclass(frozen=True)
class BlendEstimate:
    """What an attacker recovers from one public image.

    Attributes:
        box: estimated logo box ``(x0, y0, x1, y1)``, half-open.
        opacity: estimated opacity, 1..255 (the renderer's scale).
        score: normalised cross-correlation of the logo at ``box`` (1 = perfect).
    """

    box: Box
    opacity: int
    score: float


def estimate_logo_box(
    watermarked: np.ndarray,
    logo_rgba: np.ndarray,
    *,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[Box, float]:
    """Find the visible logo by masked template matching over a few scales.

    Blending is affine in the logo for a smooth background, so the normalised
    cross-correlation (``cv2.TM_CCOEFF_NORMED``, weighted by the logo's alpha)
    peaks at the logo whatever the opacity. Without ``sizes`` the search runs
    coarse-to-fine over the public size rule (:func:`logo_size`, area 1 % to
    6.25 % of the image): twelve scales, then every width within 3 px of the
    best one.

    Args:
        watermarked: uint8 ``[H, W, 3]`` public image.
        logo_rgba: the public logo, uint8 ``[h, w, 4]``.
        sizes: optional explicit ``(w, h)`` candidates (for logos placed by
            another size rule).

    Returns:
        ``(box, score)``: the best box and its correlation.
    """
    img = check_image(watermarked).astype(np.float32)
    h_img, w_img = img.shape[:2]
    if sizes is None:
        coarse = _rule_sizes(logo_rgba, (h_img, w_img), _COARSE_SCALES)
        best = _match_sizes(img, logo_rgba, coarse)
        w0 = best[1][2] - best[1][0]
        fine = [
            s for s in _rule_sizes(logo_rgba, (h_img, w_img), np.linspace(0.004, MAX_LOGO_SCALE, 200))
            if abs(s[0] - w0) <= 3
        ]
        best = max(best, _match_sizes(img, logo_rgba, fine))
    else:
        best = _match_sizes(img, logo_rgba, [(int(w), int(h)) for w, h in sizes])
    if best[0] == -math.inf:
        raise ValueError(f"no logo size fits an image of {h_img}x{w_img}")
    return best[1], best[0]


def estimate_opacity(watermarked: np.ndarray, logo_rgba: np.ndarray, box: Sequence[int]) -> int:
    """Opacity (1..255) whose inverse blend leaves the smoothest patch in ``box``.

    The axis-aligned case of :func:`medlocker.report.attacks.invert.estimate_opacity`
    (the logo resized to ``box``, as the renderer places it).
    """
    img = check_image(watermarked)
    alpha, colour = _box_layer(logo_rgba, _clip_box(box, img.shape), img.shape)
    return estimate_map_opacity(img, alpha, colour)


def estimate_blend(watermarked: np.ndarray, logo_rgba: np.ndarray) -> BlendEstimate:
    """Box by :func:`estimate_logo_box`, then opacity by :func:`estimate_opacity`."""
    box, score = estimate_logo_box(watermarked, logo_rgba)
    return BlendEstimate(box=box, opacity=estimate_opacity(watermarked, logo_rgba, box), score=float(score))


def inpaint(
    watermarked: np.ndarray,
    box: Sequence[int],
    *,
    method: str = "telea",
    logo_rgba: np.ndarray | None = None,
    radius: int = 3,
) -> np.ndarray:
    """Inpaint the logo with ``cv2.inpaint``; only pixels inside ``box`` change.

    Args:
        watermarked: uint8 ``[H, W, 3]``.
        box: logo box ``(x0, y0, x1, y1)``.
        method: ``"telea"`` (Telea 2004) or ``"ns"`` (Navier-Stokes, Bertalmio 2001).
        logo_rgba: when given, only the logo's own pixels (alpha > 0, grown by
            one pixel, inside the box) are inpainted, keeping more real context;
            otherwise the whole box is.
        radius: inpainting neighbourhood radius in pixels.
    """
    img = check_image(watermarked)
    x0, y0, x1, y1 = _clip_box(box, img.shape)
    mask = np.zeros(img.shape[:2], dtype=bool)
    if x1 > x0 and y1 > y0:
        if logo_rgba is None:
            mask[y0:y1, x0:x1] = True
        else:
            alpha, _ = _box_layer(logo_rgba, (x0, y0, x1, y1), img.shape)
            mask[y0:y1, x0:x1] = dilate(alpha > 0, 1)[y0:y1, x0:x1]
    return inpaint_mask(img, mask, method=method, radius=radius)


def inverse_blend(watermarked: np.ndarray, logo_rgba: np.ndarray, box: Sequence[int], opacity: int) -> np.ndarray:
    """Undo the alpha blend inside ``box`` given the opacity (true or estimated).

    With the true parameters the result is within about
    ``0.5 * 65025 / (65025 - A)`` of the original: 1 LSB at opacity 128, more
    where the logo is nearly opaque, since the quantised image carries less of
    the original there. Values are clipped to 0..255.
    """
    img = check_image(watermarked)
    if not 1 <= int(opacity) <= 255:
        raise ValueError(f"opacity must be in 1..255, got {opacity}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x0 < 0 or y0 < 0 or x1 > img.shape[1] or y1 > img.shape[0] or x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} is not inside an image of {img.shape[0]}x{img.shape[1]}")
    logo = resize_logo(logo_rgba, x1 - x0, y1 - y0).astype(np.float64)
    a = np.minimum(logo[..., 3:] * int(opacity), _FULL - 1)
    y = img[y0:y1, x0:x1].astype(np.float64)
    x = (_FULL * y - logo[..., :3] * a) / (_FULL - a)
    out = img.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def remove(
    name: str,
    watermarked: np.ndarray,
    logo_rgba: np.ndarray,
    *,
    estimate: BlendEstimate | None = None,
    oracle_box: Sequence[int] | None = None,
    oracle_opacity: int | None = None,
) -> np.ndarray:
    """Run the removal attack ``name`` (one of :data:`ATTACKS`) on one image.

    Args:
        name: attack name.
        watermarked: the public image.
        logo_rgba: the public logo.
        estimate: a precomputed :func:`estimate_blend` result (computed here if
            omitted and needed); lets several attacks share one estimate.
        oracle_box, oracle_opacity: the true placement, for ``*_oracle``
            attacks. ``oracle_box=None`` with an oracle attack means the image
            carries no logo, and it is returned unchanged.

    Raises:
        ValueError: unknown ``name``, or an oracle attack without the opacity
            it needs.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown removal attack {name!r}; known: {', '.join(ATTACKS)}")
    if name.endswith("_oracle"):
        if oracle_box is None:
            return check_image(watermarked).copy()
        if name == "inverse_blend_oracle":
            if oracle_opacity is None:
                raise ValueError("inverse_blend_oracle needs oracle_opacity")
            return inverse_blend(watermarked, logo_rgba, oracle_box, oracle_opacity)
        return inpaint(watermarked, oracle_box, method="telea", logo_rgba=logo_rgba)
    est = estimate or estimate_blend(watermarked, logo_rgba)
    if name == "inverse_blend":
        return inverse_blend(watermarked, logo_rgba, est.box, est.opacity)
    return inpaint(watermarked, est.box, method=name.removeprefix("inpaint_"), logo_rgba=logo_rgba)


def attacker_psnr(recovered: np.ndarray, original: np.ndarray, box: Sequence[int]) -> float:
    """PSNR (dB) between the attacker's image and the original inside the true logo ``box``."""
    mask = np.zeros(original.shape[:2], dtype=bool)
    x0, y0, x1, y1 = _clip_box(box, original.shape)
    mask[y0:y1, x0:x1] = True
    return psnr(recovered, original, mask)


def _rule_sizes(logo: np.ndarray, hw: tuple[int, int], scales: Sequence[float]) -> list[tuple[int, int]]:
    sizes = set()
    for s in scales:
        try:
            w, h = logo_size(logo, hw, scale=float(s))
        except ValueError:
            continue
        sizes.add((w, h))
    big = [s for s in sizes if min(s) >= _MIN_SIDE]  # smaller templates match noise
    return sorted(big or sizes)


def _match_sizes(img: np.ndarray, logo: np.ndarray, sizes: Sequence[tuple[int, int]]) -> tuple[float, Box]:
    best: tuple[float, Box] = (-math.inf, (0, 0, 0, 0))
    for w, h in sizes:
        if w > img.shape[1] or h > img.shape[0] or w < 1 or h < 1:
            continue
        tpl = resize_logo(logo, w, h)
        weight = np.repeat(tpl[..., 3:].astype(np.float32) / 255.0, 3, axis=2)
        if not weight.any():
            continue
        res = cv2.matchTemplate(img, tpl[..., :3].astype(np.float32), cv2.TM_CCOEFF_NORMED, mask=weight)
        res[~np.isfinite(res)] = -1.0  # flat patches: undefined correlation
        _, score, _, (x, y) = cv2.minMaxLoc(res)
        if score > best[0]:
            best = (float(score), (int(x), int(y), int(x) + w, int(y) + h))
    return best


def _box_layer(logo: np.ndarray, box: Box, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The logo resized into ``box``: ``(alpha [H, W] in 0..1, colour [H, W, 3])``."""
    x0, y0, x1, y1 = box
    alpha, colour = np.zeros(shape[:2]), np.zeros(shape[:2] + (3,))
    if x1 > x0 and y1 > y0:
        tpl = resize_logo(logo, x1 - x0, y1 - y0).astype(np.float64)
        alpha[y0:y1, x0:x1], colour[y0:y1, x0:x1] = tpl[..., 3] / 255.0, tpl[..., :3]
    return alpha, colour


def _clip_box(box: Sequence[int], shape: tuple[int, ...]) -> Box:
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = shape[:2]
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
