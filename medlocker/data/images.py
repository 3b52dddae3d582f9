"""Decode source images and lesion masks into plain numpy arrays.

Source images are untrusted input: every decoding failure becomes a
:class:`~medlocker.errors.BadInputError` that names the file and says what to do.
Pixels are returned as stored: EXIF orientation is *not* applied, so the array
matches what other tools that read raw pixels see.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from PIL import Image, UnidentifiedImageError

from medlocker.errors import BadInputError

__all__ = ["IMAGE_EXTENSIONS", "load_image", "load_mask"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File extensions recognised as images (lower case)."""

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)
_HIGH_DEPTH_MODES = ("I", "F") + tuple(m for m in Image.MODES if m.startswith("I;16"))


def _open(path: str | os.PathLike[str], what: str) -> tuple[Image.Image, int | None]:
    """Fully decode ``path`` -> (image, stored bits per channel if known), or raise BadInputError."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.format == "PNG":
                depth = _png_bit_depth(path)
            elif im.format == "TIFF":
                depth = _tiff_bit_depth(im)
            else:
                depth = None
            return im.copy(), depth  # copy: the file closes with the context
    except FileNotFoundError:
        raise BadInputError(f"{os.fspath(path)}: {what} file not found; check the path") from None
    except _DECODE_ERRORS as exc:
        raise BadInputError(
            f"{os.fspath(path)}: cannot decode {what} ({type(exc).__name__}: {exc}); "
            "the file is corrupt, truncated or not an image -- re-export it as PNG"
        ) from None


def _png_bit_depth(path: str | os.PathLike[str]) -> int | None:
    """Bit depth from a PNG's IHDR chunk (Pillow silently reduces 16-bit RGB to 8)."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError:
        return None
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">B", head[24:25])[0]


def _tiff_bit_depth(im: Image.Image) -> int | None:
    tags = getattr(im, "tag_v2", None)
    if not tags or 258 not in tags:
        return None
    bits = tags[258]
    return max(bits) if isinstance(bits, tuple) else int(bits)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to uint8 RGB.

    Grayscale is replicated to three channels; an alpha channel that is fully
    opaque is dropped. Images are returned as stored (no EXIF rotation).

    Args:
        path: image file (PNG, JPEG, TIFF, BMP, ...).

    Returns:
        uint8 array ``[H, W, 3]``.

    Raises:
        BadInputError: the file is missing, corrupt, truncated or not an image;
            it has more than 8 bits per channel; or it has real transparency.
            The message names the file.
    """
    im, depth = _open(path, "image")
    name = os.fspath(path)
    if im.mode in _HIGH_DEPTH_MODES or (depth is not None and depth > 8):
        raise BadInputError(
            f"{name}: {depth or 'more than 8'}-bit image (mode {im.mode}); "
            "MedLocker reads 8-bit images only -- convert to 8-bit first"
        )
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() < 255:
            raise BadInputError(
                f"{name}: image has transparent pixels; flatten it onto a background "
                "(or drop the alpha channel) before packing"
            )
        im = im.convert("RGB") if im.mode.startswith("RGB") else im.convert("L")
    if im.mode != "RGB":
        im = im.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - defensive
        raise BadInputError(f"{name}: decoded to shape {arr.shape}, expected [H, W, 3]")
    return np.ascontiguousarray(arr)


def load_mask(path: str | os.PathLike[str], size: tuple[int, int]) -> np.ndarray:
    """Decode a lesion mask: any non-zero pixel is lesion.

    Args:
        path: mask file (any bit depth; colour masks count a pixel as lesion
            when any colour channel is non-zero and it is not transparent).
        size: ``(height, width)`` of the image the mask belongs to, i.e.
            ``image.shape[:2]``; the mask is resized (nearest) if it differs.

    Returns:
        bool array ``[height, width]``.

    Raises:
        BadInputError: the file is missing, corrupt or not an image.
    """
    height, width = (int(size[0]), int(size[1]))
    im, _ = _open(path, "mask")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    arr = np.asarray(im)
    if arr.ndim == 2:
        mask = arr != 0
    else:
        has_alpha = im.mode in ("RGBA", "LA", "RGBa", "La")
        colour = arr[..., :-1] if has_alpha else arr
        mask = (colour != 0).any(axis=-1)
        if has_alpha:
            mask &= arr[..., -1] != 0
    if mask.shape != (height, width):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
        mask = np.asarray(resized) != 0
    return np.ascontiguousarray(mask)
