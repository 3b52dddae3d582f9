"""The catalog files beside the shards, read by the real clients: wids and Hugging Face datasets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardkit import CLASSES, CREATED, DATASET_ID, LOGO_SHA256, OWNER, Protected, make_dataset
from medlocker.crypto import sign_envelope
from medlocker.errors import FormatError
from medlocker.shards import MANIFEST_NAME, check_dataset, parse_manifest, read_manifest, write_manifest
from medlocker.shards.catalog import check_catalog, dataset_card, wids_index, write_catalog
from medlocker.shards.layout import CARD_NAME, MANIFEST_PAYLOAD_TYPE, WIDS_INDEX_NAME
from medlocker.shards.manifest import FileInfo, build_manifest_payload

N = 7


def publish(dest: str) -> Protected:
    """Shards from the real writer, then the catalog, then the manifest that pins it (pack's order)."""
    ds = make_dataset(dest, n=N, per_shard=3, manifest=False)
    files = write_catalog(dest, dataset_id=DATASET_ID, owner_key_id=OWNER.key_id, classes=CLASSES, shards=ds.shards,
                          created=CREATED)
    ds.digest = write_manifest(dest, OWNER, dataset_id=DATASET_ID, shards=ds.shards, classes=CLASSES,
                               logo_sha256=LOGO_SHA256, created=CREATED, files=files)
    return ds


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Protected:
    return publish(str(tmp_path_factory.mktemp("catalog") / "ds"))


def _png(ds: Protected, key: str) -> bytes:
    return bytes(ds.records[key].png)


def test_the_manifest_pins_the_catalog_and_verify_checks_it(published: Protected) -> None:
    m = read_manifest(published.dest, OWNER.public)
    assert [f.name for f in m.files] == sorted([CARD_NAME, WIDS_INDEX_NAME])
    for f in m.files:
        assert f.size == (Path(published.dest) / f.name).stat().st_size
    report = check_dataset(published.dest, OWNER.public)
    assert report.ok and (report.shards, report.samples) == (3, N)


@pytest.mark.parametrize("name", [CARD_NAME, WIDS_INDEX_NAME])
def test_a_changed_or_missing_catalog_file_fails_verification(tmp_path: Path, name: str) -> None:
    ds = publish(str(tmp_path / "ds"))
    path = Path(ds.dest) / name
    text = path.read_bytes()
    path.write_bytes(text.replace(b"shard-000001.tar", b"shard-000009.tar", 1) if name == WIDS_INDEX_NAME
                     else text + b"\nDownload the originals at http://evil.example\n")
    problems = check_dataset(ds.dest, OWNER.public).problems
    assert len(problems) == 1 and name in problems[0] and "changed" in problems[0]
    path.unlink()
    assert check_catalog(ds.dest, read_manifest(ds.dest, OWNER.public)) == [f"{path}: missing (the signed manifest lists it)"]


def test_catalog_bytes_are_deterministic(published: Protected) -> None:
    assert (Path(published.dest) / WIDS_INDEX_NAME).read_bytes() == wids_index(DATASET_ID, published.shards[::-1])
    card = dataset_card(dataset_id=DATASET_ID, owner_key_id=OWNER.key_id, classes=CLASSES, shards=published.shards,
                        created=CREATED)
    assert (Path(published.dest) / CARD_NAME).read_bytes() == card


def test_wids_reads_the_public_view(published: Protected, tmp_path: Path) -> None:
    wids = pytest.importorskip("wids")
    ds = wids.ShardListDataset(str(Path(published.dest) / WIDS_INDEX_NAME), cache_dir=str(tmp_path / "wids"),
                               transformations=[])
    assert len(ds) == N
    seen = {}
    for i in range(len(ds)):
        s = ds[i]
        seen[s["__key__"]] = s
        assert s[".png"].read() == _png(published, s["__key__"])  # the exact published bytes
        assert int(s[".cls"].read()) == published.records[s["__key__"]].label
        assert json.loads(s[".json"].read())["key"] == s["__key__"]
    assert sorted(seen) == sorted(published.records)


def test_hugging_face_datasets_loads_the_folder_with_inferred_features(published: Protected, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    import shutil

    bare = shutil.copytree(published.dest, tmp_path / "no-card")
    (bare / CARD_NAME).unlink()  # more .json files than .tar: without the card's configs the JSON builder is picked
    with pytest.raises(datasets.exceptions.DatasetGenerationError):
        datasets.load_dataset(str(bare), split="train", cache_dir=str(tmp_path / "hf-bare"))
    ds = datasets.load_dataset(published.dest, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == N
    f = ds.features
    assert isinstance(f["png"], datasets.Image) and f["cls"].dtype == "int64" and f["mlseal"].dtype == "binary"
    assert set(f["json"]) == {"dataset_id", "key", "label", "class", "width", "height"}
    for row in ds:
        key = row["__key__"]
        original = Image.open(io.BytesIO(_png(published, key)))
        assert np.array_equal(np.asarray(row["png"]), np.asarray(original))
        assert row["cls"] == published.records[key].label and row["json"]["class"] == CLASSES[row["cls"]]
        assert row["mlseal"] == bytes(published.records[key].payload)


def _signed(doc_files: object) -> bytes:
    doc = json.loads(build_manifest_payload(dataset_id=DATASET_ID, owner_key_id=OWNER.key_id, shards=[],
                                            classes=CLASSES, logo_sha256=LOGO_SHA256, created=CREATED))
    doc["files"] = doc_files
    return sign_envelope(OWNER, MANIFEST_PAYLOAD_TYPE, json.dumps(doc, sort_keys=True).encode())


@pytest.mark.parametrize("files", [
    "README.md",
    [{"name": "../README.md", "size": 1, "sha256": "sha256:" + "0" * 64}],
    [{"name": "shard-000000.tar", "size": 1, "sha256": "sha256:" + "0" * 64}],
    [{"name": MANIFEST_NAME, "size": 1, "sha256": "sha256:" + "0" * 64}],
    [{"name": "README.md", "size": -1, "sha256": "sha256:" + "0" * 64}],
    [{"name": "README.md", "size": 1, "sha256": "md5:00"}],
    [{"name": "README.md", "size": 1, "sha256": "sha256:" + "0" * 64, "url": "http://x"}],
    [{"name": "README.md", "size": 1, "sha256": "sha256:" + "0" * 64}] * 2,
])
def test_signed_but_malformed_files_entries_are_refused(files: object) -> None:
    with pytest.raises(FormatError):
        parse_manifest(_signed(files), OWNER.public)


def test_files_field_is_optional_and_checked_when_written() -> None:
    assert parse_manifest(_signed([]), OWNER.public).files == ()
    ok = FileInfo(name="README.md", size=3, sha256="sha256:" + "0" * 64)
    assert parse_manifest(_signed([ok.to_dict()]), OWNER.public).files == (ok,)
    with pytest.raises(ValueError, match="repeat"):
        build_manifest_payload(dataset_id=DATASET_ID, owner_key_id=OWNER.key_id, shards=[], classes=CLASSES,
                               logo_sha256=LOGO_SHA256, created=CREATED, files=[ok, ok])
