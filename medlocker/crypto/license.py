"""Licences: an owner-signed grant that carries the content key to one licensee.

A licence is a DSSE envelope (payload type
``application/vnd.medlocker.license+json``) signed by the dataset owner. Its
payload is canonical JSON naming the dataset and manifest, the licensee's
public key, the validity window and scope, and the content key wrapped to the
licensee's X25519 key with HPKE (see :mod:`medlocker.crypto.wrap`). The wrap
context binds the dataset id, the licence id and the licensee key id.

:func:`verify_license` checks, in this order, and raises the first failure:

1. envelope signature by the pinned owner key -> :class:`SignatureError`
   (malformed envelope -> :class:`FormatError`);
2. payload format and version -> :class:`FormatError`;
3. dataset id / manifest digest -> :class:`WrongDatasetError`;
4. validity window at ``now`` -> :class:`ExpiredError`;
5. licensee key id -> :class:`WrongLicenseeError`;
6. unwrapping the content key -> :class:`WrongLicenseeError`.

Nothing in the payload is parsed before step 1, and nothing is decrypted
before steps 1-5 passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from medlocker.crypto.encoding import b64decode, b64encode, canonical_json, parse_json_strict
from medlocker.crypto.envelope import sign_envelope, verify_envelope
from medlocker.crypto.identity import Identity, PublicIdentity
from medlocker.crypto.seal import CONTENT_KEY_LEN
from medlocker.crypto.wrap import WRAP_ALG, unwrap_key, wrap_key
from medlocker.util import parse_rfc3339, rfc3339
from medlocker.errors import (
    ExpiredError,
    FormatError,
    IntegrityError,
    KeyFileError,
    WrongDatasetError,
    WrongLicenseeError,
)

__all__ = [
    "License",
    "issue_license",
    "verify_license",
    "license_wrap_context",
    "LICENSE_PAYLOAD_TYPE",
    "LICENSE_FORMAT",
    "LICENSE_VERSION",
]

LICENSE_PAYLOAD_TYPE = "application/vnd.medlocker.license+json"
LICENSE_FORMAT = "medlocker.license"
LICENSE_VERSION = 1
_FIELDS = {
    "format",
    "version",
    "license_id",
    "dataset_id",
    "manifest_digest",
    "owner_key_id",
    "licensee",
    "not_before",
    "expires",
    "issued_at",
    "scope",
    "key_wrap",
}


@dataclass(frozen=True)
class License:
    """A verified licence, with its unwrapped content key.

    Only :func:`verify_license` builds these, after every check passed.
    """

    dataset_id: str
    manifest_digest: str
    owner_key_id: str
    licensee_key_id: str
    not_before: datetime
    expires: datetime
    scope: str
    license_id: str
    content_key: bytes = field(repr=False)


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (use datetime.now(timezone.utc))")
    return value.astimezone(timezone.utc)


def license_wrap_context(*, dataset_id: str, license_id: str, licensee_key_id: str) -> bytes:
    """HPKE ``info`` for a licence's wrapped content key."""
    return canonical_json(
        {
            "purpose": "medlocker.license.content_key",
            "v": 1,
            "dataset_id": dataset_id,
            "license_id": license_id,
            "licensee_key_id": licensee_key_id,
        }
    )


