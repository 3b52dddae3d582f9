"""Restoration payloads and the digests that pin them.

A watermark only changes the pixels inside the logo box, so restoring the original
needs exactly those pixels. The restoration *plaintext* (before sealing) is::

    offset size  field
    0      4     magic  b"MLRS"
    4      1     version (1)
    5      3     zero
    8      4x3   image height, width, channels   (uint32 big-endian)
    20     4x4   box x0, y0, x1, y1              (uint32 big-endian, half-open)
    36     ...   zlib stream of original[y0:y1, x0:x1] in C order (uint8)

:func:`pixel_digest` names an image's exact pixels independently of how they are
encoded, so the owner can sign the original without publishing it.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from dataclasses import dataclass
import numpy as np
from PIL import Image

from ..errors import FormatError

__all__ = [
    "RESTORATION_MAGIC",
    "RESTORATION_VERSION",
    "Restoration",
    "sha256_digest",
    "is_sha256_digest",
    "pixel_digest",
    "pixel_digest_of_raw",
    "build_restoration",
    "parse_restoration",
    "apply_restoration",
    "restore_image",
    "png_header",
]

RESTORATION_MAGIC = b"MLRS"
RESTORATION_VERSION = 1
_HEADER = struct.Struct(">4sB3x3I4I")
_PIXELS_DOMAIN = b"medlocker.pixels.v1"
_PIXELS_SHAPE = struct.Struct(">3I")
_DIGEST_PREFIX = "sha256:"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR = struct.Struct(">I4sIIBB")
_MAX_REGION_BYTES = 2**30  # restored box pixels; far above any real logo box


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    """``"sha256:" + hex`` of ``data``."""
    return _DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def is_sha256_digest(value: object) -> bool:
    """True if ``value`` is a well-formed ``"sha256:<64 lowercase hex>"`` string."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def png_header(png: bytes) -> tuple[int, int, int, int] | None:
    """``(width, height, bit_depth, color_type)`` from a PNG's IHDR; ``None`` if not a PNG."""
    if len(png) < 8 + _PNG_IHDR.size or png[:8] != _PNG_SIGNATURE:
        return None
    length, tag, width, height, depth, color = _PNG_IHDR.unpack_from(png, 8)
    if length != 13 or tag != b"IHDR":
        return None
    return width, height, depth, color


def pixel_digest_of_raw(height: int, width: int, channels: int, raw: bytes | memoryview) -> str:
    """Pixel digest from raw C-order uint8 bytes (same value as :func:`pixel_digest`)."""
    nbytes = memoryview(raw).nbytes
    if nbytes != height * width * channels:
        raise ValueError(f"raw buffer has {nbytes} bytes, expected {height}x{width}x{channels}")
    h = hashlib.sha256(_PIXELS_DOMAIN)
    h.update(_PIXELS_SHAPE.pack(height, width, channels))
    h.update(raw)
    return _DIGEST_PREFIX + h.hexdigest()


def _check_image(img: np.ndarray, what: str) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"{what} must be a uint8 HxWxC array, got {img.dtype} with shape {img.shape}")


def pixel_digest(img: np.ndarray) -> str:
    """Digest of an image's exact pixels.

    ``"sha256:" + hex(sha256(b"medlocker.pixels.v1" + uint32be(H, W, C) + raw bytes))``.

    Args:
        img: uint8 array of shape (H, W, C).

    Returns:
        The digest string.
    """
    _check_image(img, "image")
    h, w, c = img.shape
    return pixel_digest_of_raw(h, w, c, np.ascontiguousarray(img).data)


