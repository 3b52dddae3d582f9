"""MedLocker cryptography: identities, signed envelopes, sealed payloads, licences.

Built only from ``cryptography`` (pyca) primitives: Ed25519 signatures in DSSE
envelopes, X25519 + HPKE (RFC 9180) key wrapping, HKDF-SHA256 key derivation,
ChaCha20-Poly1305 sealing, scrypt for key-file passphrases and HMAC-SHA256
commitments. See ``SECURITY.md`` for the guarantees and ``FORMAT.md`` for the
byte layouts.
"""

from __future__ import annotations

from medlocker.crypto.commit import check_commitment, commit, new_salt
from medlocker.crypto.encoding import b64decode, b64encode, canonical_json, parse_json_strict
from medlocker.crypto.envelope import read_envelope_unverified, sign_envelope, verify_envelope
from medlocker.crypto.identity import Identity, PublicIdentity, compute_key_id, passphrase_from_env
from medlocker.crypto.license import LICENSE_PAYLOAD_TYPE, License, issue_license, verify_license
from medlocker.crypto.seal import derive_sample_key, open_payload, seal_payload
from medlocker.crypto.wrap import unwrap_key, wrap_key

__all__ = [
    "Identity",
    "PublicIdentity",
    "compute_key_id",
    "passphrase_from_env",
    "canonical_json",
    "parse_json_strict",
    "b64encode",
    "b64decode",
    "sign_envelope",
    "verify_envelope",
    "read_envelope_unverified",
    "commit",
    "new_salt",
    "check_commitment",
    "derive_sample_key",
    "seal_payload",
    "open_payload",
    "wrap_key",
    "unwrap_key",
    "License",
    "issue_license",
    "verify_license",
    "LICENSE_PAYLOAD_TYPE",
]
