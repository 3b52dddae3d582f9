"""Salted, hiding commitments (HMAC-SHA256) to watermark parameters.

The manifest publishes ``commit(params, salt)``; the owner keeps ``params``
and ``salt`` private. Revealing both later proves which parameters were used
(binding: HMAC-SHA256 is collision resistant) while the commitment alone
reveals nothing about them (hiding: the 32-byte salt is a secret HMAC key).
"""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["commit", "new_salt", "check_commitment", "SALT_LEN"]

SALT_LEN = 32
_DOMAIN = b"medlocker.commit.v1"


def new_salt() -> bytes:
    """A fresh 32-byte salt from ``os.urandom``."""
    return os.urandom(SALT_LEN)


def commit(data: bytes, salt: bytes) -> str:
    """Commitment to ``data``: hex of HMAC-SHA256(key=salt, b"medlocker.commit.v1" + data).

    Raises:
        ValueError: ``salt`` is not 32 bytes.
    """
    if len(salt) != SALT_LEN:
        raise ValueError(f"commitment salt must be {SALT_LEN} bytes, got {len(salt)}")
    return hmac.new(bytes(salt), _DOMAIN + bytes(data), hashlib.sha256).hexdigest()


def check_commitment(commitment: str, data: bytes, salt: bytes) -> bool:
    """Whether ``commitment`` opens to ``data`` with ``salt`` (constant-time compare).

    Raises:
        ValueError: ``salt`` is not 32 bytes.
    """
    expected = commit(data, salt)
    if not isinstance(commitment, str):
        return False
    return hmac.compare_digest(expected.encode("ascii"), commitment.encode("utf-8", "surrogatepass"))
