"""Per-sample restoration payloads: AEAD-sealed original pixels.

Each sample's payload key is derived from the run's content key with HKDF
(salt = dataset id, info = ``b"medlocker.sample.v1" + sample key``), and the
payload is sealed with ChaCha20-Poly1305 whose associated data binds it to the
dataset id, the sample key and the digest of the watermarked bytes. A payload
therefore opens only for the one sample, dataset and watermarked image it was
made for; swapping payloads between samples fails authentication.

Wire form: ``b"MLP1" || nonce (12) || ciphertext || tag (16)``.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medlocker.crypto.encoding import canonical_json
from medlocker.errors import FormatError, IntegrityError

__all__ = [
    "derive_sample_key",
    "seal_payload",
    "open_payload",
    "payload_aad",
    "PAYLOAD_MAGIC",
    "CONTENT_KEY_LEN",
]

PAYLOAD_MAGIC = b"MLP1"
CONTENT_KEY_LEN = 32
_NONCE_LEN = 12
_TAG_LEN = 16
_INFO_PREFIX = b"medlocker.sample.v1"


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str")
    return value


def derive_sample_key(content_key: bytes, *, dataset_id: str, sample_key: str) -> bytes:
    """Derive one sample's 32-byte payload key from the content key.

    HKDF-SHA256 with ``salt = dataset_id`` (UTF-8) and
    ``info = b"medlocker.sample.v1" + sample_key`` (UTF-8).

    Raises:
        ValueError: ``content_key`` is not 32 bytes or an id is empty.
    """
    if len(content_key) != CONTENT_KEY_LEN:
        raise ValueError(f"content_key must be {CONTENT_KEY_LEN} bytes, got {len(content_key)}")
    salt = _check_str("dataset_id", dataset_id).encode("utf-8")
    info = _INFO_PREFIX + _check_str("sample_key", sample_key).encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(bytes(content_key))


def payload_aad(*, dataset_id: str, sample_key: str, watermarked_digest: str) -> bytes:
    """Associated data of a sealed payload: ``canonical_json({"v":1,"dataset","sample","wm"})``."""
    return canonical_json(
        {
            "v": 1,
            "dataset": _check_str("dataset_id", dataset_id),
            "sample": _check_str("sample_key", sample_key),
            "wm": _check_str("watermarked_digest", watermarked_digest),
        }
    )


def seal_payload(
    content_key: bytes,
    plaintext: bytes,
    *,
    dataset_id: str,
    sample_key: str,
    watermarked_digest: str,
    nonce: bytes | None = None,
) -> bytes:
    """Seal one sample's restoration payload.

    Args:
        content_key: The run's 32-byte content key.
        plaintext: The restoration data (original pixels under the logo...).
        dataset_id: Dataset the sample belongs to.
        sample_key: The sample's key in the shards.
        watermarked_digest: Digest of the stored watermarked bytes, as written
            in the manifest.
        nonce: 12-byte nonce; random by default (tests inject it). Never reuse
            a nonce for the same sample key.

    Returns:
        ``b"MLP1" + nonce + ciphertext``.
    """
    aad = payload_aad(dataset_id=dataset_id, sample_key=sample_key, watermarked_digest=watermarked_digest)
    key = derive_sample_key(content_key, dataset_id=dataset_id, sample_key=sample_key)
    nonce = os.urandom(_NONCE_LEN) if nonce is None else bytes(nonce)
    if len(nonce) != _NONCE_LEN:
        raise ValueError(f"nonce must be {_NONCE_LEN} bytes")
    return PAYLOAD_MAGIC + nonce + ChaCha20Poly1305(key).encrypt(nonce, bytes(plaintext), aad)


def open_payload(
    content_key: bytes,
    sealed: bytes,
    *,
    dataset_id: str,
    sample_key: str,
    watermarked_digest: str,
) -> bytes:
    """Authenticate and decrypt a payload made by :func:`seal_payload`.

    Raises:
        FormatError: Not a MedLocker payload, or an unknown payload version.
        IntegrityError: Anything else: tampered or truncated bytes, wrong
            content key, or a payload of another sample, dataset or
            watermarked image (deliberately one error for all of these).
    """
    aad = payload_aad(dataset_id=dataset_id, sample_key=sample_key, watermarked_digest=watermarked_digest)
    key = derive_sample_key(content_key, dataset_id=dataset_id, sample_key=sample_key)
    sealed = bytes(sealed)
    if sealed[:3] != PAYLOAD_MAGIC[:3]:
        raise FormatError(f"sample {sample_key!r}: not a MedLocker sealed payload (bad magic)")
    if sealed[:4] != PAYLOAD_MAGIC:
        raise FormatError(
            f"sample {sample_key!r}: sealed payload version {sealed[3:4]!r} is not supported; upgrade MedLocker"
        )
    body = sealed[len(PAYLOAD_MAGIC) :]
    try:
        if len(body) < _NONCE_LEN + _TAG_LEN:
            raise InvalidTag
        return ChaCha20Poly1305(key).decrypt(body[:_NONCE_LEN], body[_NONCE_LEN:], aad)
    except InvalidTag:
        raise IntegrityError(
            f"sample {sample_key!r} of dataset {dataset_id!r}: sealed payload failed authentication "
            "(tampered, truncated, swapped from another sample, or wrong content key)"
        ) from None
