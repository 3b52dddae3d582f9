"""The reader's stages: sample-level split over ranks x workers, verify-before-yield, the tar walker."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkit import (
    ALICE,
    CLASSES,
    CONTENT_KEY,
    CREATED,
    DATASET_ID,
    LOGO_SHA256,
    NOW,
    OWNER,
    Protected,
    make_dataset,
)

from medlocker.crypto import seal_payload
from medlocker.dataset import LicensedDataset
from medlocker.errors import FormatError, IntegrityError, MedLockerError
from medlocker.shards import (
    SampleRecord,
    reader,
    sha256_digest,
    write_manifest,
    write_shard,
)
from medlocker.shards.manifest import read_manifest
from medlocker.shards.reader import iter_samples, samples_per_worker, split_samples


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Protected:
    return make_dataset(str(tmp_path_factory.mktemp("ds")), n=6, per_shard=3)


def _licensed(ds: Protected) -> LicensedDataset:
    return LicensedDataset(ds.dest, license=ds.license(), identity=ALICE, owner=OWNER.public, now=NOW)


# ------------------------------------------------------------------ split over ranks x workers


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=6), st.integers(1, 9), st.integers(1, 4))
def test_split_gives_every_rank_the_same_count_and_covers_every_sample(counts, world, workers) -> None:
    total = sum(counts)
    per_rank = -(-total // world) if total else 0
    got: Counter = Counter()
    for rank in range(world):
        sizes = []
        for worker in range(workers):
            segments = split_samples(counts, rank=rank, world_size=world, worker=worker, num_workers=workers)
            n = sum(len(sel) for _, sel in segments)
            assert n == samples_per_worker(total, rank=rank, world_size=world, worker=worker, num_workers=workers)
            sizes.append(n)
            for shard, sel in segments:
                assert 0 <= sel.start < sel.stop <= counts[shard]
                got.update((shard, i) for i in sel)
        assert sum(sizes) == per_rank and max(sizes) - min(sizes) <= 1  # same on every rank
    assert set(got) == {(s, i) for s, c in enumerate(counts) for i in range(c)}  # every sample
    assert sum(got.values()) == world * per_rank  # padding only


def test_split_refuses_impossible_ranks() -> None:
    with pytest.raises(ValueError):
        split_samples([3], rank=2, world_size=2)


def test_len_is_per_rank(protected: Protected, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(_licensed(protected)) == 6
    for rank, expected in ((0, 2), (3, 2)):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "4")
        ds = _licensed(protected)
        assert len(ds) == expected == len(list(ds))


# ------------------------------------------------------------------ verify before yield


def _flipped_copy(ds: Protected, tmp_path: Path, offset: int) -> Protected:
    import dataclasses

    dest = tmp_path / f"flip{offset}"
    shutil.copytree(ds.dest, dest)
    path = dest / ds.shards[0].name
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return dataclasses.replace(ds, dest=str(dest))


def test_no_sample_of_a_tampered_shard_is_yielded(protected: Protected, tmp_path: Path) -> None:
    """Issue 17 case 4: padding, end blocks and headers were read (and yielded) before the digest check."""
    data = Path(protected.dest, protected.shards[0].name).read_bytes()
    first_size = int(data[124:136].rstrip(b"\0 "), 8)
    offsets = {
        "first header, mtime": 136,
        "first header, uname": 265,
        "padding after the first member": 512 + first_size + 1,
        "end-of-archive block": len(data) - 1024,
        "tar padding at the very end": len(data) - 1,
    }
    for what, offset in offsets.items():
        got = []
        with pytest.raises(IntegrityError, match="size/SHA-256"):
            for sample in _licensed(_flipped_copy(protected, tmp_path, offset)):
                got.append(sample["__key__"])
        assert got == [], f"{what}: {got} yielded before the error"


def test_large_shards_spill_to_disk(protected: Protected) -> None:
    info = protected.shards[0]
    raw = open(os.path.join(protected.dest, info.name), "rb")
    stream = reader.VerifiedStream(raw, size=info.size, sha256=info.sha256, name=info.name)
    spool = reader._spool(stream, spool_bytes=1024)
    assert spool._rolled  # written to a temporary file, not held in memory
    assert sha256_digest(spool.read()) == info.sha256
    spool.close()
    raw.close()
    manifest = read_manifest(protected.dest, OWNER.public)
    keys = [s["__key__"] for s in iter_samples(protected.dest, manifest)]
    assert keys == sorted(protected.originals)


# ------------------------------------------------------------------ PNG bomb in an owner-signed shard


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width x height`` RGB, with a tiny (truncated) image stream."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 9_000])  # PIL: DecompressionBombError above 2x its limit, a warning above
def test_png_bomb_in_an_owner_signed_shard_is_format_error(tmp_path: Path, side: int) -> None:
    png = _png_header_only(side, side)
    payload = seal_payload(CONTENT_KEY, b"restoration", dataset_id=DATASET_ID, sample_key="bomb",
                           watermarked_digest=sha256_digest(png))
    rec = SampleRecord(key="bomb", label=0, class_name=CLASSES[0], png=png, width=side, height=side,
                       orig_sha256=sha256_digest(b"x"), payload=payload, commitment="c")
    info = write_shard(str(tmp_path), 0, [rec], dataset_id=DATASET_ID)
    digest = write_manifest(str(tmp_path), OWNER, dataset_id=DATASET_ID, shards=[info], classes=CLASSES,
                            logo_sha256=LOGO_SHA256, created=CREATED)
    ds = Protected(str(tmp_path), digest, [info], {})
    with pytest.raises(FormatError, match="larger than"):
        list(_licensed(ds))


# ------------------------------------------------------------------ the tar walker alone


@st.composite
def _mutated_shard(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SHARDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "splice"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
            if not data:
                break
        else:
            data[at : at + 12] = draw(st.binary(min_size=0, max_size=12))
            if not data:
                break
    return bytes(data)


def _small_shards() -> list[bytes]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ds = make_dataset(d, n=3, per_shard=3, height=8, width=8)
        return [Path(d, ds.shards[0].name).read_bytes()]


_SHARDS = _small_shards()


@settings(max_examples=300, deadline=None)
@given(_mutated_shard() | st.binary(max_size=2048))
def test_tar_walker_raises_only_integrity_errors(data: bytes) -> None:
    try:
        for _key, _ext, member in reader._tar_members(io.BytesIO(data), len(data), "x.tar"):
            assert len(member) <= len(data)
    except MedLockerError:
        pass
