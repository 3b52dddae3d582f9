"""Property tests: every crypto parser fails closed on hostile input.

Random bytes, random JSON and random mutations of valid objects are fed to each
parser. Allowed outcomes: a :class:`MedLockerError`, or (for mutations that keep
the bytes' meaning, e.g. JSON whitespace) the same result as the unmutated
object -- never another exception (a ``ValueError``/``KeyError``/``TypeError``/
``OverflowError`` from untrusted bytes is a bug), never a different accepted value.
Licence payloads are also fuzzed *behind* a valid owner signature, so the fuzzer
reaches the payload parser and not only the signature check.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from medlocker.crypto.encoding import b64decode, canonical_json
from medlocker.crypto.envelope import sign_envelope, verify_envelope
from medlocker.crypto.identity import Identity, PublicIdentity
from medlocker.crypto.license import LICENSE_PAYLOAD_TYPE, issue_license, verify_license
from medlocker.crypto.seal import open_payload, seal_payload
from medlocker.crypto.wrap import unwrap_key, wrap_key
from medlocker.errors import MedLockerError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "crypto-v1.json").read_text())
IN, OUT = GOLDEN["inputs"], GOLDEN["outputs"]
FUZZ = settings(max_examples=200, deadline=None)
UTC = timezone.utc


def golden_identity(who: str) -> Identity:
    d = IN[who]
    return Identity.from_private_bytes(
        bytes.fromhex(d["ed25519_seed"]), bytes.fromhex(d["x25519_private"]), name=d["name"]
    )


OWNER, LICENSEE = golden_identity("owner"), golden_identity("licensee")
KEY = bytes.fromhex(IN["content_key"])
WHERE = {"dataset_id": IN["dataset_id"], "sample_key": IN["sample_key"], "watermarked_digest": IN["watermarked_digest"]}
NOW = datetime(2025, 6, 1, tzinfo=UTC)

PUB = OUT["owner_pub"].encode()
KEYFILE = OUT["owner_key"].encode()
# Cheap scrypt cost so 200 examples stay fast; the reader accepts n >= 2**10.
KEYFILE_ENC = OWNER.to_bytes(b"pw", scrypt_n=2**10)
ENVELOPE = OUT["envelope"].encode()
SEALED = bytes.fromhex(OUT["sealed_payload"])
WRAPPED = bytes.fromhex(OUT["wrapped_key"])
WRAP_CONTEXT = OUT["wrap_context"].encode()
LICENSE = OUT["license"].encode()


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """A valid object with 1-4 random edits: bit flips, byte sets, deletions, insertions."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def inputs_for(original: bytes):
    return st.one_of(st.binary(max_size=2048), mutated(original))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def fails_closed(fn, *args, **kwargs):
    """Call ``fn``; return its result, or None when it refused with a MedLockerError (the only allowed error)."""
    try:
        return fn(*args, **kwargs)
    except MedLockerError:
        return None


@FUZZ
@given(inputs_for(PUB))
def test_public_identity_parser(data):
    got = fails_closed(PublicIdentity.from_bytes, data)
    assert got is None or got == OWNER.public


@FUZZ
@given(inputs_for(KEYFILE))
def test_identity_parser(data):
    got = fails_closed(Identity.from_bytes, data)
    assert got is None or got.key_id == OWNER.key_id


@FUZZ
@given(inputs_for(KEYFILE_ENC))
def test_encrypted_identity_parser(data):
    got = fails_closed(Identity.from_bytes, data, b"pw")
    assert got is None or got.key_id == OWNER.key_id


@FUZZ
@given(
    st.sampled_from(["public", "private"]),
    st.sampled_from(sorted(json.loads(PUB)) + ["keys", "encryption"]),
    json_values,
)
def test_key_files_with_random_field_values(kind, field, value):
    doc = json.loads(PUB if kind == "public" else KEYFILE_ENC)
    doc[field] = value
    data = canonical_json(doc)
    parse = PublicIdentity.from_bytes if kind == "public" else (lambda d: Identity.from_bytes(d, b"pw"))
    got = fails_closed(parse, data)
    assert got is None or got.key_id == OWNER.key_id


@FUZZ
@given(json_values)
def test_parsers_on_random_json(value):
    data = canonical_json(value)
    for parse in (
        PublicIdentity.from_bytes,
        Identity.from_bytes,
        lambda d: verify_envelope(d, OWNER.public, IN["envelope_payload_type"]),
        lambda d: verify_license(d, owner=OWNER.public, identity=LICENSEE, now=NOW),
    ):
        assert fails_closed(parse, data) is None