def _non_empty_str(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str")
    return value


def issue_license(
    owner: Identity,
    *,
    dataset_id: str,
    manifest_digest: str,
    licensee: PublicIdentity,
    content_key: bytes,
    expires: datetime,
    not_before: datetime | None = None,
    scope: str = "read",
    now: datetime | None = None,
    license_id: str | None = None,
    ephemeral: X25519PrivateKey | None = None,
) -> bytes:
    """Issue a signed licence granting ``licensee`` the content key.

    Times are stored in whole seconds (sub-seconds are dropped).

    Args:
        owner: The dataset owner; signs the licence.
        dataset_id: Dataset the licence is for.
        manifest_digest: Digest of the signed manifest it is for.
        licensee: Who may use it.
        content_key: The run's 32-byte content key.
        expires: End of validity (exclusive), timezone-aware.
        not_before: Start of validity (inclusive); defaults to ``now``.
        scope: What is granted (``"read"``).
        now: Issue time, timezone-aware; defaults to the current UTC time.
        license_id: Unique id; 32 random hex chars by default.
        ephemeral: Fixed HPKE ephemeral key, for golden-vector tests only.

    Returns:
        The licence file bytes (a DSSE envelope).

    Raises:
        ValueError: Naive datetimes, an empty validity window, bad ids or key.
    """
    now = _utc(now, "now") if now is not None else datetime.now(timezone.utc)
    not_before = _utc(not_before, "not_before") if not_before is not None else now
    expires = _utc(expires, "expires")
    not_before, expires = not_before.replace(microsecond=0), expires.replace(microsecond=0)
    if expires <= not_before:
        raise ValueError(f"expires ({expires}) must be after not_before ({not_before})")
    if len(content_key) != CONTENT_KEY_LEN:
        raise ValueError(f"content_key must be {CONTENT_KEY_LEN} bytes")
    license_id = os.urandom(16).hex() if license_id is None else _non_empty_str("license_id", license_id)
    context = license_wrap_context(
        dataset_id=_non_empty_str("dataset_id", dataset_id), license_id=license_id, licensee_key_id=licensee.key_id
    )
    payload = {
        "format": LICENSE_FORMAT,
        "version": LICENSE_VERSION,
        "license_id": license_id,
        "dataset_id": dataset_id,
        "manifest_digest": _non_empty_str("manifest_digest", manifest_digest),
        "owner_key_id": owner.key_id,
        "licensee": licensee.to_dict(),
        "not_before": rfc3339(not_before),
        "expires": rfc3339(expires),
        "issued_at": rfc3339(now),
        "scope": _non_empty_str("scope", scope),
        "key_wrap": {
            "alg": WRAP_ALG,
            "blob": b64encode(wrap_key(content_key, licensee, context=context, ephemeral=ephemeral)),
        },
    }
    return sign_envelope(owner, LICENSE_PAYLOAD_TYPE, canonical_json(payload))


def _parse_payload(payload: bytes, owner: PublicIdentity) -> dict[str, Any]:
    """Decode a *verified* licence payload; FormatError on anything unexpected."""
    try:
        doc = parse_json_strict(payload)
        if not isinstance(doc, dict):
            raise ValueError("payload is not a JSON object")
        if doc.get("format") != LICENSE_FORMAT:
            raise ValueError(f"format is not {LICENSE_FORMAT!r}")
        if type(doc.get("version")) is not int or doc["version"] != LICENSE_VERSION:
            raise ValueError(
                f"version {doc.get('version')!r} is not supported (expected {LICENSE_VERSION}); upgrade MedLocker"
            )
        if set(doc) != _FIELDS:
            raise ValueError(f"fields {sorted(doc)} are not the version-1 licence fields")
        if canonical_json(doc) != payload:
            raise ValueError("payload is not canonical JSON")
        for name in ("license_id", "dataset_id", "manifest_digest", "owner_key_id", "scope"):
            _non_empty_str(name, doc[name])
        if doc["owner_key_id"] != owner.key_id:
            raise ValueError("owner_key_id does not name the signing key")
        out = dict(doc)
        out["not_before"] = parse_rfc3339(doc["not_before"])
        out["expires"] = parse_rfc3339(doc["expires"])
        out["issued_at"] = parse_rfc3339(doc["issued_at"])
        wrap = doc["key_wrap"]
        if not isinstance(wrap, dict) or set(wrap) != {"alg", "blob"} or wrap["alg"] != WRAP_ALG:
            raise ValueError(f"key_wrap must be {{alg: {WRAP_ALG!r}, blob}}")
        out["blob"] = b64decode(wrap["blob"])
    except ValueError as exc:
        raise FormatError(f"licence payload is malformed: {exc}") from None
    try:
        out["licensee"] = PublicIdentity.from_dict(doc["licensee"], source="licence licensee key")
    except KeyFileError as exc:
        raise FormatError(f"licence payload is malformed: {exc}") from None
    return out


def verify_license(
    data: bytes,
    *,
    owner: PublicIdentity,
    identity: Identity,
    dataset_id: str | None = None,
    manifest_digest: str | None = None,
    now: datetime | None = None,
) -> License:
    """Verify a licence and unwrap its content key.

    Args:
        data: The licence file bytes.
        owner: The pinned owner key; the only one trusted to sign licences.
        identity: The licensee's private identity.
        dataset_id: Dataset being opened; checked when given (readers should).
        manifest_digest: Digest of the manifest being opened; checked when given.
        now: Clock, timezone-aware; defaults to the current UTC time.

    Returns:
        The verified :class:`License`, with ``content_key``.

    Raises:
        FormatError: Malformed envelope or payload, unknown licence version.
        SignatureError: Not signed by ``owner``, or altered.
        WrongDatasetError: Issued for another dataset id or manifest.
        ExpiredError: ``now`` is before ``not_before`` or at/after ``expires``.
        WrongLicenseeError: Issued to another key, or the key does not unwrap.
        ValueError: ``now`` is a naive datetime.
    """
    now = _utc(now, "now") if now is not None else datetime.now(timezone.utc)
    doc = _parse_payload(verify_envelope(data, owner, LICENSE_PAYLOAD_TYPE), owner)
    lid = doc["license_id"]
    if dataset_id is not None and doc["dataset_id"] != dataset_id:
        raise WrongDatasetError(f"licence {lid} is for dataset {doc['dataset_id']!r}, not {dataset_id!r}")
    if manifest_digest is not None and doc["manifest_digest"] != manifest_digest:
        raise WrongDatasetError(
            f"licence {lid} is for manifest {doc['manifest_digest']!r}, not {manifest_digest!r}; "
            "the dataset was repacked: ask the owner for a new licence"
        )
    if now < doc["not_before"]:
        raise ExpiredError(f"licence {lid} is not valid before {doc['not_before'].isoformat()}")
    if now >= doc["expires"]:
        raise ExpiredError(f"licence {lid} expired at {doc['expires'].isoformat()}; ask the owner to renew it")
    licensee: PublicIdentity = doc["licensee"]
    if licensee.key_id != identity.key_id:
        raise WrongLicenseeError(
            f"licence {lid} was issued to key {licensee.key_id}, not to your identity {identity.key_id}"
        )
    context = license_wrap_context(dataset_id=doc["dataset_id"], license_id=lid, licensee_key_id=licensee.key_id)
    try:
        content_key = unwrap_key(doc["blob"], identity, context=context)
    except (IntegrityError, FormatError):
        raise WrongLicenseeError(
            f"licence {lid}: the content key does not unwrap with identity {identity.key_id}"
        ) from None
    if len(content_key) != CONTENT_KEY_LEN:
        raise WrongLicenseeError(f"licence {lid}: unwrapped content key has the wrong size")
    return License(
        dataset_id=doc["dataset_id"],
        manifest_digest=doc["manifest_digest"],
        owner_key_id=doc["owner_key_id"],
        licensee_key_id=licensee.key_id,
        not_before=doc["not_before"],
        expires=doc["expires"],
        scope=doc["scope"],
        license_id=lid,
        content_key=content_key,
    )
