"""Catalog files published beside the shards, so standard readers open the public view.

* ``shardindex.json``: a wids shard index (``{"__kind__": "wids-shard-index-v1",
  "wids_version": 1, "shardlist": [{"url", "nsamples", "filesize"}, ...]}``, the format
  ``widsindex create`` writes), so ``wids.ShardListDataset(".../shardindex.json")``
  gives indexed access to the watermarked samples;
* ``README.md``: a dataset card whose YAML ``configs`` name the shards as the data files,
  so ``datasets.load_dataset(folder)`` picks Hugging Face's webdataset builder (the folder
  also holds ``.json`` files: the indexes and the manifest) and infers the features.

Both are written before the manifest, which pins their size and SHA-256 (``files``), so
``medlocker verify dataset`` checks them like the shards. Both are deterministic: the same
shards and run give the same bytes. Neither carries anything the shards do not already
show publicly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..util import rfc3339
from . import fs as _fs
from . import layout
from .manifest import FileInfo, Manifest, ShardInfo

__all__ = ["check_catalog", "dataset_card", "wids_index", "write_catalog"]

# (member, type a standard reader gives it, what it holds), in member order
PUBLIC_FIELDS: tuple[tuple[str, str, str], ...] = (
    (layout.EXT_LABEL, "int", "class index into the class list below (ASCII decimal)"),
    (layout.EXT_META, "struct", "public metadata: dataset_id, key, label, class, width, height (no patient data)"),
    (layout.EXT_SEAL, "binary", "sealed restoration payload: opaque without a licence"),
    (layout.EXT_IMAGE, "image", "the published image, with its visible watermark (lossless PNG)"),
)
_CHUNK = 1 << 20


def wids_index(dataset_id: str, shards: Sequence[ShardInfo]) -> bytes:
    """The wids shard index: shard URLs relative to the index, sample counts, sizes."""
    doc = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": dataset_id,
        "shardlist": [
            {"url": s.name, "nsamples": s.samples, "filesize": s.size, "sha256": s.sha256}
            for s in sorted(shards, key=lambda s: s.name)
        ],
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _shard_globs(shards: Sequence[ShardInfo]) -> list[str]:
    """``<prefix>-*.tar`` per shard prefix: matches the shards and nothing else in the folder."""
    return sorted({s.name.rsplit("-", 1)[0] + "-*.tar" for s in shards})


def dataset_card(
    *,
    dataset_id: str,
    owner_key_id: str,
    classes: Sequence[str],
    shards: Sequence[ShardInfo],
    created: datetime,
) -> bytes:
    """The Hugging Face dataset card: YAML ``configs`` (webdataset data files) + a short text."""
    q = json.dumps  # a JSON string is a valid YAML scalar: no quoting rules to get wrong
    globs = _shard_globs(shards)
    front = [
        "---",
        f"pretty_name: {q(f'MedLocker protected dataset {dataset_id}')}",
        "tags:",
        "- medlocker",
        "- webdataset",
        "- medical",
        "task_categories:",
        "- image-classification",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path:",
        *(f"    - {q(g)}" for g in globs),
        "---",
    ]
    n = sum(s.samples for s in shards)
    rows = "\n".join(f"| `{ext}` | {kind} | {what} |" for ext, kind, what in PUBLIC_FIELDS)
    class_list = "\n".join(f"- `{i}`: {name}" for i, name in enumerate(classes))
    body = f"""
# MedLocker protected dataset `{dataset_id}`

{n} images in {len(shards)} WebDataset shard(s), published {rfc3339(created)} by owner key
`{owner_key_id}`. Every image carries a visible adversarial watermark placed off the
lesions; a licensee restores the exact originals, everyone else reads what is here.

## Reading the public view

```python
import glob, datasets, wids, webdataset as wds
ds = datasets.load_dataset("<this folder>", split="train")  # columns png, cls, json, mlseal
ds = wids.ShardListDataset("<this folder>/{layout.WIDS_INDEX_NAME}", transformations=[])  # indexed, raw bytes
ds = wds.WebDataset(sorted(glob.glob("<this folder>/{globs[0]}")), shardshuffle=False).decode("pil", only=["png"])
```

Decode the `png` member only: the default decoders of webdataset and wids unpickle
`.pyd`/`.pkl` members, which a mirror could slip into a shard. A copy that passes
`medlocker verify dataset` holds exactly the members below.

| member | type | content |
|---|---|---|
{rows}

A licensee reads the originals as `image`, `label`, `meta` with
`medlocker.LicensedDataset` (see the MedLocker README, "The licensee's side").

## Classes

{class_list}

## Verifying

`medlocker verify dataset <this folder> --owner owner.pub` checks the signed
`{layout.MANIFEST_NAME}`: every shard, every index, this card and `{layout.WIDS_INDEX_NAME}`
are pinned by size and SHA-256.
"""
    return ("\n".join(front) + "\n" + body).encode()


def write_catalog(
    dest: str | os.PathLike[str],
    *,
    dataset_id: str,
    owner_key_id: str,
    classes: Sequence[str],
    shards: Sequence[ShardInfo],
    created: datetime,
    storage_options: dict[str, Any] | None = None,
) -> tuple[FileInfo, ...]:
    """Write the wids index and the dataset card into ``dest``; returns what the manifest pins.

    Call it after the last shard and before :func:`~medlocker.shards.write_manifest`
    (pass the result as ``files=``).
    """
    files = {
        layout.WIDS_INDEX_NAME: wids_index(dataset_id, shards),
        layout.CARD_NAME: dataset_card(
            dataset_id=dataset_id, owner_key_id=owner_key_id, classes=classes, shards=shards, created=created
        ),
    }
    out = []
    for name, data in files.items():
        with _fs.atomic_write(_fs.join(dest, name), storage_options) as f:
            f.write(data)
        out.append(FileInfo(name=name, size=len(data), sha256="sha256:" + hashlib.sha256(data).hexdigest()))
    return tuple(out)


def check_catalog(
    dest: str | os.PathLike[str], manifest: Manifest, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Problems with the files the verified ``manifest`` pins (empty list: all match).

    Streams each file through SHA-256 and stops reading past its pinned size.
    """
    problems = []
    for info in manifest.files:
        url = _fs.join(dest, info.name)
        h, size = hashlib.sha256(), 0
        try:
            with _fs.open_read(url, storage_options) as f:
                while size <= info.size and (chunk := f.read(_CHUNK)):
                    h.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            problems.append(f"{url}: missing (the signed manifest lists it)")
            continue
        except OSError as exc:
            problems.append(f"{url}: cannot read: {exc}")
            continue
        if size != info.size or "sha256:" + h.hexdigest() != info.sha256:
            problems.append(f"{url}: does not match the signed manifest (size or SHA-256): it was changed")
    return problems