@FUZZ
@given(inputs_for(ENVELOPE))
def test_envelope_parser(data):
    got = fails_closed(verify_envelope, data, OWNER.public, IN["envelope_payload_type"])
    assert got is None or got == IN["envelope_payload"].encode()


@FUZZ
@given(st.binary(max_size=256), st.text(min_size=1, max_size=30))
def test_envelope_round_trip(payload, payload_type):
    try:
        env = sign_envelope(OWNER, payload_type, payload)
    except ValueError:  # lone surrogates cannot be UTF-8 encoded
        return
    assert verify_envelope(env, OWNER.public, payload_type) == payload


@FUZZ
@given(inputs_for(SEALED))
def test_payload_parser(data):
    got = fails_closed(open_payload, KEY, data, **WHERE)
    assert got is None or (data == SEALED and got == bytes.fromhex(IN["payload_plaintext"]))


@FUZZ
@given(st.binary(max_size=512), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_payload_round_trip(plaintext, dataset_id, sample_key):
    try:
        sealed = seal_payload(KEY, plaintext, dataset_id=dataset_id, sample_key=sample_key, watermarked_digest="d")
    except ValueError:  # lone surrogates
        return
    assert open_payload(KEY, sealed, dataset_id=dataset_id, sample_key=sample_key, watermarked_digest="d") == plaintext


@FUZZ
@given(inputs_for(WRAPPED))
def test_unwrap_parser(data):
    got = fails_closed(unwrap_key, data, LICENSEE, context=WRAP_CONTEXT)
    assert got is None or (data == WRAPPED and got == KEY)


@FUZZ
@given(st.binary(min_size=16, max_size=64), st.binary(min_size=1, max_size=64))
def test_wrap_round_trip(secret, context):
    assert unwrap_key(wrap_key(secret, LICENSEE.public, context=context), LICENSEE, context=context) == secret


@FUZZ
@given(inputs_for(LICENSE))
def test_license_parser(data):
    got = fails_closed(verify_license, data, owner=OWNER.public, identity=LICENSEE, now=NOW)
    assert got is None or (got.content_key == KEY and got.license_id == IN["license_id"])


LICENSE_PAYLOAD = b64decode(json.loads(LICENSE)["payload"])


def _owner_signed(payload: bytes) -> bytes:
    return sign_envelope(OWNER, LICENSE_PAYLOAD_TYPE, payload)


@FUZZ
@given(inputs_for(LICENSE_PAYLOAD))
def test_owner_signed_licence_payload_parser(payload):
    """Mutated payloads signed by the owner key: the payload parser itself must fail closed."""
    got = fails_closed(verify_license, _owner_signed(payload), owner=OWNER.public, identity=LICENSEE, now=NOW)
    assert got is None or (got.content_key == KEY and got.license_id == IN["license_id"])


@FUZZ
@given(st.sampled_from(sorted(json.loads(LICENSE_PAYLOAD))), json_values)
def test_owner_signed_licence_with_random_field_values(field, value):
    doc = json.loads(LICENSE_PAYLOAD)
    doc[field] = value
    got = fails_closed(verify_license, _owner_signed(canonical_json(doc)), owner=OWNER.public, identity=LICENSEE,
                       now=NOW)
    assert got is None or got.content_key == KEY


@FUZZ
@given(
    st.text(min_size=1, max_size=20),
    st.integers(0, 10**6),
    st.integers(1, 10**6),
    st.integers(-(10**6), 2 * 10**6),
)
def test_license_window_property(dataset_id, start, length, probe):
    base = datetime(2025, 1, 1, tzinfo=UTC)
    not_before, expires, now = (base + timedelta(seconds=s) for s in (start, start + length, probe))
    try:
        data = issue_license(
            OWNER,
            dataset_id=dataset_id,
            manifest_digest="m",
            licensee=LICENSEE.public,
            content_key=KEY,
            expires=expires,
            not_before=not_before,
            now=base,
        )
    except ValueError:  # lone surrogates
        return
    got = fails_closed(verify_license, data, owner=OWNER.public, identity=LICENSEE, dataset_id=dataset_id, now=now)
    assert (got is not None) == (not_before <= now < expires)
