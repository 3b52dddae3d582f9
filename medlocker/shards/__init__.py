"""Protected datasets on disk: deterministic WebDataset shards, per-shard indexes and a
signed manifest, on a local folder or any fsspec URL.

``layout`` names every file, ``payload`` defines the restoration plaintext and pixel
digests, ``writer``/``reader`` are mirrors, ``manifest`` signs and verifies, ``fs``
opens URLs with per-process file systems.
"""

from __future__ import annotations

from .index import IndexEntry, ShardIndex, build_index, parse_index
from .layout import MANIFEST_NAME, index_name, shard_name
from .manifest import Manifest, ShardInfo, parse_manifest, read_manifest, write_manifest
from .payload import (
    apply_restoration,
    build_restoration,
    parse_restoration,
    pixel_digest,
    restore_image,
    sha256_digest,
)
from .reader import DatasetReport, check_dataset
from .writer import SampleRecord, public_metadata, write_shard

__all__ = [
    "MANIFEST_NAME",
    "shard_name",
    "index_name",
    "pixel_digest",
    "sha256_digest",
    "build_restoration",
    "parse_restoration",
    "apply_restoration",
    "restore_image",
    "SampleRecord",
    "ShardInfo",
    "Manifest",
    "IndexEntry",
    "ShardIndex",
    "build_index",
    "parse_index",
    "public_metadata",
    "write_shard",
    "write_manifest",
    "read_manifest",
    "parse_manifest",
    "check_dataset",
    "DatasetReport",
]
