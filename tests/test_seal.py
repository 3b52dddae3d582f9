"""Sealed per-sample payloads and watermark-parameter commitments."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medlocker.crypto.commit import check_commitment, commit, new_salt
from medlocker.crypto.encoding import canonical_json
from medlocker.crypto.seal import derive_sample_key, open_payload, payload_aad, seal_payload
from medlocker.errors import FormatError, IntegrityError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "crypto-v1.json").read_text())
IN, OUT = GOLDEN["inputs"], GOLDEN["outputs"]
KEY = bytes.fromhex(IN["content_key"])
PLAIN = bytes.fromhex(IN["payload_plaintext"])
WHERE = {"dataset_id": IN["dataset_id"], "sample_key": IN["sample_key"], "watermarked_digest": IN["watermarked_digest"]}
SEALED = bytes.fromhex(OUT["sealed_payload"])


def test_golden_sample_key():
    key = derive_sample_key(KEY, dataset_id=IN["dataset_id"], sample_key=IN["sample_key"])
    assert key.hex() == OUT["sample_key_derived"]
    independent = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=IN["dataset_id"].encode(),
        info=b"medlocker.sample.v1" + IN["sample_key"].encode(),
    ).derive(KEY)
    assert key == independent


def test_golden_sealed_payload():
    assert seal_payload(KEY, PLAIN, nonce=bytes.fromhex(IN["payload_nonce"]), **WHERE) == SEALED
    assert SEALED[:4] == b"MLP1" and SEALED[4:16] == bytes(range(12))
    assert len(SEALED) == 4 + 12 + len(PLAIN) + 16
    assert open_payload(KEY, SEALED, **WHERE) == PLAIN


def test_aad_layout():
    assert payload_aad(**WHERE) == canonical_json(
        {"v": 1, "dataset": IN["dataset_id"], "sample": IN["sample_key"], "wm": IN["watermarked_digest"]}
    )


def test_random_nonce_round_trip():
    a, b = seal_payload(KEY, PLAIN, **WHERE), seal_payload(KEY, PLAIN, **WHERE)
    assert a != b
    assert open_payload(KEY, a, **WHERE) == open_payload(KEY, b, **WHERE) == PLAIN
    assert open_payload(KEY, seal_payload(KEY, b"", **WHERE), **WHERE) == b""


@pytest.mark.parametrize(
    "change",
    [
        {"sample_key": "sample000002"},
        {"dataset_id": "another-dataset"},
        {"watermarked_digest": "sha256:" + hashlib.sha256(b"other png").hexdigest()},
    ],
)
def test_payload_bound_to_sample_dataset_and_watermark(change):
    with pytest.raises(IntegrityError):
        open_payload(KEY, SEALED, **{**WHERE, **change})


def test_wrong_content_key():
    with pytest.raises(IntegrityError):
        open_payload(bytes(32), SEALED, **WHERE)


def test_every_flipped_byte_is_rejected():
    for i in range(len(SEALED)):
        for mask in (0x01, 0x80):
            bad = bytearray(SEALED)
            bad[i] ^= mask
            expected = FormatError if i < 4 else IntegrityError
            with pytest.raises(expected):
                open_payload(KEY, bytes(bad), **WHERE)


def test_truncated_and_extended():
    for n in range(len(SEALED)):
        with pytest.raises((IntegrityError, FormatError)):
            open_payload(KEY, SEALED[:n], **WHERE)
    with pytest.raises(IntegrityError):
        open_payload(KEY, SEALED + b"\x00", **WHERE)


def test_unknown_version():
    with pytest.raises(FormatError, match="version"):
        open_payload(KEY, b"MLP2" + SEALED[4:], **WHERE)


def test_caller_mistakes_are_value_errors():
    with pytest.raises(ValueError):
        seal_payload(KEY[:16], PLAIN, **WHERE)
    with pytest.raises(ValueError):
        seal_payload(KEY, PLAIN, nonce=b"short", **WHERE)
    with pytest.raises(ValueError):
        seal_payload(KEY, PLAIN, **{**WHERE, "sample_key": ""})


# --- commitments ---------------------------------------------------------------------


def test_golden_commitment():
    data, salt = IN["commit_data"].encode(), bytes.fromhex(IN["commit_salt"])
    assert commit(data, salt) == OUT["commitment"]
    assert OUT["commitment"] == hmac.new(salt, b"medlocker.commit.v1" + data, hashlib.sha256).hexdigest()
    assert check_commitment(OUT["commitment"], data, salt)


def test_commitment_checks():
    data, salt = IN["commit_data"].encode(), bytes.fromhex(IN["commit_salt"])
    c = commit(data, salt)
    assert not check_commitment(c, data + b" ", salt)
    assert not check_commitment(c, data, new_salt())
    assert not check_commitment(c[:-1], data, salt)
    assert not check_commitment(c.upper(), data, salt)
    assert not check_commitment("é" * 64, data, salt)
    assert not check_commitment(None, data, salt)  # type: ignore[arg-type]
    assert len(new_salt()) == 32 and new_salt() != new_salt()
    with pytest.raises(ValueError):
        commit(data, b"short")
