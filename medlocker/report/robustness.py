"""Everyday image transforms a protected image may meet: do the models recover?

Each transform maps a uint8 ``[H, W, 3]`` image to a uint8 image of the same
shape. The kernels are pure, deterministic functions with explicit parameters;
:data:`TRANSFORMS` names the fixed settings the report uses, and :func:`apply`
looks a name up.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
from PIL import Image

from medlocker.report.metrics import check_image

__all__ = [
    "TRANSFORMS",
    "HEADLINE_TRANSFORMS",
    "apply",
    "apply_batch",
    "jpeg",
    "resize_roundtrip",
    "median",
    "gaussian_blur",
    "center_crop",
    "rotate",
]


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` with Pillow (default 4:2:0 chroma subsampling) and decode."""
    buf = io.BytesIO()
    Image.fromarray(check_image(img)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def resize_roundtrip(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize by ``scale`` and back to the original size, bilinear both ways."""
    h, w = check_image(img).shape[:2]
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def median(img: np.ndarray, ksize: int) -> np.ndarray:
    """Median filter with a ``ksize`` x ``ksize`` window (``cv2.medianBlur``)."""
    return cv2.medianBlur(np.ascontiguousarray(check_image(img)), int(ksize))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` px (kernel side from sigma, reflected border)."""
    return cv2.GaussianBlur(check_image(img), (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def center_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the central ``fraction`` of each side and resize back (bilinear)."""
    h, w = check_image(img).shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre by ``degrees`` (counter-clockwise), bilinear, black fill."""
    h, w = check_image(img).shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(degrees), 1.0)
    return cv2.warpAffine(
        img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg90": partial(jpeg, quality=90),
    "jpeg75": partial(jpeg, quality=75),
    "jpeg50": partial(jpeg, quality=50),
    "resize0.5": partial(resize_roundtrip, scale=0.5),
    "median3": partial(median, ksize=3),
    "blur": partial(gaussian_blur, sigma=1.0),
    "crop": partial(center_crop, fraction=0.9),
    "rotate": partial(rotate, degrees=5.0),
    "rotate-5": partial(rotate, degrees=-5.0),
}
"""The named settings the report measures. ``rotate`` is +5 degrees, ``rotate-5`` is -5."""

HEADLINE_TRANSFORMS = ("jpeg75", "resize0.5", "median3")
"""The transforms behind the headline robustness number (target: accuracy <= 30 %)."""


def apply(name: str, img: np.ndarray) -> np.ndarray:
    """Apply the transform registered as ``name`` to one uint8 ``[H, W, 3]`` image.

    Raises:
        ValueError: ``name`` is not in :data:`TRANSFORMS` (the message lists them).
    """
    return _lookup(name)(img)


def apply_batch(name: str, images: np.ndarray) -> np.ndarray:
    """Apply the transform ``name`` to every image of a uint8 ``[N, H, W, 3]`` batch."""
    fn = _lookup(name)
    return np.stack([fn(im) for im in images]) if len(images) else np.array(images, copy=True)


def _lookup(name: str) -> Callable[[np.ndarray], np.ndarray]:
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}") from None
