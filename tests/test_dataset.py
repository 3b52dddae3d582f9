"""LicensedDataset end to end: writer -> licence -> exact originals, and every refusal."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from shardkit import (
    ALICE,
    BOB,
    CLASSES,
    CONTENT_KEY,
    DATASET_ID,
    NOW,
    OWNER,
    Protected,
    make_dataset,
    make_record,
    resign,
    rewrite_tar,
    synthetic_image,
)
from medlocker.crypto import seal_payload
from medlocker.dataset import LicensedDataset
from medlocker.errors import (
    ExpiredError,
    FormatError,
    IntegrityError,
    SignatureError,
    WrongDatasetError,
    WrongLicenseeError,
)
from medlocker.shards import build_restoration, pixel_digest, read_manifest, sha256_digest
from medlocker.shards.index import IndexEntry
from medlocker.shards.reader import restore_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import license as license_tool  # noqa: E402


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Protected:
    """10 samples in 5 shards of 2 (enough shards for 2 ranks x 2 workers)."""
    return make_dataset(str(tmp_path_factory.mktemp("ds")), n=10, per_shard=2)


def licensed(ds: Protected, **kw) -> LicensedDataset:
    return LicensedDataset(ds.dest, license=ds.license(), identity=ALICE, owner=OWNER.public, now=NOW, **kw)


def to_array(sample: dict) -> dict:
    """Module-level (picklable) map function: PIL image -> numpy array."""
    return dict(sample, image=np.asarray(sample["image"]))


def assert_exact_once(ds: Protected, samples: list[dict]) -> None:
    keys = Counter(s["__key__"] for s in samples)
    assert keys == Counter(list(ds.originals)), "every sample exactly once"
    for s in samples:
        assert np.array_equal(np.asarray(s["image"]), ds.originals[s["__key__"]]), s["__key__"]


def test_exact_originals_for_every_sample(protected: Protected) -> None:
    dataset = licensed(protected)
    samples = list(dataset)
    assert_exact_once(protected, samples)
    for s in samples:
        rec = protected.records[s["__key__"]]
        assert isinstance(s["image"], Image.Image) and s["image"].mode == "RGB"
        assert s["label"] == rec.label and s["class"] == CLASSES[rec.label]
        assert s["meta"] == {
            "dataset_id": DATASET_ID, "key": rec.key, "label": rec.label,
            "class": CLASSES[rec.label], "width": rec.width, "height": rec.height,
        }
        assert s["__url__"].endswith(".tar") and s["__url__"].startswith(protected.dest)
    assert dataset.num_samples == 10 and dataset.classes == CLASSES
    assert [s["__key__"] for s in licensed(protected)] == sorted(protected.originals)  # manifest order


def test_paths_for_keys_and_licence(protected: Protected, tmp_path: Path) -> None:
    ALICE.save(tmp_path / "alice", passphrase=b"pw")
    OWNER.save(tmp_path / "owner")
    (tmp_path / "alice.license").write_bytes(protected.license())
    dataset = LicensedDataset(
        Path(protected.dest), license=tmp_path / "alice.license", identity=tmp_path / "alice.key",
        owner=str(tmp_path / "owner.pub"), passphrase=b"pw", now=NOW,
    )
    assert_exact_once(protected, list(dataset))


def test_dataloader_two_workers_fork_and_pickle(protected: Protected) -> None:
    dataset = licensed(protected).map(to_array)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    assert_exact_once(protected, list(loader))
    clone = pickle.loads(pickle.dumps(dataset))
    assert_exact_once(protected, list(clone))


def test_webloader_fork_workers(protected: Protected) -> None:
    loader = wds.WebLoader(licensed(protected).map(to_array), batch_size=None, num_workers=2)
    assert_exact_once(protected, list(loader))


def test_ranks_times_workers_exactly_once(protected: Protected, monkeypatch: pytest.MonkeyPatch) -> None:
    """RANK/WORLD_SIZE (read by webdataset's pytorch_worker_info) x DataLoader workers."""
    samples = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        dataset = licensed(protected).map(to_array)
        mine = list(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2))
        assert 0 < len(mine) < 10
        samples += mine
    assert_exact_once(protected, samples)


