"""Inpaint the pixels an attacker believes the logo covers (OpenCV Telea or Navier-Stokes).

The mask is the located logo's alpha (:func:`~medlocker.report.attacks.locate.logo_layer`)
grown by a few pixels (a dilated mask also covers the logo's anti-aliased rim
and a localisation off by a pixel or two). Only masked pixels change.
"""

from __future__ import annotations

import cv2
import numpy as np

from medlocker.report.metrics import check_image

__all__ = ["METHODS", "dilate", "inpaint_mask"]

METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
"""``cv2.inpaint`` methods: Telea (2004) fast marching, Bertalmio et al. (2001) Navier-Stokes."""


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Boolean ``mask`` grown by ``px`` pixels (a ``(2 px + 1)`` square structuring element)."""
    mask = np.asarray(mask, dtype=bool)
    if px <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def inpaint_mask(img: np.ndarray, mask: np.ndarray, *, method: str = "telea", radius: int = 3) -> np.ndarray:
    """``cv2.inpaint`` of ``img`` where ``mask`` is True; every other pixel is returned unchanged.

    Raises:
        ValueError: unknown ``method`` or a mask of another shape.
    """
    img = check_image(img)
    if method not in METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; known: {', '.join(METHODS)}")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != img.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {img.shape[:2]}")
    if not mask.any():
        return img.copy()
    out = cv2.inpaint(np.ascontiguousarray(img), mask.astype(np.uint8) * 255, float(radius), METHODS[method])
    out[~mask] = img[~mask]  # cv2.inpaint leaves unmasked pixels alone; make it a guarantee
    return out
