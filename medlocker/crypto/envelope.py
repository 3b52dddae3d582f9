"""DSSE signed envelopes (https://github.com/secure-systems-lab/dsse).

An envelope signs exact bytes: the signature covers the *pre-authentication
encoding* ``PAE(payloadType, payload)``, so the payload never has to be
re-serialized to be checked, and the type is signed together with the body
(a licence cannot be replayed as a manifest).

Wire form (written as canonical JSON)::

    {"payload": b64, "payloadType": str, "signatures": [{"keyid": str, "sig": b64}]}

:func:`verify_envelope` returns the payload only after the pinned owner key
verified it. :func:`read_envelope_unverified` is the explicit escape hatch for
tools that only display an envelope.
"""

from __future__ import annotations

from typing import Any

from medlocker.crypto.encoding import b64decode, b64encode, canonical_json, parse_json_strict
from medlocker.crypto.identity import Identity, PublicIdentity
from medlocker.errors import FormatError, SignatureError

__all__ = [
    "pae",
    "sign_envelope",
    "verify_envelope",
    "read_envelope_unverified",
]

_MAX_SIGNATURES = 8


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding.

    ``"DSSEv1" SP len(type) SP type SP len(body) SP body`` with lengths as
    ASCII decimal byte counts.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _check_payload_type(payload_type: str) -> None:
    if not isinstance(payload_type, str) or not payload_type:
        raise ValueError("payload_type must be a non-empty str")


def sign_envelope(identity: Identity, payload_type: str, payload: bytes) -> bytes:
    """Sign ``payload`` as a DSSE envelope.

    Args:
        identity: The signer (its key id goes in ``keyid``).
        payload_type: Media type naming what the payload is.
        payload: The exact bytes to sign.

    Returns:
        The envelope as canonical JSON bytes (deterministic: Ed25519 is).
    """
    _check_payload_type(payload_type)
    payload = bytes(payload)
    sig = identity.sign(pae(payload_type, payload))
    return canonical_json(
        {
            "payload": b64encode(payload),
            "payloadType": payload_type,
            "signatures": [{"keyid": identity.key_id, "sig": b64encode(sig)}],
        }
    )


def _parse(data: bytes) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """Structural parse only; nothing returned here is trusted yet."""
    try:
        doc: Any = parse_json_strict(data)
        if not isinstance(doc, dict) or set(doc) != {"payload", "payloadType", "signatures"}:
            raise ValueError("fields must be exactly payload, payloadType, signatures")
        payload_type, sigs = doc["payloadType"], doc["signatures"]
        if not isinstance(payload_type, str) or not payload_type:
            raise ValueError("payloadType must be a non-empty string")
        payload_type.encode("utf-8")  # lone surrogates cannot be signed
        payload = b64decode(doc["payload"])
        if not isinstance(sigs, list) or not 1 <= len(sigs) <= _MAX_SIGNATURES:
            raise ValueError(f"signatures must be a list of 1..{_MAX_SIGNATURES} entries")
        parsed = []
        for entry in sigs:
            if not isinstance(entry, dict) or set(entry) != {"keyid", "sig"} or not isinstance(entry["keyid"], str):
                raise ValueError("each signature must be {keyid: str, sig: base64}")
            parsed.append((entry["keyid"], b64decode(entry["sig"])))
    except ValueError as exc:
        raise FormatError(f"malformed signed envelope: {exc}") from None
    return payload_type, payload, parsed


def verify_envelope(data: bytes, owner: PublicIdentity, payload_type: str) -> bytes:
    """Verify an envelope against the pinned ``owner`` key and return its payload.

    Args:
        data: The envelope bytes.
        owner: The only key trusted to have signed it.
        payload_type: The type the caller expects; anything else is refused.

    Returns:
        The payload bytes, only after the signature verified.

    Raises:
        FormatError: The envelope is not well-formed DSSE JSON.
        SignatureError: No signature by ``owner`` verifies, or the signed type
            is not ``payload_type``.
    """
    _check_payload_type(payload_type)
    signed_type, payload, sigs = _parse(data)
    candidates = [sig for keyid, sig in sigs if keyid == owner.key_id]
    if not candidates:
        raise SignatureError(f"envelope is not signed by the pinned owner key {owner.key_id}")
    message = pae(signed_type, payload)
    for sig in candidates:
        try:
            owner.verify(sig, message)
            break
        except SignatureError:
            continue
    else:
        raise SignatureError(f"envelope signature does not verify against owner key {owner.key_id}")
    if signed_type != payload_type:
        raise SignatureError(f"envelope was signed as {signed_type!r}, not {payload_type!r}")
    return payload


def read_envelope_unverified(data: bytes) -> tuple[str, bytes]:
    """UNVERIFIED: payload type and payload of an envelope, signature NOT checked.

    Only for tools that display an envelope; never act on the result.

    Raises:
        FormatError: The envelope is malformed.
    """
    payload_type, payload, _ = _parse(data)
    return payload_type, payload
