"""The one place that names the files and members of a protected dataset.

A dataset folder (local path or fsspec URL) holds::

    <prefix>-000000.tar            webdataset shard (the packer's prefix: dataset_prefix)
    <prefix>-000000.index.json     per-shard index (canonical JSON)
    ...
    shardindex.json                wids shard index (catalog.py), pinned by the manifest
    README.md                      dataset card for Hugging Face datasets (catalog.py), pinned too
    manifest.dsse.json             signed manifest, written last

Inside a shard every sample ``<key>`` has exactly the members listed in
:data:`MEMBER_EXTENSIONS`. Writer, reader and verifier all build names here, so the
format has a single source of truth.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ..errors import FormatError

__all__ = [
    "MANIFEST_NAME",
    "WIDS_INDEX_NAME",
    "CARD_NAME",
    "CATALOG_NAMES",
    "MANIFEST_PAYLOAD_TYPE",
    "MANIFEST_FORMAT",
    "INDEX_FORMAT",
    "FORMAT_VERSION",
    "INDEX_VERSION",
    "MANIFEST_VERSION",
    "check_format_header",
    "DEFAULT_PREFIX",
    "EXT_IMAGE",
    "EXT_LABEL",
    "EXT_META",
    "EXT_SEAL",
    "MEMBER_EXTENSIONS",
    "shard_name",
    "dataset_prefix",
    "index_name",
    "member_name",
    "split_member_name",
    "validate_key",
    "validate_prefix",
    "is_shard_name",
]

MANIFEST_NAME = "manifest.dsse.json"
WIDS_INDEX_NAME = "shardindex.json"  # the name `widsindex create` writes
CARD_NAME = "README.md"  # the dataset card Hugging Face `datasets` reads
CATALOG_NAMES = (WIDS_INDEX_NAME, CARD_NAME)  # written by shards/catalog.py, pinned by the manifest's files
MANIFEST_PAYLOAD_TYPE = "application/vnd.medlocker.manifest+json"
MANIFEST_FORMAT = "medlocker.manifest"
INDEX_FORMAT = "medlocker.index"
INDEX_VERSION = 1
MANIFEST_VERSION = 2  # 2: adds the signed "insecure_test_seed" flag
FORMAT_VERSION = INDEX_VERSION  # kept for callers of the single-version era
DEFAULT_PREFIX = "shard"

EXT_IMAGE = "png"  # watermarked image, lossless
EXT_LABEL = "cls"  # label as ASCII decimal
EXT_META = "json"  # public metadata, canonical JSON
EXT_SEAL = "mlseal"  # sealed restoration payload (opaque; never a pickle)
MEMBER_EXTENSIONS: tuple[str, ...] = tuple(sorted((EXT_IMAGE, EXT_LABEL, EXT_META, EXT_SEAL)))

_SHARD_SUFFIX = ".tar"
_INDEX_SUFFIX = ".index.json"
# Keys: no dots (webdataset splits member names at the first dot), no slashes, no
# leading "_" (webdataset treats "__x__" as metadata); 64 chars keep every member
# name well inside the 100-byte USTAR limit.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SHARD_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]{0,63})-([0-9]{6,})\.tar")


def check_format_header(doc: Any, *, fmt: str, version: int, where: str) -> dict[str, Any]:
    """Return ``doc`` if it is a JSON object naming format ``fmt`` at ``version``.

    The one header check of every MedLocker file. The version must be a real
    ``int`` (JSON ``true`` is a ``bool``, which Python would compare equal to 1).

    Raises:
        FormatError: Not an object, another format, or a version this reader does not know.
    """
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise FormatError(f"{where}: not a {fmt} file")
    found = doc.get("version")
    if type(found) is not int or found != version:
        raise FormatError(
            f"{where}: {fmt} version {found!r} is not supported (this reader knows {version}); upgrade MedLocker"
        )
    return doc


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid sample key, else raise ``ValueError``."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(
            f"invalid sample key {key!r}: use 1-64 characters from [A-Za-z0-9_-], "
            "starting with a letter or digit (no dots or slashes)"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid shard prefix, else raise ``ValueError``."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"invalid shard prefix {prefix!r}: use 1-64 characters from [A-Za-z0-9_-]"
        )
    return prefix


def dataset_prefix(prefix: str, dataset_id: str) -> str:
    """Shard prefix of one dataset: ``<prefix>-<8 hex of SHA-256(dataset id)>``.

    Two datasets never share a shard name, so a dataset replaced in place is never
    mixed with its successor under one name.
    """
    return validate_prefix(f"{prefix}-{hashlib.sha256(dataset_id.encode()).hexdigest()[:8]}")


def shard_name(prefix: str, i: int) -> str:
    """Name of shard number ``i``: ``<prefix>-NNNNNN.tar``."""
    validate_prefix(prefix)
    if not isinstance(i, int) or isinstance(i, bool) or i < 0:
        raise ValueError(f"shard number must be a non-negative int, got {i!r}")
    return f"{prefix}-{i:06d}{_SHARD_SUFFIX}"


def is_shard_name(name: str) -> bool:
    """True if ``name`` is a bare shard file name this format can produce."""
    return isinstance(name, str) and _SHARD_RE.fullmatch(name) is not None


def index_name(shard: str) -> str:
    """Name of the index file that belongs to shard file ``shard``."""
    if not is_shard_name(shard):
        raise ValueError(f"not a shard file name: {shard!r}")
    return shard[: -len(_SHARD_SUFFIX)] + _INDEX_SUFFIX


def member_name(key: str, ext: str) -> str:
    """Tar member name of ``key``'s member with extension ``ext``."""
    if ext not in MEMBER_EXTENSIONS:
        raise ValueError(f"unknown member extension {ext!r}; expected one of {MEMBER_EXTENSIONS}")
    return f"{validate_key(key)}.{ext}"


def split_member_name(name: str) -> tuple[str, str] | None:
    """Split a tar member name into ``(key, ext)``; ``None`` if it is not one of ours."""
    key, dot, ext = name.partition(".")
    if not dot or ext not in MEMBER_EXTENSIONS or not _KEY_RE.fullmatch(key):
        return None
    return key, ext
