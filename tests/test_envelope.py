"""DSSE envelopes: PAE, golden bytes, and every way a tampered envelope is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medlocker.crypto.encoding import b64encode, canonical_json
from medlocker.crypto.envelope import pae, read_envelope_unverified, sign_envelope, verify_envelope
from medlocker.crypto.identity import Identity
from medlocker.errors import FormatError, SignatureError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "crypto-v1.json").read_text())
IN, OUT = GOLDEN["inputs"], GOLDEN["outputs"]
TYPE = IN["envelope_payload_type"]
PAYLOAD = IN["envelope_payload"].encode()
ENVELOPE = OUT["envelope"].encode()


def golden_identity(who: str) -> Identity:
    d = IN[who]
    return Identity.from_private_bytes(
        bytes.fromhex(d["ed25519_seed"]), bytes.fromhex(d["x25519_private"]), name=d["name"]
    )


OWNER, OTHER = golden_identity("owner"), golden_identity("licensee")


def test_pae_matches_dsse_spec_example():
    # From the DSSE protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "  # lengths count UTF-8 bytes


def test_golden_envelope():
    assert sign_envelope(OWNER, TYPE, PAYLOAD) == ENVELOPE
    assert verify_envelope(ENVELOPE, OWNER.public, TYPE) == PAYLOAD


def test_round_trip_binary_payload():
    payload = bytes(range(256))
    env = sign_envelope(OWNER, "application/octet-stream", payload)
    assert verify_envelope(env, OWNER.public, "application/octet-stream") == payload


def test_wrong_owner_and_wrong_type():
    with pytest.raises(SignatureError, match="pinned owner"):
        verify_envelope(ENVELOPE, OTHER.public, TYPE)
    with pytest.raises(SignatureError, match="signed as"):
        verify_envelope(ENVELOPE, OWNER.public, "application/vnd.medlocker.license+json")


def test_forged_keyid_does_not_help():
    forged = json.loads(sign_envelope(OTHER, TYPE, b"evil"))
    forged["signatures"][0]["keyid"] = OWNER.key_id
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(canonical_json(forged), OWNER.public, TYPE)


def test_payload_type_is_signed():
    doc = json.loads(ENVELOPE)
    doc["payloadType"] = "application/vnd.medlocker.other+json"
    with pytest.raises(SignatureError):
        verify_envelope(canonical_json(doc), OWNER.public, doc["payloadType"])


def test_extra_signature_from_someone_else_is_ignored():
    doc = json.loads(ENVELOPE)
    other = json.loads(sign_envelope(OTHER, TYPE, PAYLOAD))
    doc["signatures"] = other["signatures"] + doc["signatures"]
    assert verify_envelope(canonical_json(doc), OWNER.public, TYPE) == PAYLOAD


def test_every_flipped_byte_is_rejected():
    for i in range(len(ENVELOPE)):
        for mask in (0x01, 0x80):
            bad = bytearray(ENVELOPE)
            bad[i] ^= mask
            with pytest.raises((SignatureError, FormatError)):
                verify_envelope(bytes(bad), OWNER.public, TYPE)


def test_every_truncation_is_rejected():
    for n in range(len(ENVELOPE)):
        with pytest.raises((SignatureError, FormatError)):
            verify_envelope(ENVELOPE[:n], OWNER.public, TYPE)


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"payload": "", "payloadType": TYPE},
        {"payload": "", "payloadType": TYPE, "signatures": [], "extra": 1},
        {"payload": "", "payloadType": TYPE, "signatures": []},
        {"payload": "AA", "payloadType": TYPE, "signatures": [{"keyid": "k", "sig": ""}]},
        {"payload": "AB==", "payloadType": TYPE, "signatures": [{"keyid": "k", "sig": ""}]},  # non-canonical b64
        {"payload": "", "payloadType": "", "signatures": [{"keyid": "k", "sig": ""}]},
        {"payload": "", "payloadType": TYPE, "signatures": [{"keyid": 1, "sig": ""}]},
        {"payload": "", "payloadType": TYPE, "signatures": [{"keyid": "k", "sig": "", "x": 1}]},
        {"payload": "", "payloadType": TYPE, "signatures": [{"keyid": "k", "sig": ""}] * 9},
    ],
)
def test_malformed_envelopes(doc):
    with pytest.raises(FormatError):
        verify_envelope(canonical_json(doc), OWNER.public, TYPE)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff", b'{"payload":1.5}', b"[" * 100_000, b'{"a":NaN}'])
def test_unparseable(data):
    with pytest.raises(FormatError):
        verify_envelope(data, OWNER.public, TYPE)


def test_read_unverified_is_explicit():
    doc = json.loads(ENVELOPE)
    doc["payload"] = b64encode(b"tampered")
    assert read_envelope_unverified(canonical_json(doc)) == (TYPE, b"tampered")
    with pytest.raises(SignatureError):
        verify_envelope(canonical_json(doc), OWNER.public, TYPE)


def test_canonical_json():
    assert canonical_json({"b": [1, True, None], "a": "é"}) == '{"a":"é","b":[1,true,null]}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": 1.0})
    with pytest.raises(ValueError):
        canonical_json({1: 2})
    with pytest.raises(TypeError):
        canonical_json({"x": b"bytes"})
