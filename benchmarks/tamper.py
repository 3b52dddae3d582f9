#!/usr/bin/env python3
"""Red team: flip single bytes of a protected dataset and read it as the licensee.

Builds a small protected dataset (SYNTHETIC images: gradient + seeded noise, a square
"watermark", sealed restoration payloads, shards written by ``write_shard``, manifest
signed, licence issued), then for every file a licensee reads -- each shard (whose
``.mlseal`` members are the sealed payloads), each index, the manifest and the
licence -- flips one byte at **every offset** (``byte ^= mask`` for each ``--masks``
value), reads the whole dataset through ``LicensedDataset`` and restores the file.

Counted per file kind and, for shards, per region of the tar (member header, member
data by extension, padding after a member, end-of-archive blocks and record padding):

  accepted       the read finished without an error although a byte was changed (target 0)
  yielded        samples of the tampered shard handed out before the error (target 0),
                 and the number of cases in which any were
  foreign        exceptions that are not ``MedLockerError`` (target 0)

  python benchmarks/tamper.py --out benchmarks/results/cpu-2026-12-02/tamper.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from medlocker import LicensedDataset, MedLockerError
from medlocker.crypto import Identity, commit, issue_license, seal_payload
from medlocker.shards import (
    SampleRecord,
    build_restoration,
    pixel_digest,
    sha256_digest,
    write_manifest,
    write_shard,
)

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
CLASSES = ["grade0", "grade1", "grade2"]
DATASET_ID = "tamper-synthetic"


def _identity(tag: str) -> Identity:
    return Identity.from_private_bytes(
        hashlib.sha256(b"tamper-ed/" + tag.encode()).digest(), hashlib.sha256(b"tamper-x/" + tag.encode()).digest()
    )


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def build(dest: Path, *, n: int, per_shard: int, size: int) -> dict[str, str]:
    """Write the dataset; return ``{file name: kind}`` of everything a licensee reads."""
    owner, content_key = _identity("owner"), hashlib.sha256(b"tamper content key").digest()
    rng = np.random.default_rng(0)
    records, infos = [], []
    for i in range(n):
        img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        box = (i % 4, i % 3, i % 4 + size // 3, i % 3 + size // 3)
        marked = img.copy()
        marked[box[1]:box[3], box[0]:box[2]] = (250, 20, 120)
        key, png = f"s{i:04d}", _png(marked)
        payload = seal_payload(content_key, build_restoration(img, box), dataset_id=DATASET_ID, sample_key=key,
                               watermarked_digest=sha256_digest(png), nonce=hashlib.sha256(key.encode()).digest()[:12])
        records.append(SampleRecord(key=key, label=i % 3, class_name=CLASSES[i % 3], png=png, width=size,
                                    height=size, orig_sha256=pixel_digest(img), payload=payload,
                                    commitment=commit(f"params/{key}".encode(), bytes(32))))
        if len(records) == per_shard or i == n - 1:
            infos.append(write_shard(str(dest), len(infos), records, dataset_id=DATASET_ID))
            records = []
    digest = write_manifest(str(dest), owner, dataset_id=DATASET_ID, shards=infos, classes=CLASSES,
                            logo_sha256=sha256_digest(b"logo"), created=NOW - timedelta(days=2))
    (dest / "reader.license").write_bytes(issue_license(
        owner, dataset_id=DATASET_ID, manifest_digest=digest, licensee=_identity("reader").public,
        content_key=content_key, expires=NOW + timedelta(days=1), now=NOW - timedelta(days=1),
    ))
    files = {s.name: "shard" for s in infos} | {s.index: "index" for s in infos}
    return files | {"manifest.dsse.json": "manifest", "reader.license": "licence"}


def tar_regions(data: bytes) -> list[str]:
    """The region of every byte offset of a shard: header, data.<ext>, padding, end."""
    regions = ["end"] * len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            start = m.offset_data
            regions[m.offset:start] = ["header"] * (start - m.offset)
            ext = m.name.split(".", 1)[1]
            regions[start:start + m.size] = [f"data.{ext}"] * m.size
            pad = -m.size % 512
            regions[start + m.size:start + m.size + pad] = ["padding"] * pad
    return regions


def read_all(dest: Path, tampered: str) -> tuple[str, int]:
    """Read the dataset as the licensee: ``(outcome, samples of the tampered shard yielded)``."""
    yielded = 0
    try:
        ds = LicensedDataset(str(dest), license=dest / "reader.license", identity=_identity("reader"),
                             owner=_identity("owner").public, now=NOW)
        for sample in ds:
            if sample["__url__"].endswith("/" + tampered):
                yielded += 1
    except MedLockerError:
        return "refused", yielded
    except Exception as exc:  # noqa: BLE001 -- counting exactly these is the point
        return f"foreign:{type(exc).__name__}", yielded
    return "accepted", yielded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3, help="samples (default %(default)s)")
    p.add_argument("--per-shard", type=int, default=2, help="samples per shard (default %(default)s)")
    p.add_argument("--size", type=int, default=8, help="image side in px (default %(default)s)")
    p.add_argument("--masks", default="0x01", help="comma-separated XOR masks per offset (default %(default)s)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    masks = [int(m, 0) for m in args.masks.split(",")]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        files = build(dest, n=args.n, per_shard=args.per_shard, size=args.size)
        assert read_all(dest, "") == ("accepted", 0), "the untouched dataset must read"
        table: dict[str, Counter] = defaultdict(Counter)
        for name, kind in sorted(files.items()):
            path = dest / name
            original = path.read_bytes()
            regions = tar_regions(original) if kind == "shard" else [kind] * len(original)
            for offset in range(len(original)):
                for mask in masks:
                    bad = bytearray(original)
                    bad[offset] ^= mask
                    path.write_bytes(bytes(bad))
                    outcome, yielded = read_all(dest, name)
                    row = table[f"{kind}/{regions[offset]}" if kind == "shard" else kind]
                    row["cases"] += 1
                    row[outcome.split(":")[0]] += 1
                    row["samples_yielded"] += yielded
                    row["cases_yielding_samples"] += yielded > 0
                    if outcome.startswith("foreign"):
                        row[outcome] += 1
            path.write_bytes(original)
        sizes = {name: (dest / name).stat().st_size for name in files}
    total = sum((c for c in table.values()), Counter())
    result = {
        "data": "SYNTHETIC (seeded noise images, square watermark)",
        "dataset": {"samples": args.n, "per_shard": args.per_shard, "image_px": args.size, "file_bytes": sizes},
        "method": f"every byte offset of every file the licensee reads, byte ^= mask for masks {masks}; "
                  "read through LicensedDataset (construction + full iteration) after each flip",
        "cases": total["cases"],
        "tampered_inputs_accepted": total["accepted"],
        "samples_yielded_from_tampered_shard": total["samples_yielded"],
        "cases_yielding_samples": total["cases_yielding_samples"],
        "non_medlocker_exceptions": total["foreign"],
        "by_region": {k: dict(v) for k, v in sorted(table.items())},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0 if total["accepted"] == total["samples_yielded"] == total["foreign"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
