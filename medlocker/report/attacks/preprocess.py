"""DR preprocessing an unlicensed user runs before their own models.

Real diabetic-retinopathy pipelines normalise colour and crop the field of view
before a model sees the image. Both matter here: the local colour subtraction
flattens a blended logo's low-frequency tint, and the circular crop at 90 % of
the field-of-view radius cuts any logo placed on the rim.

* :func:`graham` -- B. Graham's Kaggle DR (2015) recipe,
  ``4 * I - 4 * Gauss(I, sigma = R / 30) + 128``, then grey (128) outside 90 %
  of the field-of-view radius ``R``;
* :func:`clahe` -- contrast-limited adaptive histogram equalisation
  (``cv2.createCLAHE``) on the L channel of CIE L*a*b*, then black outside the
  same circle.

The attacker's models are trained on clean images preprocessed the same way
(the report's harness trains such a copy of each held-out architecture).
"""

from __future__ import annotations

import cv2
import numpy as np

from medlocker.report.metrics import check_image

__all__ = ["fov_circle", "circular_crop", "graham", "clahe", "PREPROCESSORS"]

_DARK = 20  # max channel below this is fundus background (the field-of-view rule of the packer)


def fov_circle(img: np.ndarray) -> tuple[float, float, float]:
    """``(cx, cy, radius)`` of the field of view: the circle of the non-dark pixels' extent.

    The radius is half the larger of the widths of the non-dark rows and
    columns (Graham's estimate from the middle row, made robust to a dark
    lesion there); an image without a dark border gets the inscribed circle.
    """
    img = check_image(img)
    h, w = img.shape[:2]
    lit = img.max(axis=2) >= _DARK
    cols, rows = np.flatnonzero(lit.any(axis=0)), np.flatnonzero(lit.any(axis=1))
    if len(cols) == 0 or len(rows) == 0:
        return (w - 1) / 2, (h - 1) / 2, min(h, w) / 2
    cx, cy = (cols[0] + cols[-1]) / 2, (rows[0] + rows[-1]) / 2
    radius = max(cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1) / 2
    return float(cx), float(cy), float(radius)


def circular_crop(img: np.ndarray, fraction: float = 0.9, fill: int = 0, *, reference: np.ndarray | None = None) -> np.ndarray:
    """``img`` with every pixel outside ``fraction`` of the field-of-view radius set to ``fill``.

    The circle is measured on ``reference`` (default ``img``): a preprocessed image
    has lost its dark border, so the preprocessors measure it on their input.
    """
    img = check_image(img)
    if not 0 < fraction <= 1.5:
        raise ValueError(f"fraction must be in (0, 1.5], got {fraction}")
    cx, cy, r = fov_circle(img if reference is None else reference)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= (fraction * r) ** 2
    out = np.full_like(img, fill)
    out[inside] = img[inside]
    return out


def graham(img: np.ndarray, *, sigma_fraction: float = 1 / 30, crop: float = 0.9) -> np.ndarray:
    """Graham's local colour subtraction, then a circular crop (grey outside)."""
    img = check_image(img)
    _, _, r = fov_circle(img)
    sigma = max(0.5, sigma_fraction * r)
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    out = cv2.addWeighted(img, 4.0, blurred, -4.0, 128.0)  # saturating uint8 arithmetic, as in the recipe
    return circular_crop(out, crop, 128, reference=img)


def clahe(img: np.ndarray, *, clip_limit: float = 2.0, tiles: int = 8, crop: float = 0.9) -> np.ndarray:
    """CLAHE on the L channel (CIE L*a*b*), then a circular crop (black outside)."""
    img = check_image(img)
    lab = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2LAB)
    eq = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles)))
    lab[..., 0] = eq.apply(np.ascontiguousarray(lab[..., 0]))
    return circular_crop(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), crop, 0, reference=img)


PREPROCESSORS = {"graham": graham, "clahe": clahe}
"""The preprocessing attacks by name; each needs models trained on images it preprocessed."""
