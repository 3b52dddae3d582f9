"""The signed manifest: the one file a reader must trust.

``manifest.dsse.json`` is a DSSE envelope (payloadType
``application/vnd.medlocker.manifest+json``) over canonical JSON::

    {"format": "medlocker.manifest", "version": 2, "dataset_id": "...",
     "owner_key_id": "ml1:...", "created": "2025-01-02T03:04:05Z",
     "classes": ["grade0", ...], "logo_sha256": "sha256:...",
     "insecure_test_seed": false,
     "shards": [{"name", "size", "sha256", "samples", "index", "index_sha256"}, ...],
     "extra": {...}, "files": [{"name", "size", "sha256"}, ...]}

``files`` (optional, absent when empty) pins the other files published beside the
shards: the wids shard index and the dataset card (:mod:`medlocker.shards.catalog`).

``insecure_test_seed`` is signed: a dataset whose keys derive from a test seed
says so, and every reader refuses it (:class:`InsecureDatasetError`) unless the
caller passes ``allow_insecure_test_seed=True``.

One signature covers every shard's size and digest and every index's digest, so a
reader verifies once at start-up (cost grows with the shard count, not the sample
count) and checks each index by hash when it opens that shard. The manifest is
written last, so a dataset without one is incomplete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ..crypto import Identity, PublicIdentity, canonical_json, parse_json_strict, sign_envelope, verify_envelope
from ..errors import FormatError, InsecureDatasetError
from ..util import parse_rfc3339, rfc3339
from . import fs as _fs
from . import layout
from .payload import is_sha256_digest, sha256_digest

__all__ = [
    "ShardInfo",
    "FileInfo",
    "Manifest",
    "build_manifest_payload",
    "parse_manifest",
    "write_manifest",
    "read_manifest",
    "manifest_url",
]

MAX_MANIFEST_BYTES = 64 * 2**20
_FIELDS = {
    "format", "version", "dataset_id", "owner_key_id", "created", "classes", "logo_sha256", "insecure_test_seed",
    "shards", "extra",
}
_OPTIONAL = {"files"}


@dataclass(frozen=True)
class ShardInfo:
    """What the manifest pins about one shard (JSON-able for packer checkpoints)."""

    name: str
    size: int
    sha256: str
    samples: int
    index: str
    index_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardInfo:
        """Build from a dict; ``FormatError`` if a field is missing, extra or malformed."""
        if not isinstance(d, Mapping) or set(d) != set(cls.__dataclass_fields__):
            raise FormatError(f"shard entry needs exactly the fields {sorted(cls.__dataclass_fields__)}")
        info = cls(**d)
        name = info.name
        if not layout.is_shard_name(name) or info.index != layout.index_name(name):
            raise FormatError(f"shard entry has an invalid name {name!r} or index {info.index!r}")
        for n in (info.size, info.samples):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise FormatError(f"shard {name}: size and samples must be non-negative ints")
        if not (is_sha256_digest(info.sha256) and is_sha256_digest(info.index_sha256)):
            raise FormatError(f"shard {name}: malformed sha256 or index_sha256")
        return info


@dataclass(frozen=True)
class FileInfo:
    """What the manifest pins about one other published file (catalog files)."""

    name: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileInfo:
        """Build from a dict; ``FormatError`` if a field is missing, extra or malformed."""
        if not isinstance(d, Mapping) or set(d) != set(cls.__dataclass_fields__):
            raise FormatError(f"file entry needs exactly the fields {sorted(cls.__dataclass_fields__)}")
        info = cls(**d)
        if (not isinstance(info.name, str) or not info.name or "/" in info.name or info.name in (".", "..")
                or layout.is_shard_name(info.name) or info.name == layout.MANIFEST_NAME):
            raise FormatError(f"file entry has an invalid name {info.name!r}")
        if not isinstance(info.size, int) or isinstance(info.size, bool) or info.size < 0:
            raise FormatError(f"file {info.name}: size must be a non-negative int")
        if not is_sha256_digest(info.sha256):
            raise FormatError(f"file {info.name}: malformed sha256")
        return info


@dataclass(frozen=True)
class Manifest:
    """A verified manifest. ``digest`` is what licences bind to."""

    dataset_id: str
    owner_key_id: str
    created: datetime
    classes: tuple[str, ...]
    logo_sha256: str
    shards: tuple[ShardInfo, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    digest: str = ""  # "sha256:" + hex of the envelope file bytes
    insecure_test_seed: bool = False  # keys derive from a test seed: anyone can decrypt
    files: tuple[FileInfo, ...] = ()

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)


def build_manifest_payload(
    *,
    dataset_id: str,
    owner_key_id: str,
    shards: Sequence[ShardInfo],
    classes: Sequence[str],
    logo_sha256: str,
    created: datetime,
    extra: Mapping[str, Any] | None = None,
    insecure_test_seed: bool = False,
    files: Sequence[FileInfo] = (),
) -> bytes:
    """Canonical JSON bytes of the manifest payload (what gets signed)."""
    if not isinstance(insecure_test_seed, bool):
        raise TypeError("insecure_test_seed must be a bool")
    if not isinstance(dataset_id, str) or not dataset_id:
        raise ValueError("dataset_id must be a non-empty str")
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise ValueError("classes must be a non-empty sequence of non-empty str")
    if not is_sha256_digest(logo_sha256):
        raise ValueError(f"logo_sha256 must be 'sha256:<hex>', got {logo_sha256!r}")
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise ValueError("shard names repeat")
    for s in shards:
        try:
            ShardInfo.from_dict(s.to_dict())  # the reader's checks, as a caller mistake here
        except FormatError as exc:
            raise ValueError(str(exc)) from None
    doc = {
        "format": layout.MANIFEST_FORMAT,
        "version": layout.MANIFEST_VERSION,
        "dataset_id": dataset_id,
        "owner_key_id": owner_key_id,
        "created": rfc3339(created),
        "classes": list(classes),
        "logo_sha256": logo_sha256,
        "insecure_test_seed": insecure_test_seed,
        "shards": [s.to_dict() for s in sorted(shards, key=lambda s: s.name)],
        "extra": dict(extra or {}),
    }
    if files:
        for f in files:
            try:
                FileInfo.from_dict(f.to_dict())
            except FormatError as exc:
                raise ValueError(str(exc)) from None
        if len({f.name for f in files}) != len(files):
            raise ValueError("file names repeat")
        doc["files"] = [f.to_dict() for f in sorted(files, key=lambda f: f.name)]
    return canonical_json(doc)


def parse_manifest(
    envelope: bytes, owner: PublicIdentity, *, source: str = "manifest", allow_insecure_test_seed: bool = False
) -> Manifest:
    """Verify ``envelope`` against the pinned ``owner`` key, then parse it.

    Args:
        allow_insecure_test_seed: Accept a dataset the owner packed with a test
            seed (its originals are decryptable by anyone). Tests only.

    Raises:
        SignatureError: Not signed by ``owner``.
        FormatError: Malformed envelope, unknown format or version, bad fields.
        InsecureDatasetError: The manifest marks a test-seed dataset and
            ``allow_insecure_test_seed`` is false.
    """
    payload = verify_envelope(envelope, owner, layout.MANIFEST_PAYLOAD_TYPE)
    try:
        doc = parse_json_strict(payload)
    except ValueError as exc:
        raise FormatError(f"{source}: payload is not valid JSON: {exc}") from None
    layout.check_format_header(doc, fmt=layout.MANIFEST_FORMAT, version=layout.MANIFEST_VERSION, where=source)
    if not _FIELDS <= set(doc) <= _FIELDS | _OPTIONAL:
        raise FormatError(f"{source}: manifest needs the fields {sorted(_FIELDS)} (optionally {sorted(_OPTIONAL)})")
    if doc["owner_key_id"] != owner.key_id:
        raise FormatError(f"{source}: names owner key {doc['owner_key_id']!r}, signed by {owner.key_id!r}")
    dataset_id, classes, created = doc["dataset_id"], doc["classes"], doc["created"]
    if not isinstance(dataset_id, str) or not dataset_id:
        raise FormatError(f"{source}: invalid dataset_id")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise FormatError(f"{source}: classes must be a non-empty list of str")
    try:
        created = parse_rfc3339(created)
    except ValueError:
        raise FormatError(f"{source}: created must be RFC 3339 UTC like 2025-01-02T03:04:05Z") from None
    if not is_sha256_digest(doc["logo_sha256"]) or not isinstance(doc["extra"], dict):
        raise FormatError(f"{source}: malformed logo_sha256 or extra")
    if type(doc["insecure_test_seed"]) is not bool:
        raise FormatError(f"{source}: insecure_test_seed must be true or false")
    if doc["insecure_test_seed"] and not allow_insecure_test_seed:
        raise InsecureDatasetError(
            f"{source}: the owner packed this dataset with an insecure test seed, so anyone can decrypt its "
            "originals; it is for tests only (pass allow_insecure_test_seed=True to read it anyway)"
        )
    if not isinstance(doc["shards"], list):
        raise FormatError(f"{source}: shards must be a list")
    shards = tuple(ShardInfo.from_dict(s) for s in doc["shards"])
    if len({s.name for s in shards}) != len(shards):
        raise FormatError(f"{source}: shard names repeat")
    if not isinstance(doc.get("files", []), list):
        raise FormatError(f"{source}: files must be a list")
    files = tuple(FileInfo.from_dict(f) for f in doc.get("files", []))
    if len({f.name for f in files}) != len(files):
        raise FormatError(f"{source}: file names repeat")
    return Manifest(
        dataset_id=dataset_id,
        owner_key_id=doc["owner_key_id"],
        created=created,
        classes=tuple(classes),
        logo_sha256=doc["logo_sha256"],
        shards=shards,
        extra=doc["extra"],
        digest=sha256_digest(envelope),
        insecure_test_seed=doc["insecure_test_seed"],
        files=files,
    )


def manifest_url(dest: str | os.PathLike[str]) -> str:
    """Location of the manifest of dataset ``dest``."""
    return _fs.join(dest, layout.MANIFEST_NAME)


def write_manifest(
    dest: str | os.PathLike[str],
    owner: Identity,
    *,
    dataset_id: str,
    shards: Sequence[ShardInfo],
    classes: Sequence[str],
    logo_sha256: str,
    created: datetime,
    extra: Mapping[str, Any] | None = None,
    files: Sequence[FileInfo] = (),
    storage_options: dict[str, Any] | None = None,
    insecure_test_seed: bool = False,
) -> str:
    """Sign and write the manifest (call it last, after every shard is written).

    Args:
        insecure_test_seed: The run's keys derive from a test seed; signed into
            the manifest so that readers refuse the dataset by default.

    Returns:
        The manifest digest (``"sha256:" + hex`` of the envelope bytes) licences bind to.
    """
    payload = build_manifest_payload(
        dataset_id=dataset_id,
        owner_key_id=owner.key_id,
        shards=shards,
        classes=classes,
        logo_sha256=logo_sha256,
        created=created,
        extra=extra,
        insecure_test_seed=insecure_test_seed,
        files=files,
    )
    envelope = sign_envelope(owner, layout.MANIFEST_PAYLOAD_TYPE, payload)
    with _fs.atomic_write(manifest_url(dest), storage_options) as f:
        f.write(envelope)
    return sha256_digest(envelope)


def read_manifest(
    dest: str | os.PathLike[str],
    owner: PublicIdentity,
    *,
    storage_options: dict[str, Any] | None = None,
    allow_insecure_test_seed: bool = False,
) -> Manifest:
    """Read and verify the manifest of dataset ``dest`` against the pinned ``owner``.

    Raises:
        FormatError: No manifest (the dataset is incomplete or still being packed),
            or a malformed one.
        SignatureError: Not signed by ``owner``.
        InsecureDatasetError: A test-seed dataset, unless ``allow_insecure_test_seed``.
    """
    url = manifest_url(dest)
    try:
        envelope = _fs.read_bytes(url, storage_options, max_size=MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise FormatError(
            f"{url}: no manifest: the dataset is incomplete or still being packed"
        ) from None
    return parse_manifest(envelope, owner, source=url, allow_insecure_test_seed=allow_insecure_test_seed)
