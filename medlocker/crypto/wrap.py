"""Wrapping a content key to a licensee's X25519 key with HPKE (RFC 9180).

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode,
single-shot, ``info = context``, empty AAD. The blob is::

    b"MLW1" || enc (32, the ephemeral X25519 public key) || ciphertext || tag (16)

Production wrapping and all unwrapping use the HPKE implementation of
``cryptography`` (``cryptography.hazmat.primitives.hpke``). That API draws
its ephemeral key internally, so for golden vectors ``wrap_key`` accepts an
injected ``ephemeral`` key and then runs a small, byte-compatible
implementation of the same RFC 9180 base-mode seal built from
``cryptography`` primitives. The test suite checks that path against the
RFC 9180 appendix A.2 test vector and checks that ``cryptography`` opens
what it produces, so both paths give the same format.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from medlocker.crypto.identity import Identity, PublicIdentity
from medlocker.errors import FormatError, IntegrityError

__all__ = ["wrap_key", "unwrap_key", "WRAP_MAGIC", "WRAP_ALG"]

WRAP_MAGIC = b"MLW1"
WRAP_ALG = "HPKE-base/DHKEM-X25519-HKDF-SHA256/HKDF-SHA256/ChaCha20Poly1305"
_ENC_LEN = 32
_TAG_LEN = 16
_MIN_KEY, _MAX_KEY = 16, 64

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_KEM_SUITE_ID = b"KEM\x00\x20"  # DHKEM(X25519, HKDF-SHA256)
_HPKE_SUITE_ID = b"HPKE\x00\x20\x00\x01\x00\x03"  # kem 0x20, kdf 0x01, aead 0x03
_MODE_BASE = b"\x00"


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(b"HPKE-v1" + suite_id + label + ikm)
    return mac.finalize()


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=labeled_info).derive(prk)


def _hpke_seal_base(
    recipient: X25519PublicKey, info: bytes, aad: bytes, plaintext: bytes, ephemeral: X25519PrivateKey
) -> tuple[bytes, bytes]:
    """RFC 9180 SetupBaseS + Seal (sequence 0) with a caller-chosen ephemeral key.

    Returns:
        ``(enc, ciphertext)``.
    """
    dh = ephemeral.exchange(recipient)  # ValueError on a low-order recipient key
    enc = ephemeral.public_key().public_bytes_raw()
    kem_context = enc + recipient.public_bytes_raw()
    eae_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    shared_secret = _labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, 32)
    psk_id_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"info_hash", info)
    context = _MODE_BASE + psk_id_hash + info_hash
    secret = _labeled_extract(_HPKE_SUITE_ID, shared_secret, b"secret", b"")
    key = _labeled_expand(_HPKE_SUITE_ID, secret, b"key", context, 32)
    base_nonce = _labeled_expand(_HPKE_SUITE_ID, secret, b"base_nonce", context, 12)
    return enc, ChaCha20Poly1305(key).encrypt(base_nonce, plaintext, aad)


def wrap_key(
    key: bytes,
    recipient: PublicIdentity,
    *,
    context: bytes,
    ephemeral: X25519PrivateKey | None = None,
) -> bytes:
    """Encrypt ``key`` so that only ``recipient``'s X25519 private key opens it.

    Args:
        key: The secret to wrap (16..64 bytes; content keys are 32).
        recipient: Who may unwrap it.
        context: HPKE ``info``; unwrapping needs the same bytes, so it binds
            the blob to its use (the licence puts dataset, licence and
            licensee ids here).
        ephemeral: Fixed ephemeral key, for golden-vector tests only. Never
            reuse one in production; leave ``None``.

    Returns:
        ``b"MLW1" + enc + ciphertext``.

    Raises:
        ValueError: Bad key length, empty context, or a degenerate recipient key.
    """
    key = bytes(key)
    if not _MIN_KEY <= len(key) <= _MAX_KEY:
        raise ValueError(f"key to wrap must be {_MIN_KEY}..{_MAX_KEY} bytes, got {len(key)}")
    if not isinstance(context, (bytes, bytearray)) or not context:
        raise ValueError("context must be non-empty bytes")
    if ephemeral is None:
        hpke_ct = _SUITE.encrypt(key, recipient.x25519, info=bytes(context))
    else:
        enc, ct = _hpke_seal_base(recipient.x25519, bytes(context), b"", key, ephemeral)
        hpke_ct = enc + ct
    return WRAP_MAGIC + hpke_ct


def unwrap_key(blob: bytes, identity: Identity, *, context: bytes) -> bytes:
    """Open a blob made by :func:`wrap_key`.

    Raises:
        FormatError: Not a MedLocker wrapped key (bad magic or version).
        IntegrityError: Any other failure: another recipient, another
            context, or altered bytes (one error for all of them).
    """
    blob = bytes(blob)
    if blob[:4] != WRAP_MAGIC:
        raise FormatError("not a MedLocker wrapped key (bad magic or unsupported version)")
    body = blob[len(WRAP_MAGIC) :]
    try:
        if not _ENC_LEN + _TAG_LEN + _MIN_KEY <= len(body) <= _ENC_LEN + _TAG_LEN + _MAX_KEY:
            raise InvalidTag
        return _SUITE.decrypt(body, identity.x25519, info=bytes(context))
    except (InvalidTag, ValueError):
        raise IntegrityError(
            f"wrapped key does not open with identity {identity.key_id} "
            "(wrapped to another key, for another context, or altered)"
        ) from None
