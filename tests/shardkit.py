"""Tiny protected datasets for the shard/manifest/dataset tests (a helper module, not fixtures).

Real components end to end: synthetic gradient+noise images, a "watermark" that is
an opaque square pasted at a known box, restoration payloads sealed with
:mod:`medlocker.crypto`, shards written by :func:`medlocker.shards.write_shard`, a
manifest signed by a fixed owner key. Everything is deterministic.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from PIL import Image

from medlocker.crypto import Identity, commit, issue_license, seal_payload
from medlocker.shards import (
    SampleRecord,
    ShardInfo,
    build_restoration,
    pixel_digest,
    sha256_digest,
    write_manifest,
    write_shard,
)

CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
CLASSES = ("grade0", "grade1", "grade2")
LOGO_SHA256 = sha256_digest(b"test logo")
DATASET_ID = "test-dataset"


def fixed_identity(tag: str) -> Identity:
    """Deterministic identity from a tag (golden vectors, fast tests)."""
    seed = hashlib.sha256(b"ed/" + tag.encode()).digest()
    xsk = hashlib.sha256(b"x/" + tag.encode()).digest()
    return Identity.from_private_bytes(seed, xsk, name=tag)


OWNER = fixed_identity("owner")
ALICE = fixed_identity("alice")
BOB = fixed_identity("bob")
CONTENT_KEY = hashlib.sha256(b"content key").digest()


def synthetic_image(i: int, height: int, width: int) -> np.ndarray:
    """Gradient plus seeded noise, uint8 RGB."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=-1)
    noise = rng.integers(0, 32, size=(height, width, 3))
    return ((base + noise) % 256).astype(np.uint8)


def watermark(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The test 'watermark': an opaque square pasted over ``box``."""
    x0, y0, x1, y1 = box
    out = img.copy()
    out[y0:y1, x0:x1] = (250, 20, 120)
    return out


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def sample_box(i: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Boxes that move around, including ones touching the image borders."""
    bw, bh = max(1, width // 4), max(1, height // 4)
    corners = [(0, 0), (width - bw, height - bh), (width - bw, 0), (0, height - bh), (width // 3, height // 3)]
    x0, y0 = corners[i % len(corners)]
    return x0, y0, x0 + bw, y0 + bh


def make_record(
    i: int,
    *,
    key: str | None = None,
    height: int = 24,
    width: int = 32,
    original: np.ndarray | None = None,
    dataset_id: str = DATASET_ID,
    content_key: bytes = CONTENT_KEY,
    classes: tuple[str, ...] = CLASSES,
) -> tuple[SampleRecord, np.ndarray]:
    """One protected sample and its original image."""
    key = key or f"s{i:04d}"
    img = synthetic_image(i, height, width) if original is None else original
    h, w = img.shape[:2]
    box = sample_box(i, h, w)
    png = png_bytes(watermark(img, box))
    label = i % len(classes)
    payload = seal_payload(
        content_key,
        build_restoration(img, box),
        dataset_id=dataset_id,
        sample_key=key,
        watermarked_digest=sha256_digest(png),
        nonce=hashlib.sha256(b"nonce/" + key.encode()).digest()[:12],
    )
    salt = hashlib.sha256(b"salt/" + key.encode()).digest()
    rec = SampleRecord(
        key=key,
        label=label,
        class_name=classes[label],
        png=png,
        width=w,
        height=h,
        orig_sha256=pixel_digest(img),
        payload=payload,
        commitment=commit(f"params/{key}/{box}".encode(), salt),
    )
    return rec, img


@dataclass
class Protected:
    """A written test dataset and what a test needs to check it."""

    dest: str
    digest: str
    shards: list[ShardInfo]
    originals: dict[str, np.ndarray]
    records: dict[str, SampleRecord] = field(default_factory=dict)
    storage_options: dict[str, Any] | None = None
    dataset_id: str = DATASET_ID
    content_key: bytes = CONTENT_KEY

    def license(self, licensee: Identity = ALICE, *, expires: datetime | None = None, **kw: Any) -> bytes:
        return issue_license(
            OWNER,
            dataset_id=kw.pop("dataset_id", self.dataset_id),
            manifest_digest=kw.pop("manifest_digest", self.digest),
            licensee=licensee.public,
            content_key=kw.pop("content_key", self.content_key),
            expires=expires or NOW + timedelta(days=30),
            now=kw.pop("now", NOW - timedelta(days=1)),
            **kw,
        )


def make_dataset(
    dest: str,
    *,
    n: int = 10,
    per_shard: int = 4,
    height: int = 24,
    width: int = 32,
    storage_options: dict[str, Any] | None = None,
    manifest: bool = True,
    dataset_id: str = DATASET_ID,
    content_key: bytes = CONTENT_KEY,
    vary_size: bool = True,
    insecure_test_seed: bool = False,
) -> Protected:
    """Write ``n`` samples in shards of ``per_shard`` (+ manifest) under ``dest``.

    With ``vary_size`` image sizes differ a little between samples (odd sizes).
    """
    records, originals = [], {}
    for i in range(n):
        dh, dw = (i % 3, i % 2) if vary_size else (0, 0)
        rec, img = make_record(
            i, height=height + dh, width=width - dw, dataset_id=dataset_id, content_key=content_key
        )
        records.append(rec)
        originals[rec.key] = img
    shards = [
        write_shard(dest, j, records[k : k + per_shard], dataset_id=dataset_id, storage_options=storage_options)
        for j, k in enumerate(range(0, n, per_shard))
    ]
    digest = ""
    if manifest:
        digest = write_manifest(
            dest,
            OWNER,
            dataset_id=dataset_id,
            shards=shards,
            classes=CLASSES,
            logo_sha256=LOGO_SHA256,
            created=CREATED,
            storage_options=storage_options,
            insecure_test_seed=insecure_test_seed,
        )
    return Protected(
        dest, digest, shards, originals, {r.key: r for r in records}, storage_options, dataset_id, content_key
    )


def resign(ds: Protected) -> Protected:
    """Re-sign the manifest over the shards as they are now on disk.

    Models an owner (or a compromised owner key) signing malformed shards, so that
    tests reach the checks behind the shard digest.
    """
    import dataclasses
    import os

    shards = []
    for info in ds.shards:
        data = open(os.path.join(ds.dest, info.name), "rb").read()
        shards.append(dataclasses.replace(info, size=len(data), sha256=sha256_digest(data)))
    digest = write_manifest(
        ds.dest, OWNER, dataset_id=ds.dataset_id, shards=shards, classes=CLASSES, logo_sha256=LOGO_SHA256,
        created=CREATED, storage_options=ds.storage_options,
    )
    return dataclasses.replace(ds, digest=digest, shards=shards)


def rewrite_tar(path: str, edit: Any) -> None:
    """Rewrite a tar file in place: ``edit([(name, data), ...]) -> [(name, data), ...]``."""
    import tarfile

    with tarfile.open(path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in edit(members):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
