"""Per-shard index: the owner's digests for every sample of one shard.

``<prefix>-NNNNNN.index.json`` is canonical JSON::

    {"dataset_id": "...", "format": "medlocker.index", "version": 1,
     "shard": "shard-000000.tar",
     "samples": [{"key", "label", "wm_sha256", "orig_sha256",
                  "payload_sha256", "commitment"}, ...]}   # sorted by key

The index itself is not signed; the signed manifest lists its SHA-256, and the
reader checks that digest *before* parsing (:func:`parse_index`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..crypto import canonical_json, parse_json_strict
from ..errors import FormatError, IntegrityError
from . import layout
from .payload import is_sha256_digest, sha256_digest

__all__ = ["IndexEntry", "ShardIndex", "build_index", "parse_index"]

MAX_INDEX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class IndexEntry:
    """The owner-pinned facts about one sample."""

    key: str
    label: int
    wm_sha256: str  # sha256 of the stored .png bytes
    orig_sha256: str  # pixel_digest of the original image
    payload_sha256: str  # sha256 of the stored .mlseal bytes
    commitment: str  # salted commitment to the watermark parameters


@dataclass(frozen=True)
class ShardIndex:
    """A parsed, digest-checked shard index."""

    dataset_id: str
    shard: str
    entries: Mapping[str, IndexEntry]  # by key, in key order

    def __len__(self) -> int:
        return len(self.entries)


def build_index(dataset_id: str, shard: str, entries: Sequence[IndexEntry]) -> bytes:
    """Canonical JSON bytes of the index of ``shard`` (entries sorted by key)."""
    doc = {
        "format": layout.INDEX_FORMAT,
        "version": layout.INDEX_VERSION,
        "dataset_id": dataset_id,
        "shard": shard,
        "samples": [asdict(e) for e in sorted(entries, key=lambda e: e.key)],
    }
    return canonical_json(doc)


_ENTRY_FIELDS = {"key", "label", "wm_sha256", "orig_sha256", "payload_sha256", "commitment"}
_DOC_FIELDS = {"format", "version", "dataset_id", "shard", "samples"}


def _entry(obj: Any, where: str) -> IndexEntry:
    if not isinstance(obj, dict) or set(obj) != _ENTRY_FIELDS:
        raise FormatError(f"{where}: each sample needs exactly the fields {sorted(_ENTRY_FIELDS)}")
    key, label = obj["key"], obj["label"]
    if not isinstance(key, str) or layout.split_member_name(f"{key}.{layout.EXT_IMAGE}") is None:
        raise FormatError(f"{where}: invalid sample key {key!r}")
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        raise FormatError(f"{where}: sample {key!r} has an invalid label {label!r}")
    for f in ("wm_sha256", "orig_sha256", "payload_sha256"):
        if not is_sha256_digest(obj[f]):
            raise FormatError(f"{where}: sample {key!r} has a malformed {f}")
    if not isinstance(obj["commitment"], str):
        raise FormatError(f"{where}: sample {key!r} has a malformed commitment")
    return IndexEntry(**obj)


def parse_index(data: bytes, *, expected_sha256: str, shard: str, dataset_id: str) -> ShardIndex:
    """Check an index's digest against the manifest, then parse it.

    Args:
        data: The index file bytes.
        expected_sha256: ``index_sha256`` from the verified manifest.
        shard: The shard file name the manifest lists this index for.
        dataset_id: The manifest's dataset id.

    Raises:
        IntegrityError: The bytes do not match ``expected_sha256``.
        FormatError: Unknown format/version, or fields that do not belong to
            ``shard``/``dataset_id`` (nothing is parsed before the digest check).
    """
    where = layout.index_name(shard)
    if sha256_digest(data) != expected_sha256:
        raise IntegrityError(f"{where}: index does not match the digest in the signed manifest")
    try:
        doc = parse_json_strict(data)
    except ValueError as exc:
        raise FormatError(f"{where}: not valid JSON: {exc}") from None
    layout.check_format_header(doc, fmt=layout.INDEX_FORMAT, version=layout.INDEX_VERSION, where=where)
    if set(doc) != _DOC_FIELDS:
        raise FormatError(f"{where}: index needs exactly the fields {sorted(_DOC_FIELDS)}")
    if doc["dataset_id"] != dataset_id or doc["shard"] != shard:
        raise FormatError(f"{where}: index belongs to {doc['dataset_id']!r}/{doc['shard']!r}")
    samples = doc["samples"]
    if not isinstance(samples, list):
        raise FormatError(f"{where}: samples must be a list")
    entries: dict[str, IndexEntry] = {}
    for obj in samples:
        e = _entry(obj, where)
        if entries and e.key <= next(reversed(entries)):
            raise FormatError(f"{where}: samples are not sorted by key or repeat {e.key!r}")
        entries[e.key] = e
    return ShardIndex(dataset_id=dataset_id, shard=shard, entries=entries)
