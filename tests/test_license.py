"""Licences and HPKE key wrapping: golden bytes, RFC 9180 vector, every refusal class."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from medlocker.crypto.encoding import b64decode, canonical_json
from medlocker.crypto.envelope import read_envelope_unverified, sign_envelope
from medlocker.crypto.identity import Identity
from medlocker.crypto.license import (
    LICENSE_PAYLOAD_TYPE,
    issue_license,
    license_wrap_context,
    verify_license,
)
from medlocker.crypto.wrap import _hpke_seal_base, unwrap_key, wrap_key
from medlocker.errors import (
    ExpiredError,
    FormatError,
    IntegrityError,
    LicenseError,
    SignatureError,
    WrongDatasetError,
    WrongLicenseeError,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "crypto-v1.json").read_text())
IN, OUT = GOLDEN["inputs"], GOLDEN["outputs"]
UTC = timezone.utc


def golden_identity(who: str) -> Identity:
    d = IN[who]
    return Identity.from_private_bytes(
        bytes.fromhex(d["ed25519_seed"]), bytes.fromhex(d["x25519_private"]), name=d["name"]
    )


def t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


OWNER, LICENSEE = golden_identity("owner"), golden_identity("licensee")
STRANGER = Identity.from_private_bytes(bytes(32), bytes(range(1, 33)), name="stranger")
CONTENT_KEY = bytes.fromhex(IN["content_key"])
DATASET, MANIFEST = IN["dataset_id"], IN["manifest_digest"]
NOW, NOT_BEFORE, EXPIRES = t(IN["license_now"]), t(IN["license_not_before"]), t(IN["license_expires"])
EPHEMERAL = X25519PrivateKey.from_private_bytes(bytes.fromhex(IN["wrap_ephemeral"]))
LICENSE = OUT["license"].encode()
MID = NOW + timedelta(days=100)


def issue(**overrides) -> bytes:
    kwargs = dict(
        dataset_id=DATASET,
        manifest_digest=MANIFEST,
        licensee=LICENSEE.public,
        content_key=CONTENT_KEY,
        expires=EXPIRES,
        not_before=NOT_BEFORE,
        now=NOW,
        license_id=IN["license_id"],
        ephemeral=EPHEMERAL,
    )
    kwargs.update(overrides)
    owner = kwargs.pop("owner", OWNER)
    return issue_license(owner, **kwargs)


def verify(data: bytes = LICENSE, **overrides):
    kwargs = dict(owner=OWNER.public, identity=LICENSEE, dataset_id=DATASET, manifest_digest=MANIFEST, now=MID)
    kwargs.update(overrides)
    return verify_license(data, **kwargs)


# --- HPKE ----------------------------------------------------------------------------


def test_deterministic_hpke_matches_rfc9180_a2():
    """RFC 9180 A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base mode, seq 0."""
    sk_e = X25519PrivateKey.from_private_bytes(
        bytes.fromhex("f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600")
    )
    sk_r = X25519PrivateKey.from_private_bytes(
        bytes.fromhex("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
    )
    assert (
        sk_r.public_key().public_bytes_raw().hex() == "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a"
    )
    enc, ct = _hpke_seal_base(
        sk_r.public_key(),
        bytes.fromhex("4f6465206f6e2061204772656369616e2055726e"),  # "Ode on a Grecian Urn"
        bytes.fromhex("436f756e742d30"),  # "Count-0"
        bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479"),
        sk_e,
    )
    assert enc.hex() == "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"
    assert ct.hex() == "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"


def test_golden_wrapped_key_opens_with_cryptography_hpke():
    context = OUT["wrap_context"].encode()
    assert context == license_wrap_context(
        dataset_id=DATASET, license_id=IN["license_id"], licensee_key_id=LICENSEE.key_id
    )
    blob = wrap_key(CONTENT_KEY, LICENSEE.public, context=context, ephemeral=EPHEMERAL)
    assert blob.hex() == OUT["wrapped_key"]
    assert blob[:4] == b"MLW1" and blob[4:36] == EPHEMERAL.public_key().public_bytes_raw()
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    assert suite.decrypt(blob[4:], LICENSEE.x25519, info=context) == CONTENT_KEY
    assert unwrap_key(blob, LICENSEE, context=context) == CONTENT_KEY


def test_wrap_with_library_randomness():
    a = wrap_key(CONTENT_KEY, LICENSEE.public, context=b"ctx")
    b = wrap_key(CONTENT_KEY, LICENSEE.public, context=b"ctx")
    assert a != b and len(a) == 4 + 32 + 32 + 16
    assert unwrap_key(a, LICENSEE, context=b"ctx") == unwrap_key(b, LICENSEE, context=b"ctx") == CONTENT_KEY


def test_unwrap_refusals():
    blob = wrap_key(CONTENT_KEY, LICENSEE.public, context=b"ctx")
    with pytest.raises(IntegrityError):
        unwrap_key(blob, STRANGER, context=b"ctx")
    with pytest.raises(IntegrityError):
        unwrap_key(blob, LICENSEE, context=b"ctx2")
    with pytest.raises(FormatError):
        unwrap_key(b"MLW2" + blob[4:], LICENSEE, context=b"ctx")
    for i in range(4, len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            unwrap_key(bytes(bad), LICENSEE, context=b"ctx")
    for n in range(4, len(blob)):
        with pytest.raises(IntegrityError):
            unwrap_key(blob[:n], LICENSEE, context=b"ctx")


def test_wrap_caller_mistakes():
    with pytest.raises(ValueError):
        wrap_key(b"short", LICENSEE.public, context=b"ctx")
    with pytest.raises(ValueError):
        wrap_key(CONTENT_KEY, LICENSEE.public, context=b"")


# --- golden licence ------------------------------------------------------------------


def test_golden_license_bytes():
    assert issue() == LICENSE


def test_golden_license_verifies():
    lic = verify()
    assert lic.content_key == CONTENT_KEY
    assert (lic.dataset_id, lic.manifest_digest, lic.license_id, lic.scope) == (
        DATASET,
        MANIFEST,
        IN["license_id"],
        "read",
    )
    assert (lic.owner_key_id, lic.licensee_key_id) == (OWNER.key_id, LICENSEE.key_id)
    assert (lic.not_before, lic.expires) == (NOT_BEFORE, EXPIRES)
    assert CONTENT_KEY.hex() not in repr(lic)


def test_payload_layout():
    payload_type, payload = read_envelope_unverified(LICENSE)
    doc = json.loads(payload)
    assert payload_type == LICENSE_PAYLOAD_TYPE and canonical_json(doc) == payload
    assert doc["format"] == "medlocker.license" and doc["version"] == 1
    assert doc["licensee"]["key_id"] == LICENSEE.key_id
    assert b64decode(doc["key_wrap"]["blob"]).hex() == OUT["wrapped_key"]


def test_random_defaults_round_trip():
    data = issue_license(
        OWNER,
        dataset_id=DATASET,
        manifest_digest=MANIFEST,
        licensee=LICENSEE.public,
        content_key=CONTENT_KEY,
        expires=datetime.now(UTC) + timedelta(days=1),
    )
    lic = verify_license(data, owner=OWNER.public, identity=LICENSEE, dataset_id=DATASET)
    assert lic.content_key == CONTENT_KEY and len(lic.license_id) == 32


# --- refusals, one class per failure -------------------------------------------------


def test_every_flipped_byte_is_rejected():
    for i in range(len(LICENSE)):
        for mask in (0x01, 0x80):
            bad = bytearray(LICENSE)
            bad[i] ^= mask
            with pytest.raises((SignatureError, FormatError)):
                verify(bytes(bad))


def test_signed_by_non_owner():
    forged = issue(owner=STRANGER)
    with pytest.raises(SignatureError):
        verify(forged)
    # Even with the owner's key id written on it.
    doc = json.loads(forged)
    doc["signatures"][0]["keyid"] = OWNER.key_id
    with pytest.raises(SignatureError):
        verify(canonical_json(doc))


def test_other_payload_type_is_not_a_licence():
    _, payload = read_envelope_unverified(LICENSE)
    with pytest.raises(SignatureError):
        verify(sign_envelope(OWNER, "application/vnd.medlocker.manifest+json", payload))


def _resigned(**changes) -> bytes:
    _, payload = read_envelope_unverified(LICENSE)
    doc = json.loads(payload)
    doc.update(changes)
    return sign_envelope(OWNER, LICENSE_PAYLOAD_TYPE, canonical_json(doc))


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 2},
        {"format": "medlocker.other"},
        {"extra": "field"},
        {"not_before": "2025-01-01 00:00:00"},
        {"expires": "2025-13-01T00:00:00Z"},
        {"owner_key_id": "ml1:00000000000000000000000000000000"},
        {"key_wrap": {"alg": "age", "blob": ""}},
        {"licensee": {"key_id": "x"}},
        {"scope": ""},
    ],
)
def test_owner_signed_but_malformed_payload(changes):
    with pytest.raises(FormatError):
        verify(_resigned(**changes))


def test_non_canonical_payload():
    _, payload = read_envelope_unverified(LICENSE)
    spaced = json.dumps(json.loads(payload), indent=1).encode()
    with pytest.raises(FormatError, match="canonical"):
        verify(sign_envelope(OWNER, LICENSE_PAYLOAD_TYPE, spaced))


def test_wrong_dataset_and_manifest():
    with pytest.raises(WrongDatasetError):
        verify(dataset_id="dataset-Y")
    with pytest.raises(WrongDatasetError, match="repacked"):
        verify(manifest_digest="sha256:" + "0" * 64)


def test_validity_window():
    verify(now=NOT_BEFORE)  # inclusive
    verify(now=EXPIRES - timedelta(seconds=1))
    with pytest.raises(ExpiredError, match="expired"):
        verify(now=EXPIRES)
    with pytest.raises(ExpiredError, match="not valid before"):
        verify(now=NOT_BEFORE - timedelta(seconds=1))
    # Another timezone is the same instant.
    verify(now=MID.astimezone(timezone(timedelta(hours=-5))))
    with pytest.raises(ValueError):
        verify(now=datetime(2025, 6, 1))


def test_wrong_licensee():
    with pytest.raises(WrongLicenseeError, match=STRANGER.key_id):
        verify(identity=STRANGER)
    with pytest.raises(WrongLicenseeError):
        verify(identity=OWNER)


def test_key_wrapped_to_someone_else_is_wrong_licensee():
    # Owner-signed, names LICENSEE, but the key inside was wrapped for STRANGER.
    other = issue(licensee=STRANGER.public)
    _, payload = read_envelope_unverified(other)
    stolen_wrap = json.loads(payload)["key_wrap"]
    with pytest.raises(WrongLicenseeError, match="does not unwrap"):
        verify(_resigned(key_wrap=stolen_wrap))


def test_check_order():
    # Each licence fails several checks; the first in the documented order wins.
    expired_elsewhere = dict(dataset_id="dataset-Y", now=EXPIRES + timedelta(days=1), identity=STRANGER)
    with pytest.raises(WrongDatasetError):
        verify(**expired_elsewhere)
    with pytest.raises(ExpiredError):
        verify(now=EXPIRES, identity=STRANGER)
    with pytest.raises(SignatureError):
        verify(issue(owner=STRANGER), **expired_elsewhere)
    with pytest.raises(FormatError):
        verify(_resigned(version=2), **expired_elsewhere)
    assert issubclass(WrongLicenseeError, LicenseError)


def test_issue_caller_mistakes():
    with pytest.raises(ValueError):
        issue(expires=datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        issue(expires=NOT_BEFORE)  # empty window
    with pytest.raises(ValueError):
        issue(content_key=b"short")
    with pytest.raises(ValueError):
        issue(dataset_id="")
