"""Restoration payloads and the digests that pin them.

A logo alone only changes the pixels inside its box, so restoring the original needs
exactly those pixels. The restoration *plaintext* (before sealing), version 1::

    offset size  field
    0      4     magic  b"MLRS"
    4      1     version (1)
    5      3     zero
    8      4x3   image height, width, channels   (uint32 big-endian)
    20     4x4   box x0, y0, x1, y1              (uint32 big-endian, half-open)
    36     ...   zlib stream of original[y0:y1, x0:x1] in C order (uint8)

Version 2 is written when the sample also has an adversarial layer outside the box
(:mod:`medlocker.watermark.layer`): the same 36-byte header with version 2, then::

    36     4     n: length of the zlib stream of the box pixels (uint32 big-endian)
    40     n     zlib stream of original[y0:y1, x0:x1]
    40+n   ...   the layer (medlocker.watermark.layer.Layer.to_bytes: "MLAY", grid, mask)
    ...    4     k: exceptions, pixels the layer's clip to 0..255 lost (uint32 big-endian)
    ...    4k    their flat indices into the H x W x C image, C order (uint32 big-endian, increasing)
    ...    k     their original values (uint8)

Restoring subtracts the layer's offsets everywhere (the published pixels minus the layer
are the originals except at the exceptions), puts the exceptions back, then pastes the box.

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
from ..watermark.layer import Layer, layer_exceptions, remove_layer

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
RESTORATION_VERSION = 2
_VERSIONS = (1, 2)
_U32 = struct.Struct(">I")
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


def build_restoration(original: np.ndarray, box: tuple[int, int, int, int], layer: Layer | None = None) -> bytes:
    """Build the restoration plaintext for ``original`` whose ``box`` was watermarked.

    Args:
        original: The original image, uint8 (H, W, C).
        box: Half-open pixel box ``(x0, y0, x1, y1)`` that covers every pixel the logo changed.
        layer: the sample's adversarial layer outside the box, if any (version 2 is written
            then; without one the plaintext is version 1, byte for byte as before).

    Returns:
        Plaintext bytes (header + zlib of the original pixels under the box [+ layer + exceptions]).

    Raises:
        ValueError: If the image, box or layer is unusable.
    """
    _check_image(original, "original")
    h, w, c = original.shape
    x0, y0, x1, y1 = _check_box(box, h, w)
    region = zlib.compress(np.ascontiguousarray(original[y0:y1, x0:x1]).data, 6)
    if layer is None:
        return _HEADER.pack(RESTORATION_MAGIC, 1, h, w, c, x0, y0, x1, y1) + region
    if layer.mask.shape != (h, w) or c != 3:
        raise ValueError(f"layer is for a {layer.mask.shape} image, got {original.shape}")
    index, values = layer_exceptions(original, layer)
    return b"".join([
        _HEADER.pack(RESTORATION_MAGIC, 2, h, w, c, x0, y0, x1, y1), _U32.pack(len(region)), region,
        layer.to_bytes(), _U32.pack(len(index)), index.astype(">u4").tobytes(), values.tobytes()])


@dataclass(frozen=True)
class Restoration:
    """A parsed restoration plaintext: the original pixels under ``box`` (and the layer outside it)."""

    height: int
    width: int
    channels: int
    box: tuple[int, int, int, int]
    pixels: bytes  # C-order uint8 of shape (y1-y0, x1-x0, channels)
    layer: Layer | None = None
    exception_index: np.ndarray | None = None  # uint32 flat indices (version 2)
    exception_values: np.ndarray | None = None  # uint8

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
    if version not in _VERSIONS:
        raise FormatError(f"restoration payload version {version} is not supported (need one of {_VERSIONS})")
    if plaintext[5:8] != b"\0\0\0":
        raise FormatError("restoration payload header has nonzero reserved bytes")
    if h == 0 or w == 0 or c == 0 or not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise FormatError(f"restoration box {(x0, y0, x1, y1)} does not fit a {w}x{h}x{c} image")
    expected = (y1 - y0) * (x1 - x0) * c
    if expected > _MAX_REGION_BYTES:  # zlib's max_length is a C ssize_t: bound it before asking
        raise FormatError(f"restoration box of {expected} bytes is larger than the {_MAX_REGION_BYTES} accepted")
    view = memoryview(plaintext)
    start, end = _HEADER.size, len(plaintext)
    if version == 2:
        if end < start + _U32.size:
            raise FormatError("restoration payload is truncated")
        (n,) = _U32.unpack_from(view, start)
        start += _U32.size
        end = start + n
        if end > len(plaintext):
            raise FormatError("restoration payload pixels are truncated")
    d = zlib.decompressobj()
    try:
        # Bounded: never inflate more than the box can hold (+1 to detect overflow).
        pixels = d.decompress(view[start:end], expected + 1)
        if len(pixels) <= expected:
            pixels += d.flush()
    except zlib.error as exc:
        raise FormatError(f"restoration payload pixels are corrupt: {exc}") from None
    if len(pixels) != expected or not d.eof or d.unused_data or d.unconsumed_tail:
        raise FormatError("restoration payload pixels have the wrong length")
    if version == 1:
        return Restoration(h, w, c, (x0, y0, x1, y1), pixels)
    try:
        layer, used = Layer.from_bytes(view[end:])
    except ValueError as exc:
        raise FormatError(f"restoration payload layer is malformed: {exc}") from None
    pos = end + used
    if layer.mask.shape != (h, w) or c != 3 or len(plaintext) < pos + _U32.size:
        raise FormatError("restoration payload layer does not fit its image")
    (k,) = _U32.unpack_from(view, pos)
    pos += _U32.size
    if len(plaintext) != pos + 5 * k:
        raise FormatError("restoration payload exceptions have the wrong length")
    index = np.frombuffer(view[pos:pos + 4 * k], dtype=">u4").astype(np.uint32)
    values = np.frombuffer(view[pos + 4 * k:], dtype=np.uint8).copy()
    if k and (int(index[-1]) >= h * w * c or np.any(np.diff(index.astype(np.int64)) <= 0)):
        raise FormatError("restoration payload exceptions are out of order or outside the image")
    return Restoration(h, w, c, (x0, y0, x1, y1), pixels, layer, index, values)


def _restore(watermarked: np.ndarray, r: Restoration) -> np.ndarray:
    """The original from the watermarked pixels and a parsed restoration (a new array)."""
    out = watermarked.copy()
    if r.layer is not None:
        try:
            out = remove_layer(out, r.layer, r.exception_index, r.exception_values)
        except ValueError:
            raise FormatError("restoration payload layer does not match the watermarked pixels") from None
    x0, y0, x1, y1 = r.box
    out[y0:y1, x0:x1] = np.frombuffer(r.pixels, dtype=np.uint8).reshape(r.region_shape)
    return out


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
    return _restore(watermarked, r)


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
    if r.layer is not None:  # the layer spans the image: restore it whole
        img.paste(Image.fromarray(_restore(np.asarray(img), r)), (0, 0))
        return img
    x0, y0, x1, y1 = r.box
    img.paste(Image.frombytes("RGB", (x1 - x0, y1 - y0), r.pixels), (x0, y0))
    return img