def _ddp_rank(rank: int, world_size: int, init_file: str, dataset: LicensedDataset, out: str) -> None:
    import torch.distributed as dist

    os.environ.pop("RANK", None)
    os.environ.pop("WORLD_SIZE", None)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        got = {s["__key__"]: pixel_digest(s["image"]) for s in dataset}
        Path(out, f"rank{rank}.json").write_text(json.dumps(got))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ddp_ranks_gloo_spawned(protected: Protected, tmp_path: Path) -> None:
    """Two gloo ranks in spawned processes; the dataset itself travels by pickle (spawn)."""
    import torch.multiprocessing as mp

    dataset = licensed(protected).map(to_array)
    mp.spawn(_ddp_rank, args=(2, str(tmp_path / "init"), dataset, str(tmp_path)), nprocs=2, join=True)
    parts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    merged = parts[0] | parts[1]
    assert merged == {k: pixel_digest(v) for k, v in protected.originals.items()}


def test_composes_with_fluid_stages(tmp_path: Path) -> None:
    ds = make_dataset(str(tmp_path), n=9, per_shard=2, vary_size=False)
    pipeline = (
        licensed(ds, shardshuffle=True, seed=3)
        .shuffle(6, seed=1)
        .map(to_array)
        .to_tuple("__key__", "image", "label")
        .batched(4)
    )
    batches = list(pipeline)
    assert [len(b[0]) for b in batches] == [4, 4, 1]
    keys = [k for b in batches for k in b[0]]
    assert sorted(keys) == sorted(ds.originals) and keys != sorted(keys)
    for b in batches:
        images = np.asarray(b[1])
        assert images.shape[1:] == (24, 32, 3)
        for key, img, label in zip(b[0], images, b[2]):
            assert np.array_equal(img, ds.originals[key]) and int(label) == ds.records[key].label


def test_shardshuffle_is_per_epoch_and_same_on_every_rank(protected: Protected) -> None:
    a, b = licensed(protected, shardshuffle=True, seed=5), licensed(protected, shardshuffle=True, seed=5)
    first = [s["__url__"] for s in a]
    assert first == [s["__url__"] for s in b]  # same seed, same epoch: same order everywhere
    second = [s["__url__"] for s in a]  # epoch advanced
    b.set_epoch(1)
    assert second == [s["__url__"] for s in b]
    assert sorted(first) == sorted(second) and first != second


# --------------------------------------------------------------------- refusals


def test_licence_failures_propagate(protected: Protected) -> None:
    lic = protected.license()
    common = dict(owner=OWNER.public, now=NOW)
    with pytest.raises(WrongLicenseeError):
        LicensedDataset(protected.dest, license=lic, identity=BOB, **common)
    with pytest.raises(ExpiredError):
        LicensedDataset(protected.dest, license=lic, identity=ALICE, owner=OWNER.public, now=NOW + timedelta(days=31))
    with pytest.raises(ExpiredError):
        LicensedDataset(protected.dest, license=protected.license(not_before=NOW + timedelta(days=1)),
                        identity=ALICE, **common)
    with pytest.raises(WrongDatasetError):  # licence for an earlier packing of the dataset
        LicensedDataset(protected.dest, license=protected.license(manifest_digest=sha256_digest(b"old")),
                        identity=ALICE, **common)
    with pytest.raises(WrongDatasetError):
        LicensedDataset(protected.dest, license=protected.license(dataset_id="other"), identity=ALICE, **common)
    with pytest.raises(SignatureError):  # the manifest is pinned to the owner key
        LicensedDataset(protected.dest, license=lic, identity=ALICE, owner=BOB.public, now=NOW)
    with pytest.raises(FormatError):
        LicensedDataset(protected.dest, license=b"{}", identity=ALICE, **common)


def test_wrong_content_key_in_licence_is_integrity_error(protected: Protected) -> None:
    lic = protected.license(content_key=bytes(32))
    dataset = LicensedDataset(protected.dest, license=lic, identity=ALICE, owner=OWNER.public, now=NOW)
    with pytest.raises(IntegrityError, match="failed authentication"):
        next(iter(dataset))


def _copy(ds: Protected, tmp_path: Path) -> Protected:
    import shutil

    dest = tmp_path / "copy"
    shutil.copytree(ds.dest, dest)
    return dataclasses.replace(ds, dest=str(dest))


def _members(items: list, key: str) -> dict[str, bytes]:
    return {n: d for n, d in items if n.startswith(key + ".")}


