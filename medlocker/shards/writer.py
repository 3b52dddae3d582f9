"""Write protected samples as deterministic WebDataset shards plus their index.

Mirror of :mod:`medlocker.shards.reader`. The same samples and ``mtime`` give
byte-identical shards: samples are written in key order, each sample's members in
extension order, with fixed mode, owner names, uid/gid 0 and mtime.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import webdataset as wds

from ..crypto import canonical_json
from . import fs as _fs
from . import layout
from .index import IndexEntry, build_index
from .manifest import ShardInfo
from .payload import is_sha256_digest, png_header, sha256_digest

__all__ = ["SampleRecord", "write_shard", "public_metadata"]

_TAR_USER = "medlocker"
_TAR_MODE = 0o444


@dataclass(frozen=True)
class SampleRecord:
    """One protected sample, ready to write.

    Attributes:
        key: Sample key (see :func:`layout.validate_key`).
        label: Class index into the manifest's classes.
        class_name: Name of that class (public metadata); must equal the manifest's
            ``classes[label]``, since readers rebuild the metadata from signed facts.
        png: The watermarked image as an 8-bit RGB PNG.
        width: Image width in pixels (must match the PNG).
        height: Image height in pixels (must match the PNG).
        orig_sha256: :func:`payload.pixel_digest` of the original image.
        payload: The sealed restoration payload.
        commitment: Salted commitment to the watermark parameters.
    """

    key: str
    label: int
    class_name: str
    png: bytes
    width: int
    height: int
    orig_sha256: str
    payload: bytes
    commitment: str


def public_metadata(dataset_id: str, key: str, label: int, class_name: str, width: int, height: int) -> dict[str, Any]:
    """The public facts about a sample; the ``.json`` member is their canonical JSON.

    Only these six fields: never patient data.
    """
    return {"dataset_id": dataset_id, "key": key, "label": label, "class": class_name, "width": width, "height": height}


def _check_record(s: SampleRecord) -> None:
    layout.validate_key(s.key)
    if not isinstance(s.label, int) or isinstance(s.label, bool) or s.label < 0:
        raise ValueError(f"sample {s.key!r}: label must be a non-negative int, got {s.label!r}")
    if not isinstance(s.class_name, str) or not s.class_name:
        raise ValueError(f"sample {s.key!r}: class_name must be a non-empty str")
    if not is_sha256_digest(s.orig_sha256):
        raise ValueError(f"sample {s.key!r}: orig_sha256 must be 'sha256:<hex>'")
    if not isinstance(s.payload, (bytes, bytearray)) or not s.payload:
        raise ValueError(f"sample {s.key!r}: payload must be non-empty bytes")
    if not isinstance(s.commitment, str) or not s.commitment:
        raise ValueError(f"sample {s.key!r}: commitment must be a non-empty str")
    header = png_header(bytes(s.png[:64]))
    if header is None:
        raise ValueError(f"sample {s.key!r}: png is not a PNG file")
    width, height, depth, color = header
    if (width, height) != (s.width, s.height):
        raise ValueError(f"sample {s.key!r}: PNG is {width}x{height}, record says {s.width}x{s.height}")
    if depth != 8 or color != 2:
        raise ValueError(f"sample {s.key!r}: PNG must be 8-bit RGB (got bit depth {depth}, color type {color})")


class _HashingWriter:
    """File-like wrapper that counts and hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def tell(self) -> int:
        return self.size


def write_shard(
    dest: str | os.PathLike[str],
    index: int,
    samples: Sequence[SampleRecord],
    *,
    dataset_id: str,
    prefix: str = layout.DEFAULT_PREFIX,
    storage_options: dict[str, Any] | None = None,
    mtime: int = 0,
) -> ShardInfo:
    """Write shard number ``index`` (tar + index) under ``dest``.

    Args:
        dest: Dataset folder or fsspec URL.
        index: Shard number; the name comes from :func:`layout.shard_name`.
        samples: Protected samples (any order; written sorted by key).
        dataset_id: The dataset these samples belong to.
        prefix: Shard file prefix.
        storage_options: fsspec options for ``dest``.
        mtime: Fixed member mtime, for reproducible bytes.

    Returns:
        The shard's entry for the manifest.

    Raises:
        ValueError: A record is malformed, or keys repeat.
    """
    if not samples:
        raise ValueError("a shard needs at least one sample")
    for s in samples:
        _check_record(s)
    ordered = sorted(samples, key=lambda s: s.key)
    for a, b in zip(ordered, ordered[1:]):
        if a.key == b.key:
            raise ValueError(f"sample key {a.key!r} appears twice in shard {index}")
    name = layout.shard_name(prefix, index)
    entries = []
    with _fs.atomic_write(_fs.join(dest, name), storage_options) as raw:
        out = _HashingWriter(raw)
        # encoder=False: members are bytes we built; no pickling encoders involved.
        with wds.TarWriter(out, user=_TAR_USER, group=_TAR_USER, mode=_TAR_MODE, encoder=False, mtime=mtime) as tw:
            for s in ordered:
                wm_sha256 = sha256_digest(s.png)
                tw.write(
                    {
                        "__key__": s.key,
                        layout.EXT_IMAGE: bytes(s.png),
                        layout.EXT_LABEL: str(s.label).encode("ascii"),
                        layout.EXT_META: canonical_json(
                            public_metadata(dataset_id, s.key, s.label, s.class_name, s.width, s.height)
                        ),
                        layout.EXT_SEAL: bytes(s.payload),
                    }
                )
                entries.append(
                    IndexEntry(
                        key=s.key,
                        label=s.label,
                        wm_sha256=wm_sha256,
                        orig_sha256=s.orig_sha256,
                        payload_sha256=sha256_digest(s.payload),
                        commitment=s.commitment,
                    )
                )
    index_bytes = build_index(dataset_id, name, entries)
    with _fs.atomic_write(_fs.join(dest, layout.index_name(name)), storage_options) as f:
        f.write(index_bytes)
    return ShardInfo(
        name=name,
        size=out.size,
        sha256="sha256:" + out.sha.hexdigest(),
        samples=len(ordered),
        index=layout.index_name(name),
        index_sha256=sha256_digest(index_bytes),
    )
