"""Shard writer (mirror of the reader) and the public (unlicensed) view of the shards."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from shardkit import (
    CLASSES,
    DATASET_ID,
    make_dataset,
    make_record,
    sample_box,
    watermark,
)

from medlocker.crypto import parse_json_strict
from medlocker.shards import fs as mlfs
from medlocker.shards import write_shard
from medlocker.shards.payload import sha256_digest


def _members(path: str) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return tf.getmembers()


def test_write_shard_round_trip(tmp_path: os.PathLike[str]) -> None:
    ds = make_dataset(str(tmp_path), n=5, per_shard=5, manifest=False)
    (info,) = ds.shards
    path = os.path.join(tmp_path, info.name)
    raw = open(path, "rb").read()
    assert info.size == len(raw) and info.sha256 == sha256_digest(raw) and info.samples == 5
    assert info.index == "shard-000000.index.json"
    index_bytes = open(os.path.join(tmp_path, info.index), "rb").read()
    assert info.index_sha256 == sha256_digest(index_bytes)
    index = parse_json_strict(index_bytes)
    assert index["format"] == "medlocker.index" and index["version"] == 1
    assert index["dataset_id"] == DATASET_ID and index["shard"] == info.name
    assert [e["key"] for e in index["samples"]] == sorted(ds.records)
    with tarfile.open(path) as tf:
        for e in index["samples"]:
            rec = ds.records[e["key"]]
            assert e == {
                "key": rec.key,
                "label": rec.label,
                "wm_sha256": sha256_digest(rec.png),
                "orig_sha256": rec.orig_sha256,
                "payload_sha256": sha256_digest(rec.payload),
                "commitment": rec.commitment,
            }
            assert tf.extractfile(f"{rec.key}.png").read() == rec.png
            assert tf.extractfile(f"{rec.key}.mlseal").read() == rec.payload
            assert tf.extractfile(f"{rec.key}.cls").read() == str(rec.label).encode()
            assert json.loads(tf.extractfile(f"{rec.key}.json").read()) == {
                "dataset_id": DATASET_ID,
                "key": rec.key,
                "label": rec.label,
                "class": CLASSES[rec.label],
                "width": rec.width,
                "height": rec.height,
            }
    # ShardInfo survives the packer's JSON checkpoint
    assert type(info).from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_shards_are_byte_identical_and_sorted(tmp_path: os.PathLike[str]) -> None:
    records = [make_record(i)[0] for i in range(6)]
    a, b, c = (os.path.join(tmp_path, d) for d in "abc")
    ia = write_shard(a, 0, records, dataset_id=DATASET_ID)
    ib = write_shard(b, 0, list(reversed(records)), dataset_id=DATASET_ID)  # input order does not matter
    ic = write_shard(c, 0, records, dataset_id=DATASET_ID, mtime=1_700_000_000)
    assert ia == ib
    for name in (ia.name, ia.index):
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read()
    assert ic.sha256 != ia.sha256 and ic.index_sha256 == ia.index_sha256
    members = _members(os.path.join(a, ia.name))
    names = [m.name for m in members]
    keys = [n.split(".")[0] for n in names]
    assert keys == sorted(keys)  # samples in key order, each one's members together
    assert names == sorted(names, key=lambda n: (n.split(".")[0], n.split(".", 1)[1]))
    assert [n.split(".", 1)[1] for n in names[:4]] == ["cls", "json", "mlseal", "png"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "medlocker", "medlocker", 0o444)
    assert {m.mtime for m in _members(os.path.join(c, ic.name))} == {1_700_000_000}
    assert not [f for f in os.listdir(a) if f.endswith(".tmp")]


def test_write_shard_rejects_bad_input(tmp_path: os.PathLike[str]) -> None:
    rec, _ = make_record(0)
    dest = str(tmp_path)
    bad = [
        [rec, rec],  # duplicate key
        [dataclasses.replace(rec, key="a.b")],
        [dataclasses.replace(rec, label=-1)],
        [dataclasses.replace(rec, width=rec.width + 1)],  # does not match the PNG
        [dataclasses.replace(rec, png=b"not a png" * 10)],
        [dataclasses.replace(rec, orig_sha256="abc")],
        [],
    ]
    for samples in bad:
        with pytest.raises(ValueError):
            write_shard(dest, 0, samples, dataset_id=DATASET_ID)
    gray = io.BytesIO()
    Image.new("L", (rec.width, rec.height)).save(gray, format="PNG")
    with pytest.raises(ValueError, match="RGB"):
        write_shard(dest, 0, [dataclasses.replace(rec, png=gray.getvalue())], dataset_id=DATASET_ID)
    assert os.listdir(dest) == []  # nothing half-written


def test_atomic_write_leaves_nothing_on_failure(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(tmp_path, "x.bin")
    with pytest.raises(RuntimeError):
        with mlfs.atomic_write(target) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with mlfs.atomic_write(target) as f:
        f.write(b"whole")
    assert open(target, "rb").read() == b"whole"


def test_writer_works_on_any_fsspec_store() -> None:
    dest = "memory://medlocker-test-shards/ds"
    ds = make_dataset(dest, n=3, per_shard=3, manifest=False)
    data = mlfs.read_bytes(mlfs.join(dest, ds.shards[0].name), max_size=1 << 20)
    assert sha256_digest(data) == ds.shards[0].sha256


def public_view(urls: list[str]) -> wds.WebDataset:
    """The public read path as README.md and FORMAT.md document it: images decoded, nothing else."""
    return wds.WebDataset(urls, shardshuffle=False).decode("pil", only=["png"])


def test_public_view_webdataset_sees_watermarked_only(tmp_path: os.PathLike[str]) -> None:
    ds = make_dataset(str(tmp_path), n=7, per_shard=3)
    urls = [os.path.join(tmp_path, s.name) for s in ds.shards]
    seen = {}
    for s in public_view(urls):
        key = s["__key__"]
        rec, original = ds.records[key], ds.originals[key]
        img = np.asarray(s["png"])
        assert isinstance(s["png"], Image.Image)
        assert np.array_equal(img, watermark(original, sample_box(int(key[1:]), *original.shape[:2])))
        assert not np.array_equal(img, original)
        assert int(s["cls"]) == rec.label
        meta = json.loads(s["json"])
        assert meta["class"] == CLASSES[rec.label] and set(meta) == {
            "dataset_id", "key", "label", "class", "width", "height"
        }
        assert isinstance(s["mlseal"], bytes)  # opaque
        seen[key] = True
    assert sorted(seen) == sorted(ds.records)


class _Planted:
    """What a hostile mirror pickles into a ``.pyd`` member: unpickling it creates a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_public_read_path_never_unpickles(tmp_path) -> None:
    """Issue 17 case 9: webdataset's default decoders unpickle a .pyd member someone added to a mirror."""
    import pickle

    from shardkit import rewrite_tar

    ds = make_dataset(str(tmp_path / "ds"), n=2, per_shard=2, manifest=False)
    shard = os.path.join(ds.dest, ds.shards[0].name)
    marker = tmp_path / "pwned"
    planted = pickle.dumps(_Planted(str(marker)))
    rewrite_tar(shard, lambda items: sorted(items + [("s0000.pyd", planted), ("s0001.png.pyd", planted)]))
    samples = list(public_view([shard]))
    assert not marker.exists(), "the documented public read path ran a pickle"
    assert samples[0]["pyd"] == planted and isinstance(samples[0]["png"], Image.Image)
    list(wds.WebDataset([shard], shardshuffle=False).decode("pil"))  # the old README line
    assert marker.exists()  # ... did run it: the test's pickle is live


def test_public_view_plain_tarfile(tmp_path: os.PathLike[str]) -> None:
    ds = make_dataset(str(tmp_path), n=4, per_shard=4, manifest=False)
    with tarfile.open(os.path.join(tmp_path, ds.shards[0].name)) as tf:
        exts = {m.name.split(".", 1)[1] for m in tf.getmembers()}
        assert exts == {"png", "cls", "json", "mlseal"}  # no .pyd/.pth/.pickle
        for key, original in ds.originals.items():
            img = np.asarray(Image.open(io.BytesIO(tf.extractfile(f"{key}.png").read())))
            assert img.shape == original.shape and not np.array_equal(img, original)
