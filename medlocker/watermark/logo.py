"""Logos: loading, deterministic resizing and the size rule.

A logo is a ``uint8`` RGBA array ``h x w x 4``. Its alpha is the per-pixel
shape of the watermark; the searched opacity scales it.
"""

from __future__ import annotations

import io
import math
from importlib import resources
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medlocker.errors import BadInputError

__all__ = ["default_logo", "load_logo", "resize_logo", "logo_size", "MAX_LOGO_SCALE", "DEFAULT_LOGO_SCALE"]

DEFAULT_LOGO_SCALE = 0.04
MAX_LOGO_SCALE = 0.0625  # a logo never covers more than 1/16 of the image


def _to_rgba(im: Image.Image) -> np.ndarray:
    if im.mode != "RGBA":
        # Palette images may carry transparency; everything else becomes opaque.
        im = im.convert("RGBA")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def default_logo() -> np.ndarray:
    """The MedLocker mark shipped in ``medlocker/assets/logo.png``, RGBA ``uint8``."""
    try:
        data = resources.files("medlocker").joinpath("assets", "logo.png").read_bytes()
    except (OSError, NotADirectoryError, TypeError):  # odd (namespace/editable) installs
        data = (Path(__file__).resolve().parents[1] / "assets" / "logo.png").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        return _to_rgba(im)


def load_logo(path: str | PathLike[str]) -> np.ndarray:
    """Read any image file as an RGBA logo (no alpha channel -> fully opaque).

    Raises:
        BadInputError: the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as im:
            im.load()
            logo = _to_rgba(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadInputError(f"cannot read logo {str(path)!r}: {exc}; give a PNG file") from exc
    if logo.shape[0] < 1 or logo.shape[1] < 1:
        raise BadInputError(f"logo {str(path)!r} is empty")
    return logo


def _check_logo(logo: np.ndarray) -> None:
    if not isinstance(logo, np.ndarray) or logo.dtype != np.uint8 or logo.ndim != 3 or logo.shape[2] != 4:
        raise ValueError(f"a logo is a uint8 h x w x 4 (RGBA) array, got {getattr(logo, 'dtype', type(logo))} "
                         f"{getattr(logo, 'shape', '')}")


def resize_logo(logo: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize an RGBA logo to ``w x h`` deterministically.

    Resampling is done on premultiplied colours (PIL ``RGBa``) with LANCZOS so
    that transparent pixels do not bleed their (meaningless) colour into the
    edge. Same size in -> the same array out (a copy).
    """
    _check_logo(logo)
    if w < 1 or h < 1:
        raise ValueError(f"logo size must be >= 1x1, got {w}x{h}")
    if logo.shape[1] == w and logo.shape[0] == h:
        return logo.copy()
    im = Image.fromarray(logo, mode="RGBA").convert("RGBa")
    out = im.resize((int(w), int(h)), Image.Resampling.LANCZOS).convert("RGBA")
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8))


def logo_size(logo: np.ndarray, image_hw: tuple[int, int], *, scale: float = DEFAULT_LOGO_SCALE) -> tuple[int, int]:
    """Largest ``(w, h)`` keeping the logo's aspect with ``w * h <= scale * H * W``.

    A logo that already has such a size (``w * h <= area < (w+1) * (h+1)``, as
    returned by :func:`learn_logo <medlocker.watermark.engine.learn_logo>`) keeps it,
    so it is not resampled twice.

    Args:
        logo: RGBA logo (only its aspect ratio is used).
        image_hw: ``(H, W)`` of the image it goes on.
        scale: area fraction, ``0 < scale <= 0.0625``.

    Raises:
        ValueError: ``scale`` out of range or the image too small for a 1 px logo.
    """
    _check_logo(logo)
    if not 0.0 < scale <= MAX_LOGO_SCALE:
        raise ValueError(f"logo scale must be in (0, {MAX_LOGO_SCALE}], got {scale}")
    H, W = int(image_hw[0]), int(image_hw[1])
    area = scale * H * W
    lh, lw = logo.shape[:2]
    if lw * lh <= area < (lw + 1) * (lh + 1) and lw <= W and lh <= H:
        return lw, lh  # already sized for this image (e.g. a learned logo): keep it exact
    aspect = lw / lh
    h = max(1, math.floor(math.sqrt(area / aspect)))
    w = max(1, math.floor(h * aspect))
    # Integer rounding can still overshoot by a pixel row for extreme aspects.
    while w * h > area and h > 1:
        h -= 1
        w = max(1, math.floor(h * aspect))
    if w * h > area or w > W or h > H:
        raise ValueError(f"image {H}x{W} is too small for a logo at scale {scale}")
    return w, h
