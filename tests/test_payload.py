"""Restoration payload format and pixel digests (medlocker.shards.payload)."""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medlocker.errors import FormatError
from medlocker.shards.payload import (
    apply_restoration,
    build_restoration,
    parse_restoration,
    pixel_digest,
    pixel_digest_of_raw,
    png_header,
    restore_image,
    sha256_digest,
)

TINY = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
TINY_DIGEST = "sha256:ed1f06314c65b4e173b2186dce254134469aa5b791617094e4d5431e26351a36"
TINY_RESTORATION = bytes.fromhex(
    "4d4c5253" "01" "000000"  # magic, version, reserved
    "00000002" "00000003" "00000003"  # H, W, C
    "00000001" "00000000" "00000003" "00000002"  # x0, y0, x1, y1
    "789c6366616563e7e0e1e5e31710040002530079"  # zlib of the 2x2x3 region
)


def test_pixel_digest_golden_vector() -> None:
    assert pixel_digest(TINY) == TINY_DIGEST
    spec = hashlib.sha256(b"medlocker.pixels.v1" + struct.pack(">III", 2, 3, 3) + bytes(range(18))).hexdigest()
    assert TINY_DIGEST == "sha256:" + spec


def test_pixel_digest_depends_on_shape_and_layout() -> None:
    flat = TINY.reshape(3, 2, 3)  # same bytes, other shape
    assert pixel_digest(flat) != TINY_DIGEST
    assert pixel_digest(np.asfortranarray(TINY)) == TINY_DIGEST  # layout in memory does not matter
    assert pixel_digest_of_raw(2, 3, 3, TINY.tobytes()) == TINY_DIGEST
    with pytest.raises(ValueError):
        pixel_digest(TINY.astype(np.uint16))
    with pytest.raises(ValueError):
        pixel_digest(TINY[:, :, 0])
    with pytest.raises(TypeError):
        pixel_digest(TINY.tolist())  # type: ignore[arg-type]


def test_restoration_golden_vector() -> None:
    assert build_restoration(TINY, (1, 0, 3, 2)) == TINY_RESTORATION
    r = parse_restoration(TINY_RESTORATION)
    assert (r.height, r.width, r.channels, r.box) == (2, 3, 3, (1, 0, 3, 2))
    assert r.pixels == TINY[0:2, 1:3].tobytes()
    assert zlib.decompress(TINY_RESTORATION[36:]) == r.pixels


def test_sha256_digest() -> None:
    assert sha256_digest(b"abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 23),
    w=st.integers(1, 23),
    c=st.sampled_from([1, 3, 4]),
    data=st.data(),
)
def test_round_trip_exact_any_size_and_box(h: int, w: int, c: int, data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2**32 - 1))
    original = np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)
    x0 = data.draw(st.integers(0, w - 1))
    y0 = data.draw(st.integers(0, h - 1))
    x1 = data.draw(st.integers(x0 + 1, w))
    y1 = data.draw(st.integers(y0 + 1, h))
    watermarked = original.copy()
    watermarked[y0:y1, x0:x1] = 255 - watermarked[y0:y1, x0:x1]
    before = watermarked.copy()
    restored = apply_restoration(watermarked, build_restoration(original, (x0, y0, x1, y1)))
    assert restored.dtype == np.uint8 and np.array_equal(restored, original)
    assert np.array_equal(watermarked, before)  # input untouched
    assert pixel_digest(restored) == pixel_digest(original)


@pytest.mark.parametrize("box", [(0, 0, 7, 5), (0, 0, 1, 1), (6, 4, 7, 5), (0, 4, 7, 5), (6, 0, 7, 5), (2, 1, 5, 3)])
def test_round_trip_borders_and_pil_variant(box: tuple[int, int, int, int]) -> None:
    original = np.random.default_rng(7).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    wm = original.copy()
    wm[y0:y1, x0:x1] = 0
    plaintext = build_restoration(original, box)
    assert np.array_equal(apply_restoration(wm, plaintext), original)
    img = Image.fromarray(wm)
    restore_image(img, plaintext)
    assert np.array_equal(np.asarray(img), original)


@pytest.mark.parametrize("box", [(0, 0, 0, 1), (3, 0, 2, 1), (0, 0, 8, 5), (0, 0, 7, 6), (-1, 0, 2, 2), (0, 0, 1)])
def test_build_rejects_bad_boxes(box: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        build_restoration(np.zeros((5, 7, 3), np.uint8), box)  # type: ignore[arg-type]


def _with_header(**fields: int) -> bytes:
    v = dict(magic=b"MLRS", version=1, h=2, w=3, c=3, x0=1, y0=0, x1=3, y1=2) | fields
    head = struct.pack(">4sB3x3I4I", v["magic"], v["version"], v["h"], v["w"], v["c"], v["x0"], v["y0"], v["x1"], v["y1"])
    return head + TINY_RESTORATION[36:]


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        TINY_RESTORATION[:35],  # truncated header
        TINY_RESTORATION[:-1],  # truncated zlib stream
        TINY_RESTORATION + b"\0",  # trailing garbage
        b"XLRS" + TINY_RESTORATION[4:],  # magic
        _with_header(version=2),
        TINY_RESTORATION[:5] + b"\x01" + TINY_RESTORATION[6:],  # reserved byte
        _with_header(x1=4),  # box outside the image
        _with_header(x0=3),  # empty box
        _with_header(y1=1),  # region smaller than the stored pixels
        _with_header(h=0),
        TINY_RESTORATION[:36] + zlib.compress(b"\0" * 13),  # too many pixels
        TINY_RESTORATION[:36] + b"not zlib at all",
        TINY_RESTORATION[:36] + zlib.compress(b"\0" * 10**6),  # bomb: inflation is bounded
    ],
)
def test_malformed_restoration_raises_format_error(bad: bytes) -> None:
    with pytest.raises(FormatError):
        apply_restoration(TINY, bad)


def test_restoration_for_another_shape_raises_format_error() -> None:
    with pytest.raises(FormatError):
        apply_restoration(np.zeros((3, 3, 3), np.uint8), TINY_RESTORATION)
    with pytest.raises(FormatError):
        restore_image(Image.new("RGB", (3, 3)), TINY_RESTORATION)
    with pytest.raises(FormatError):
        restore_image(Image.new("L", (3, 2)), TINY_RESTORATION)


def test_png_header() -> None:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (5, 4)).save(buf, format="PNG")
    assert png_header(buf.getvalue()) == (5, 4, 8, 2)
    assert png_header(b"GIF89a" + b"\0" * 40) is None
    assert png_header(buf.getvalue()[:20]) is None


# ------------------------------------------------- fuzz (issue 17: only FormatError from untrusted bytes)

from hypothesis import given as _given, settings as _settings  # noqa: E402
from hypothesis import strategies as _st  # noqa: E402


@_settings(max_examples=400, deadline=None)
@_given(_st.binary(max_size=64), _st.lists(_st.integers(0, 2**32 - 1), min_size=7, max_size=7))
def test_parse_restoration_fuzz_raises_only_format_error(tail: bytes, fields: list[int]) -> None:
    """Random headers (huge boxes included: they raised OverflowError in zlib) and random bytes."""
    import struct

    from medlocker.errors import FormatError
    from medlocker.shards.payload import parse_restoration

    header = struct.pack(">4sB3x3I4I", b"MLRS", 1, *fields)
    for data in (header + tail, tail, header[: len(tail) % len(header)]):
        try:
            parse_restoration(data)
        except FormatError:
            pass
