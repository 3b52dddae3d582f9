"""Signed manifest: golden bytes, tamper resistance, version handling, per-shard checks."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardkit import ALICE, BOB, CREATED, NOW, OWNER, make_dataset
from medlocker.crypto import Identity, canonical_json, sign_envelope
from medlocker.dataset import LicensedDataset
from medlocker.errors import FormatError, InsecureDatasetError, IntegrityError, MedLockerError, SignatureError
from medlocker.shards import MANIFEST_NAME, ShardInfo, check_dataset, read_manifest, write_manifest
from medlocker.shards.manifest import build_manifest_payload, parse_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import verify as verify_tool  # noqa: E402

PAYLOAD_TYPE = "application/vnd.medlocker.manifest+json"
GOLDEN_OWNER = Identity.from_private_bytes(bytes(range(32)), bytes(range(32, 64)), name="golden-owner")
GOLDEN_SHARDS = [
    ShardInfo(
        name="shard-000000.tar",
        size=10240,
        sha256="sha256:" + "a" * 64,
        samples=2,
        index="shard-000000.index.json",
        index_sha256="sha256:" + "b" * 64,
    )
]
GOLDEN_PAYLOAD = (
    b'{"classes":["neg","pos"],"created":"2025-01-02T03:04:05Z","dataset_id":"ds-1","extra":{"note":"x"},'
    b'"format":"medlocker.manifest","insecure_test_seed":false,"logo_sha256":"sha256:' + b"c" * 64 + b'",'
    b'"owner_key_id":"ml1:0df6ba698bb412d65970cc8c5b68b89f","shards":[{"index":"shard-000000.index.json",'
    b'"index_sha256":"sha256:' + b"b" * 64 + b'","name":"shard-000000.tar","samples":2,'
    b'"sha256":"sha256:' + b"a" * 64 + b'","size":10240}],"version":2}'
)
# Version 2 (adds insecure_test_seed); changed deliberately with the format version.
GOLDEN_ENVELOPE_SHA256 = "e6bb133fbf1aa8cda27b7ddd333cf55ca3811f48014ca60de639385082c63885"


def _golden_kwargs() -> dict:
    return dict(
        dataset_id="ds-1",
        shards=GOLDEN_SHARDS,
        classes=["neg", "pos"],
        logo_sha256="sha256:" + "c" * 64,
        created=CREATED,
        extra={"note": "x"},
    )


def test_golden_manifest_bytes(tmp_path: Path) -> None:
    payload = build_manifest_payload(owner_key_id=GOLDEN_OWNER.key_id, **_golden_kwargs())
    assert payload == GOLDEN_PAYLOAD
    digest = write_manifest(str(tmp_path), GOLDEN_OWNER, **_golden_kwargs())
    envelope = (tmp_path / MANIFEST_NAME).read_bytes()
    assert hashlib.sha256(envelope).hexdigest() == GOLDEN_ENVELOPE_SHA256
    assert digest == "sha256:" + GOLDEN_ENVELOPE_SHA256
    m = read_manifest(str(tmp_path), GOLDEN_OWNER.public)
    assert (m.dataset_id, m.classes, m.created, m.shards, m.extra, m.digest) == (
        "ds-1", ("neg", "pos"), CREATED, tuple(GOLDEN_SHARDS), {"note": "x"}, digest
    )
    assert m.owner_key_id == GOLDEN_OWNER.key_id and m.num_samples == 2


def test_every_flipped_byte_is_refused(tmp_path: Path) -> None:
    write_manifest(str(tmp_path), GOLDEN_OWNER, **_golden_kwargs())
    envelope = (tmp_path / MANIFEST_NAME).read_bytes()
    for i in range(len(envelope)):
        for mask in (0x01, 0x80):
            bad = bytearray(envelope)
            bad[i] ^= mask
            with pytest.raises((SignatureError, FormatError)):
                parse_manifest(bytes(bad), GOLDEN_OWNER.public)
    for cut in (0, 1, len(envelope) // 2, len(envelope) - 1):
        with pytest.raises((SignatureError, FormatError)):
            parse_manifest(envelope[:cut], GOLDEN_OWNER.public)


def _signed(doc_changes: dict, *, signer: Identity = GOLDEN_OWNER, payload_type: str = PAYLOAD_TYPE) -> bytes:
    doc = json.loads(GOLDEN_PAYLOAD) | doc_changes
    doc = {k: v for k, v in doc.items() if v is not None}
    return sign_envelope(signer, payload_type, canonical_json(doc))


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 1},  # the format before insecure_test_seed: refused, repack
        {"version": 3},
        {"version": "2"},
        {"version": True},  # a bool is an int in Python: JSON true must not pass as 1
        {"insecure_test_seed": None},  # missing
        {"insecure_test_seed": 0},
        {"format": "medlocker.index"},
        {"extra": None},  # missing field
        {"surprise": 1},  # unknown field
        {"owner_key_id": "ml1:" + "0" * 32},
        {"created": "2025-01-02 03:04:05"},
        {"classes": []},
        {"shards": [{"name": "../etc/passwd", "size": 1, "sha256": "sha256:" + "a" * 64, "samples": 1,
                     "index": "x", "index_sha256": "sha256:" + "a" * 64}]},
        {"shards": [dict(GOLDEN_SHARDS[0].to_dict(), size=-1)]},
        {"shards": [GOLDEN_SHARDS[0].to_dict(), GOLDEN_SHARDS[0].to_dict()]},
    ],
)
def test_signed_but_unknown_or_malformed_is_format_error(changes: dict) -> None:
    with pytest.raises(FormatError):
        parse_manifest(_signed(changes), GOLDEN_OWNER.public)


def test_test_seed_manifest_is_refused_unless_allowed() -> None:
    envelope = _signed({"insecure_test_seed": True})
    with pytest.raises(InsecureDatasetError, match="insecure test seed"):
        parse_manifest(envelope, GOLDEN_OWNER.public)
    assert parse_manifest(envelope, GOLDEN_OWNER.public, allow_insecure_test_seed=True).insecure_test_seed
    assert not parse_manifest(_signed({}), GOLDEN_OWNER.public).insecure_test_seed


def test_test_seed_dataset_is_refused_by_every_reader(tmp_path: Path) -> None:
    """Issue 17 case 3: a dataset packed with a test seed is marked, and readers refuse it."""
    ds = make_dataset(str(tmp_path), n=2, per_shard=2, insecure_test_seed=True)
    with pytest.raises(InsecureDatasetError):
        read_manifest(ds.dest, OWNER.public)
    with pytest.raises(InsecureDatasetError):
        _licensed(ds)
    report = check_dataset(ds.dest, OWNER.public)
    assert not report.ok and "insecure test seed" in report.problems[0]
    assert read_manifest(ds.dest, OWNER.public, allow_insecure_test_seed=True).insecure_test_seed
    assert len(list(_licensed(ds, allow_insecure_test_seed=True))) == 2
    assert check_dataset(ds.dest, OWNER.public, allow_insecure_test_seed=True).ok


def test_wrong_signer_or_type_is_signature_error() -> None:
    with pytest.raises(SignatureError):
        parse_manifest(_signed({}, signer=OWNER), GOLDEN_OWNER.public)
    with pytest.raises(SignatureError):
        parse_manifest(_signed({}, payload_type="application/vnd.medlocker.license+json"), GOLDEN_OWNER.public)
    assert parse_manifest(_signed({}), GOLDEN_OWNER.public).dataset_id == "ds-1"


def test_write_manifest_rejects_caller_mistakes(tmp_path: Path) -> None:
    from datetime import datetime

    for bad in (
        dict(created=datetime(2025, 1, 1)),  # naive
        dict(extra={"ratio": 0.5}),  # floats have no canonical form
        dict(classes=[]),
        dict(logo_sha256="abc"),
        dict(shards=GOLDEN_SHARDS * 2),
    ):
        with pytest.raises(ValueError):
            write_manifest(str(tmp_path), GOLDEN_OWNER, **(_golden_kwargs() | bad))
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    ds = make_dataset(str(tmp_path), n=3, per_shard=2, manifest=False)  # shards written, not signed yet
    with pytest.raises(FormatError, match="incomplete or still being packed"):
        read_manifest(str(tmp_path), OWNER.public)
    with pytest.raises(FormatError, match="incomplete"):
        LicensedDataset(str(tmp_path), license=b"", identity=ALICE, owner=OWNER.public)
    report = check_dataset(str(tmp_path), OWNER.public)
    assert not report.ok and "incomplete" in report.problems[0]
    assert ds.shards


def _licensed(ds, **kw) -> LicensedDataset:
    return LicensedDataset(ds.dest, license=ds.license(), identity=ALICE, owner=OWNER.public, now=NOW, **kw)


def test_tampered_index_is_integrity_error(tmp_path: Path) -> None:
    ds = make_dataset(str(tmp_path), n=6, per_shard=3)
    path = tmp_path / ds.shards[1].index
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"label":1', b'"label":2', 1))
    with pytest.raises(IntegrityError, match="index does not match"):
        list(_licensed(ds))
    report = check_dataset(str(tmp_path), OWNER.public)
    assert report.shards == 1 and len(report.problems) == 1 and ds.shards[1].index in report.problems[0]


@pytest.mark.parametrize("how", ["flip_padding", "truncate", "append", "delete"])
def test_tampered_shard_is_integrity_error(tmp_path: Path, how: str) -> None:
    ds = make_dataset(str(tmp_path), n=6, per_shard=3)
    path = tmp_path / ds.shards[0].name
    data = bytearray(path.read_bytes())
    if how == "flip_padding":  # still a valid tar: only the streaming digest notices
        data[-1] ^= 1
        path.write_bytes(data)
    elif how == "truncate":
        path.write_bytes(data[:-512])
    elif how == "append":
        path.write_bytes(data + b"\0" * 512)
    else:
        path.unlink()
    with pytest.raises(IntegrityError):
        list(_licensed(ds))
    assert not check_dataset(str(tmp_path), OWNER.public).ok


def test_verify_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = make_dataset(str(tmp_path / "ds"), n=5, per_shard=2)
    OWNER.save(tmp_path / "owner")
    BOB.save(tmp_path / "bob")
    argv = ["dataset", ds.dest, "--owner", str(tmp_path / "owner.pub"), "--quiet"]
    assert verify_tool.main(argv) == 0
    assert capsys.readouterr().out.strip() == "OK: 3 shards, 5 samples"
    assert verify_tool.main(argv[:3] + [str(tmp_path / "bob.pub"), "--quiet"]) == 1
    assert "not signed by the pinned owner key" in capsys.readouterr().out
    shard = Path(ds.dest) / ds.shards[2].name
    shard.write_bytes(shard.read_bytes()[:-1] + b"\1")
    assert verify_tool.main(argv) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: 1 problem(s)") and ds.shards[2].name in out
    os.remove(Path(ds.dest) / MANIFEST_NAME)
    assert verify_tool.main(argv) == 1
    assert "incomplete" in capsys.readouterr().out


# --------------------------------------------------------------- fuzz behind a valid signature

_GOLDEN_DOC = json.loads(GOLDEN_PAYLOAD)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)


@st.composite
def _spliced(draw) -> bytes:
    """The golden payload with a few random bytes written over it."""
    data = bytearray(GOLDEN_PAYLOAD)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        data[at : at + draw(st.integers(0, 4))] = draw(st.binary(max_size=6))
    return bytes(data)


def _parses_or_refuses(payload: bytes) -> None:
    """Sign ``payload`` with the owner key and parse it: a MedLockerError is the only allowed failure."""
    try:
        parse_manifest(sign_envelope(GOLDEN_OWNER, PAYLOAD_TYPE, payload), GOLDEN_OWNER.public)
    except MedLockerError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | _spliced())
def test_owner_signed_random_payload_fails_closed(payload: bytes) -> None:
    _parses_or_refuses(payload)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_GOLDEN_DOC)), _JSON, st.sampled_from(sorted(GOLDEN_SHARDS[0].to_dict())), _JSON)
def test_owner_signed_random_field_values_fail_closed(field: str, value, shard_field: str, shard_value) -> None:
    _parses_or_refuses(canonical_json(dict(_GOLDEN_DOC, **{field: value})))
    shard = dict(GOLDEN_SHARDS[0].to_dict(), **{shard_field: shard_value})
    _parses_or_refuses(canonical_json(dict(_GOLDEN_DOC, shards=[shard])))