def _check_box(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    if len(box) != 4 or not all(isinstance(v, (int, np.integer)) for v in box):
        raise ValueError(f"box must be four ints (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box!r} is empty or outside the {width}x{height} image")
    return x0, y0, x1, y1


def build_restoration(original: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    """Build the restoration plaintext for ``original`` whose ``box`` was watermarked.

    Args:
        original: The original image, uint8 (H, W, C).
        box: Half-open pixel box ``(x0, y0, x1, y1)`` that covers every changed pixel.

    Returns:
        Plaintext bytes (header + zlib of the original pixels under the box).

    Raises:
        ValueError: If the image or box is unusable.
    """
    _check_image(original, "original")
    h, w, c = original.shape
    x0, y0, x1, y1 = _check_box(box, h, w)
    region = np.ascontiguousarray(original[y0:y1, x0:x1])
    header = _HEADER.pack(RESTORATION_MAGIC, RESTORATION_VERSION, h, w, c, x0, y0, x1, y1)
    return header + zlib.compress(region.data, 6)


@dataclass(frozen=True)
class Restoration:
    """A parsed restoration plaintext: the original pixels under ``box``."""

    height: int
    width: int
    channels: int
    box: tuple[int, int, int, int]
    pixels: bytes  # C-order uint8 of shape (y1-y0, x1-x0, channels)

    @property
    def region_shape(self) -> tuple[int, int, int]:
        x0, y0, x1, y1 = self.box
        return (y1 - y0, x1 - x0, self.channels)


def parse_restoration(plaintext: bytes) -> Restoration:
    """Parse and bounds-check a restoration plaintext.

    Raises:
        FormatError: If the data is truncated, has an unknown magic/version, an
            impossible box, or pixels of the wrong length.
    """
    if len(plaintext) < _HEADER.size:
        raise FormatError("restoration payload is truncated")
    magic, version, h, w, c, x0, y0, x1, y1 = _HEADER.unpack_from(plaintext)
    if magic != RESTORATION_MAGIC:
        raise FormatError("restoration payload has a bad magic")
    if version != RESTORATION_VERSION:
        raise FormatError(f"restoration payload version {version} is not supported (need {RESTORATION_VERSION})")
    if plaintext[5:8] != b"\0\0\0":
        raise FormatError("restoration payload header has nonzero reserved bytes")
    if h == 0 or w == 0 or c == 0 or not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise FormatError(f"restoration box {(x0, y0, x1, y1)} does not fit a {w}x{h}x{c} image")
    expected = (y1 - y0) * (x1 - x0) * c
    if expected > _MAX_REGION_BYTES:  # zlib's max_length is a C ssize_t: bound it before asking
        raise FormatError(f"restoration box of {expected} bytes is larger than the {_MAX_REGION_BYTES} accepted")
    d = zlib.decompressobj()
    try:
        # Bounded: never inflate more than the box can hold (+1 to detect overflow).
        pixels = d.decompress(memoryview(plaintext)[_HEADER.size :], expected + 1)
        if len(pixels) <= expected:
            pixels += d.flush()
    except zlib.error as exc:
        raise FormatError(f"restoration payload pixels are corrupt: {exc}") from None
    if len(pixels) != expected or not d.eof or d.unused_data or d.unconsumed_tail:
        raise FormatError("restoration payload pixels have the wrong length")
    return Restoration(h, w, c, (x0, y0, x1, y1), pixels)


def apply_restoration(watermarked: np.ndarray, plaintext: bytes) -> np.ndarray:
    """Return the exact original: ``watermarked`` with the box pixels put back.

    Args:
        watermarked: The watermarked image, uint8 (H, W, C); not modified.
        plaintext: Restoration plaintext from :func:`build_restoration`.

    Returns:
        A new array equal to the original image.

    Raises:
        FormatError: If the plaintext is malformed or does not fit the image.
    """
    _check_image(watermarked, "watermarked")
    r = parse_restoration(plaintext)
    if watermarked.shape != (r.height, r.width, r.channels):
        raise FormatError(
            f"restoration payload is for a {r.width}x{r.height}x{r.channels} image, "
            f"got shape {watermarked.shape}"
        )
    x0, y0, x1, y1 = r.box
    out = watermarked.copy()
    out[y0:y1, x0:x1] = np.frombuffer(r.pixels, dtype=np.uint8).reshape(r.region_shape)
    return out


def restore_image(img: Image.Image, plaintext: bytes) -> Image.Image:
    """In-place PIL variant of :func:`apply_restoration` for RGB images.

    Pastes only the box, so restoring costs the size of the logo, not the image.

    Raises:
        FormatError: If the plaintext is malformed or does not fit the image.
    """
    r = parse_restoration(plaintext)
    if img.mode != "RGB" or r.channels != 3 or img.size != (r.width, r.height):
        raise FormatError(
            f"restoration payload is for a {r.width}x{r.height}x{r.channels} image, "
            f"got a {img.size[0]}x{img.size[1]} {img.mode} image"
        )
    x0, y0, x1, y1 = r.box
    img.paste(Image.frombytes("RGB", (x1 - x0, y1 - y0), r.pixels), (x0, y0))
    return img
