"""Per-shard index: digest before parse, strict fields, and a fuzzer that reaches the parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medlocker.crypto import canonical_json
from medlocker.errors import FormatError, IntegrityError, MedLockerError
from medlocker.shards import build_index, parse_index, sha256_digest
from medlocker.shards.index import IndexEntry

SHARD = "shard-000000.tar"
DATASET = "ds-1"
ENTRIES = [
    IndexEntry(f"k{i}", i % 3, "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64, f"commit{i}")
    for i in range(3)
]
INDEX = build_index(DATASET, SHARD, ENTRIES)


def _parse(data: bytes):
    """Parse as a reader would after the manifest pinned exactly these bytes."""
    return parse_index(data, expected_sha256=sha256_digest(data), shard=SHARD, dataset_id=DATASET)


def test_round_trip_and_digest_first() -> None:
    index = _parse(INDEX)
    assert list(index.entries) == ["k0", "k1", "k2"] and index.entries["k1"] == ENTRIES[1] and len(index) == 3
    with pytest.raises(IntegrityError, match="index does not match"):
        parse_index(INDEX + b" ", expected_sha256=sha256_digest(INDEX), shard=SHARD, dataset_id=DATASET)


@pytest.mark.parametrize(
    "changes",
    [
        {"version": True},  # bool is an int in Python: must not pass as 1
        {"version": 2},
        {"version": "1"},
        {"format": "medlocker.manifest"},
        {"dataset_id": "other"},
        {"shard": "shard-000001.tar"},
        {"samples": {}},
        {"extra": 1},
    ],
)
def test_malformed_index_is_format_error(changes: dict) -> None:
    with pytest.raises(FormatError):
        _parse(canonical_json(json.loads(INDEX) | changes))


_DOC = json.loads(INDEX)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)


def _fails_closed(data: bytes) -> None:
    try:
        _parse(data)
    except MedLockerError:
        pass  # anything else (ValueError, KeyError, TypeError...) fails the test


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _fails_closed(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_DOC)), _JSON, st.sampled_from(sorted(_DOC["samples"][0])), _JSON)
def test_fuzz_random_field_values(field: str, value, entry_field: str, entry_value) -> None:
    _fails_closed(canonical_json(dict(_DOC, **{field: value})))
    entry = dict(_DOC["samples"][0], **{entry_field: entry_value})
    _fails_closed(canonical_json(dict(_DOC, samples=[entry, *_DOC["samples"][1:]])))