def _no_sample_then(dataset: LicensedDataset, error: type, match: str) -> None:
    """Iterating ``dataset`` raises ``error`` before it yields a single sample."""
    got = []
    with pytest.raises(error, match=match):
        for s in dataset:
            got.append(s["__key__"])
    assert got == [], f"yielded {got} before the error"


def _edit_first_shard(ds: Protected, edit) -> Protected:
    """Edit the first shard; check the shard digest refuses it; return it re-signed by the owner."""
    rewrite_tar(os.path.join(ds.dest, ds.shards[0].name), edit)
    _no_sample_then(licensed(ds), IntegrityError, "size/SHA-256 in the signed manifest")
    return resign(ds)


def test_tampered_png_is_integrity_error(protected: Protected, tmp_path: Path) -> None:
    ds = _copy(protected, tmp_path)
    other = make_record(7, key="s0000")[0].png  # a valid PNG of another image
    ds = _edit_first_shard(ds, lambda items: [(n, other if n == "s0000.png" else d) for n, d in items])
    with pytest.raises(IntegrityError, match="watermarked image does not match"):
        list(licensed(ds))


def test_swapped_payloads_are_integrity_error(protected: Protected, tmp_path: Path) -> None:
    ds = _copy(protected, tmp_path)
    a, b = protected.records["s0000"].payload, protected.records["s0001"].payload
    swap = {"s0000.mlseal": b, "s0001.mlseal": a}
    ds = _edit_first_shard(ds, lambda items: [(n, swap.get(n, d)) for n, d in items])
    with pytest.raises(IntegrityError, match="sealed payload does not match"):
        list(licensed(ds))
    # Even with an index that pinned the swapped bytes, the AEAD binding refuses it.
    rec = protected.records["s0000"]
    entry = IndexEntry(rec.key, rec.label, sha256_digest(rec.png), rec.orig_sha256, sha256_digest(b), rec.commitment)
    raw = {"__key__": rec.key, "__url__": "x.tar", "png": rec.png, "mlseal": b, "cls": b"0",
           "json": _json_member(rec)}
    with pytest.raises(IntegrityError, match="failed authentication"):
        restore_sample(raw, entry, content_key=CONTENT_KEY, dataset_id=DATASET_ID, classes=CLASSES)


def _json_member(rec) -> bytes:
    from medlocker.crypto import canonical_json
    from medlocker.shards import public_metadata

    return canonical_json(public_metadata(DATASET_ID, rec.key, rec.label, CLASSES[rec.label], rec.width, rec.height))


