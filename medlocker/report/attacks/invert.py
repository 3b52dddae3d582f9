"""Inverse blending: undo ``out = (1 - a) * image + a * logo`` at the located logo.

The renderer is public (:func:`medlocker.watermark.render_exact`): inside the
logo each stored pixel is ``y = (1 - a) x + a L`` with ``a = alpha * opacity / 255``.
Knowing where the logo is (:func:`~medlocker.report.attacks.locate.locate_logo`)
gives ``alpha`` and ``L``; the opacity is secret, so the attacker takes the one
whose recovered patch is smoothest (least L1 total variation, on the logo's
bounding box plus a one-pixel ring of untouched neighbours): fundus background
under a logo is smooth, a too-low opacity leaves the logo's edges in and a
too-high one amplifies them inverted. Where ``a`` is near 1 the stored pixel
carries (almost) nothing of the original -- solid logo pixels leave nothing to
invert -- so those pixels are inpainted instead (Telea).
"""

from __future__ import annotations

import numpy as np

from medlocker.report.attacks.inpaint import inpaint_mask
from medlocker.report.metrics import check_image

__all__ = ["estimate_opacity", "invert_blend", "SOLID"]

SOLID = 0.9
"""Blend weights above this are inpainted, not inverted (the inverse would amplify quantisation 10x)."""


def estimate_opacity(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> int:
    """The opacity (1..255) whose inverse blend leaves the smoothest patch around the logo."""
    img = check_image(img)
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return 255
    y0, y1 = max(0, ys.min() - 1), min(img.shape[0], ys.max() + 2)
    x0, x1 = max(0, xs.min() - 1), min(img.shape[1], xs.max() + 2)
    region = img[y0:y1, x0:x1].astype(np.float64)
    a0 = alpha[y0:y1, x0:x1, None]
    col = colour[y0:y1, x0:x1]

    def tv(candidates: np.ndarray) -> np.ndarray:
        a = np.minimum(a0[None] * candidates[:, None, None, None] / 255.0, SOLID)  # [K, h, w, 1]
        x = np.clip((region[None] - col[None] * a) / (1.0 - a), 0, 255)
        return np.abs(np.diff(x, axis=1)).sum(axis=(1, 2, 3)) + np.abs(np.diff(x, axis=2)).sum(axis=(1, 2, 3))

    coarse = np.arange(4, 256, 8, dtype=np.float64)
    c = coarse[int(np.argmin(tv(coarse)))]
    fine = np.arange(max(1, c - 8), min(255, c + 8) + 1, dtype=np.float64)
    return int(fine[int(np.argmin(tv(fine)))])


def invert_blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, opacity: int) -> np.ndarray:
    """``img`` with the blend inverted where ``0 < a <= SOLID`` and inpainted where ``a > SOLID``.

    Args:
        img: uint8 ``[H, W, 3]``.
        alpha: ``[H, W]`` logo alpha in 0..1 (:func:`~medlocker.report.attacks.locate.logo_layer`).
        colour: ``[H, W, 3]`` logo colours in 0..255.
        opacity: 1..255, true or estimated.
    """
    img = check_image(img)
    if not 1 <= int(opacity) <= 255:
        raise ValueError(f"opacity must be in 1..255, got {opacity}")
    a = alpha[..., None] * (int(opacity) / 255.0)
    invertible = (a[..., 0] > 0) & (a[..., 0] <= SOLID)
    x = (img.astype(np.float64) - colour * a) / np.maximum(1.0 - a, 1e-6)
    out = img.copy()
    out[invertible] = np.clip(np.rint(x[invertible]), 0, 255).astype(np.uint8)
    return inpaint_mask(out, a[..., 0] > SOLID, method="telea")
