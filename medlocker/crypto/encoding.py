"""Byte-exact encodings shared by every signed or sealed MedLocker object.

Two rules keep signatures meaningful:

* What is signed or bound as associated data is *canonical JSON*
  (:func:`canonical_json`): sorted keys, no whitespace, UTF-8, and only types
  with exactly one encoding (no floats).
* Untrusted JSON is read with :func:`parse_json_strict`, which refuses what a
  lenient parser would silently accept (duplicate keys, ``NaN``, floats,
  non-UTF-8, runaway nesting). Base64 is decoded with :func:`b64decode`, which
  accepts only the one canonical spelling of each byte string.

Every failure here is a :class:`ValueError`; the format modules turn it into
the :class:`~medlocker.errors.MedLockerError` that fits their file.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = [
    "canonical_json",
    "parse_json_strict",
    "b64encode",
    "b64decode",
]

_MAX_DEPTH = 32


def _check_canonical_types(obj: Any, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"canonical_json: nesting deeper than {_MAX_DEPTH}")
    if obj is None or isinstance(obj, (bool, int, str)):
        return
    if isinstance(obj, float):
        raise ValueError("canonical_json: floats have no canonical encoding; use int or str")
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _check_canonical_types(item, depth + 1)
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f"canonical_json: dict keys must be str, got {type(key).__name__}")
            _check_canonical_types(value, depth + 1)
        return
    raise TypeError(f"canonical_json: unsupported type {type(obj).__name__}")


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` to its one canonical JSON byte string.

    Keys are sorted, there is no whitespace, strings are UTF-8 (not ``\\u``
    escaped). Only ``dict`` (str keys), ``list``/``tuple``, ``str``, ``int``,
    ``bool`` and ``None`` are allowed, so equal objects give equal bytes.

    Args:
        obj: The value to encode.

    Returns:
        The UTF-8 bytes.

    Raises:
        ValueError: A float, a non-str key, a lone surrogate, or nesting deeper
            than 32 levels.
        TypeError: Any other unsupported type.
    """
    _check_canonical_types(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on lone surrogates


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _reject_float(text: str) -> Any:
    raise ValueError(f"floats are not allowed in MedLocker JSON: {text[:20]!r}")


def _reject_constant(text: str) -> Any:
    raise ValueError(f"non-standard JSON constant {text!r}")


def parse_json_strict(data: bytes) -> Any:
    """Parse untrusted JSON bytes, refusing anything ambiguous.

    Args:
        data: UTF-8 JSON bytes.

    Returns:
        The decoded value (dicts, lists, str, int, bool, None).

    Raises:
        ValueError: Not UTF-8, not JSON, duplicate keys, floats, ``NaN``/
            ``Infinity``, or nesting too deep to parse.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
        )
    except RecursionError as exc:  # "[[[[..." deep enough to exhaust the stack
        raise ValueError("JSON nested too deeply") from exc
    # json.JSONDecodeError and UnicodeDecodeError are ValueErrors already.


def b64encode(data: bytes) -> str:
    """Standard base64 (RFC 4648 section 4, with padding) as ``str``."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: Any) -> bytes:
    """Decode canonical standard base64; reject every other spelling.

    Non-alphabet characters, missing padding and non-zero trailing bits are
    errors, so each byte string has exactly one accepted encoding (no
    malleability in signed files).

    Raises:
        ValueError: ``text`` is not a str or not canonical base64.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return raw