def test_licensee_cannot_forge_a_sample(protected: Protected, tmp_path: Path) -> None:
    """Mallory holds the content key and re-seals a different 'original' for s0000."""
    rec = protected.records["s0000"]
    fake_original = synthetic_image(99, rec.height, rec.width)
    forged = seal_payload(
        CONTENT_KEY, build_restoration(fake_original, (0, 0, rec.width // 4, rec.height // 4)),
        dataset_id=DATASET_ID, sample_key=rec.key, watermarked_digest=sha256_digest(rec.png),
    )
    ds = _copy(protected, tmp_path)
    ds = _edit_first_shard(ds, lambda items: [(n, forged if n == "s0000.mlseal" else d) for n, d in items])
    with pytest.raises(IntegrityError):
        list(licensed(ds))
    # Last line of defence: the payload opens (valid seal) but the pixels are not the
    # ones the owner signed.
    entry = IndexEntry(rec.key, rec.label, sha256_digest(rec.png), rec.orig_sha256, sha256_digest(forged),
                       rec.commitment)
    raw = {"__key__": rec.key, "__url__": "x.tar", "png": rec.png, "mlseal": forged, "cls": b"0",
           "json": _json_member(rec)}
    with pytest.raises(IntegrityError, match="original digest the owner signed"):
        restore_sample(raw, entry, content_key=CONTENT_KEY, dataset_id=DATASET_ID, classes=CLASSES)
    ok = dict(raw, mlseal=rec.payload)
    genuine = dataclasses.replace(entry, payload_sha256=sha256_digest(rec.payload))
    out = restore_sample(ok, genuine, content_key=CONTENT_KEY, dataset_id=DATASET_ID, classes=CLASSES)
    assert np.array_equal(np.asarray(out["image"]), protected.originals["s0000"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda items: [(n, d) for n, d in items if not n.startswith("s0001.")], "lacks 1 sample"),
        (lambda items: items + [(n.replace("s0001", "s9999"), d) for n, d in items if n.startswith("s0001.")],
         "not in the signed index"),
        (lambda items: [(n, d) for n, d in items if n != "s0001.json"], "lacks member"),
        (lambda items: items[4:] + items[:4], "out of order"),
        (lambda items: items[:4] + [("s0000.pyd", b"x")] + items[4:], "unexpected tar member"),
        (lambda items: [(n, b"2" if n == "s0000.cls" else d) for n, d in items], "label member"),
        (lambda items: [(n, d.replace(b"grade", b"GRADE") if n.endswith(".json") else d) for n, d in items],
         "metadata member"),
    ],
)
def test_shard_contents_must_match_the_index(protected: Protected, tmp_path: Path, edit, message: str) -> None:
    ds = _copy(protected, tmp_path)
    ds = _edit_first_shard(ds, edit)
    with pytest.raises(IntegrityError, match=message):
        list(licensed(ds))


# --------------------------------------------------------------------- tools/license.py


def test_license_tool(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from medlocker.owner import new_run

    run = new_run(tmp_path / "secrets", OWNER, created=NOW, settings={}, test_seed=1)
    ds = make_dataset(str(tmp_path / "ds"), n=3, per_shard=2, dataset_id=run.dataset_id,
                      content_key=run.content_key)
    OWNER.save(tmp_path / "owner")
    ALICE.save(tmp_path / "alice")
    argv = ["--owner", str(tmp_path / "owner.key"), "--secrets", str(tmp_path / "secrets"), "--dataset", ds.dest,
            "--to", str(tmp_path / "alice.pub"), "--expires", "2099-01-01", "--out", str(tmp_path / "a.license")]
    assert license_tool.main(argv) == 0
    dataset = LicensedDataset(ds.dest, license=tmp_path / "a.license", identity=ALICE, owner=OWNER.public)
    assert_exact_once(ds, list(dataset))
    assert dataset.expires == datetime(2099, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(FileExistsError):
        license_tool.main(argv)
    other = make_dataset(str(tmp_path / "other"), n=1, per_shard=1)  # another dataset id
    with pytest.raises(WrongDatasetError):
        license_tool.main([*argv[:5], other.dest, *argv[6:], "--force"])
    os.remove(os.path.join(ds.dest, "manifest.dsse.json"))
    with pytest.raises(FormatError, match="incomplete"):
        license_tool.main([*argv, "--force"])
    with pytest.raises(SystemExit) as exit_info:  # the CLI wrapper: one line, exit 2
        license_tool.run_cli(license_tool.main, [*argv, "--force"])
    assert exit_info.value.code == 2
    assert read_manifest(other.dest, OWNER.public).dataset_id == DATASET_ID


def test_tar_reader_refuses_what_the_writer_never_makes(protected: Protected, tmp_path: Path) -> None:
    import io
    import tarfile

    shard = os.path.join(protected.dest, protected.shards[0].name)
    original = open(shard, "rb").read()

    def shard_with(extra: tarfile.TarInfo, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            tf.addfile(extra, io.BytesIO(b"x" * extra.size) if extra.isreg() else None)
        return buf.getvalue()

    link = tarfile.TarInfo("s0000.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    pax = tarfile.TarInfo("s0000.png")
    pax.size, pax.pax_headers = 1, {"comment": "x"}
    bad_checksum = bytearray(original)
    bad_checksum[0] ^= 1  # first member name changes, header checksum no longer matches
    cases = {
        "link": (shard_with(link), "unexpected tar entry"),
        "pax": (shard_with(pax, tarfile.PAX_FORMAT), "unexpected tar entry"),
        "checksum": (bytes(bad_checksum), "checksum"),
        "truncated": (original[:700], "truncated"),
    }
    for name, (data, message) in cases.items():
        ds = _copy(protected, tmp_path / name)
        Path(ds.dest, protected.shards[0].name).write_bytes(data)
        _no_sample_then(licensed(ds), IntegrityError, "size/SHA-256 in the signed manifest")
        _no_sample_then(licensed(resign(ds)), IntegrityError, message)
