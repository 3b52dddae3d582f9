"""Protected datasets on S3: a real S3 HTTP server on loopback (moto server mode) + s3fs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from shardkit import ALICE, NOW, OWNER, Protected, make_dataset, sample_box, watermark
from medlocker.dataset import LicensedDataset
from medlocker.errors import FormatError, IntegrityError
from medlocker.shards import check_dataset, read_manifest
from medlocker.shards import fs as mlfs

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "medlocker-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """Start moto's S3 server on 127.0.0.1 (free port); yield s3fs storage options."""
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(var, value)
        for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            mp.delenv(var, raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
        }
        boto3 = pytest.importorskip("boto3")
        boto3.client("s3", **options["client_kwargs"]).create_bucket(Bucket=BUCKET)
        try:
            yield options
        finally:
            server.stop()


@pytest.fixture(scope="module")
def remote(s3: dict[str, Any]) -> Protected:
    return make_dataset(f"s3://{BUCKET}/datasets/ds1", n=8, per_shard=2, storage_options=s3)


def _licensed(ds: Protected) -> LicensedDataset:
    return LicensedDataset(
        ds.dest, license=ds.license(), identity=ALICE, owner=OWNER.public, now=NOW, storage_options=ds.storage_options
    )


def _as_array(sample: dict) -> dict:
    return dict(sample, image=np.asarray(sample["image"]))


def _check_exact(ds: Protected, samples: list[dict]) -> None:
    assert sorted(s["__key__"] for s in samples) == sorted(ds.originals)
    for s in samples:
        assert np.array_equal(np.asarray(s["image"]), ds.originals[s["__key__"]])


def test_written_objects(remote: Protected, s3: dict[str, Any]) -> None:
    fs, _ = mlfs.url_to_fs(remote.dest, s3)
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{BUCKET}/datasets/ds1", refresh=True))
    assert names == sorted(
        ["manifest.dsse.json"] + [s.name for s in remote.shards] + [s.index for s in remote.shards]
    )
    m = read_manifest(remote.dest, OWNER.public, storage_options=s3)
    assert m.digest == remote.digest and m.shards == tuple(remote.shards)
    report = check_dataset(remote.dest, OWNER.public, storage_options=s3)
    assert report.ok and (report.shards, report.samples) == (4, 8)


def test_licensee_reads_exact_originals(remote: Protected) -> None:
    _check_exact(remote, list(_licensed(remote)))


def test_licensee_reads_with_two_workers(remote: Protected) -> None:
    loader = torch.utils.data.DataLoader(_licensed(remote).map(_as_array), batch_size=None, num_workers=2)
    _check_exact(remote, list(loader))


def test_public_reader_sees_watermarked_only(remote: Protected, s3: dict[str, Any]) -> None:
    """Anyone with bucket access: plain webdataset stages over fsspec streams, no MedLocker checks."""
    urls = [mlfs.join(remote.dest, s.name) for s in remote.shards]
    public = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        mlfs.open_streams(storage_options=s3),
        wds.pipelinefilter(tar_file_expander)(),
        wds.pipelinefilter(group_by_keys)(),
        wds.decode("pil", only=["png", "cls", "json"]),  # never the pickle decoders
    )
    seen = []
    for s in public:
        key = s["__key__"]
        original = remote.originals[key]
        expected = watermark(original, sample_box(int(key[1:]), *original.shape[:2]))
        assert np.array_equal(np.asarray(s["png"]), expected)
        assert s["cls"] == remote.records[key].label and s["json"]["key"] == key
        assert isinstance(s["mlseal"], bytes)
        seen.append(key)
    assert sorted(seen) == sorted(remote.originals)


def test_incomplete_and_tampered_remote_dataset(s3: dict[str, Any]) -> None:
    dest = f"s3://{BUCKET}/datasets/ds2"
    ds = make_dataset(dest, n=4, per_shard=2, storage_options=s3, manifest=False)
    with pytest.raises(FormatError, match="incomplete"):
        read_manifest(dest, OWNER.public, storage_options=s3)
    ds = make_dataset(dest, n=4, per_shard=2, storage_options=s3)
    url = mlfs.join(dest, ds.shards[1].name)
    data = mlfs.read_bytes(url, s3, max_size=1 << 20)
    with mlfs.atomic_write(url, s3) as f:
        f.write(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="signed manifest"):
        list(_licensed(ds))
    assert not check_dataset(dest, OWNER.public, storage_options=s3).ok


def test_failed_upload_leaves_no_object(s3: dict[str, Any]) -> None:
    url = f"s3://{BUCKET}/datasets/partial.bin"
    with pytest.raises(RuntimeError):
        with mlfs.atomic_write(url, s3) as f:
            f.write(b"x" * 1000)
            raise RuntimeError("packer crashed")
    assert not mlfs.exists(url, s3)
    with mlfs.atomic_write(url, s3) as f:
        f.write(b"whole")
    assert mlfs.read_bytes(url, s3, max_size=10) == b"whole"


def test_pack_to_s3_then_read_as_licensee_with_workers_and_as_public(s3: dict[str, Any], tmp_path) -> None:
    """The packer itself publishes to s3:// (secrets stay local); both views read it back."""
    import io
    from datetime import timedelta

    import numpy as np
    import tarfile
    import torch
    from PIL import Image

    from medlocker.crypto import issue_license
    from medlocker.data import open_source, write_synthetic_dataset
    from medlocker.models import build_classifier
    from medlocker.owner import OwnerSecrets
    from medlocker.pack import PackConfig, pack
    from medlocker.shards import fs as mlfs
    from medlocker.shards import read_manifest
    from medlocker.watermark import SearchConfig, default_logo

    source = open_source(write_synthetic_dataset(tmp_path / "src", n=6, size=64, seed=5, progress=False))
    model = build_classifier("smallcnn", source.classes, input_size=64, seed=0).eval()
    dest = f"s3://{BUCKET}/datasets/packed"
    pack(source, dest, owner=OWNER, secrets=tmp_path / "secrets", surrogates=[model], logo=default_logo(),
         storage_options=s3, config=PackConfig(
             search=SearchConfig(optimizer="blackbox", budget=8, logo_scale=0.02, lesion_margin=1), shard_size=2))
    manifest = read_manifest(dest, OWNER.public, storage_options=s3)
    assert [f.name for f in manifest.files] == ["README.md", "shardindex.json"]  # the catalog, pinned and checked
    assert check_dataset(dest, OWNER.public, storage_options=s3).ok
    run = OwnerSecrets.load(tmp_path / "secrets", OWNER)
    lic = issue_license(OWNER, dataset_id=manifest.dataset_id, manifest_digest=manifest.digest,
                        licensee=ALICE.public, content_key=run.content_key, now=NOW,
                        not_before=NOW - timedelta(days=1), expires=NOW + timedelta(days=1))
    originals = {r.key: np.asarray(Image.open(r.path).convert("RGB")) for r in source.records}

    ds = LicensedDataset(dest, license=lic, identity=ALICE, owner=OWNER.public, now=NOW, storage_options=s3)
    loader = torch.utils.data.DataLoader(ds.map(_as_array), batch_size=None, num_workers=2)
    seen = {s["__key__"]: s["image"] for s in loader}
    assert sorted(seen) == sorted(originals)
    assert all(np.array_equal(seen[k], originals[k]) for k in originals)

    public = {}
    for shard in manifest.shards:
        with mlfs.open_read(mlfs.join(dest, shard.name), s3) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                if m.name.endswith(".png"):
                    public[m.name[:-4]] = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
    assert sorted(public) == sorted(originals)
    assert all(not np.array_equal(public[k], originals[k]) for k in originals)


def test_pack_refuses_a_used_s3_destination_and_replace_publishes_the_new_dataset_whole(
    s3: dict[str, Any], tmp_path
) -> None:
    """Publishing is exclusive on S3 too; --replace leaves exactly the new manifest's files."""
    from medlocker.data import open_source, write_synthetic_dataset
    from medlocker.models import build_classifier
    from medlocker.pack import DestinationInUseError, PackConfig, pack
    from medlocker.watermark import SearchConfig, default_logo

    source = open_source(write_synthetic_dataset(tmp_path / "src", n=4, size=64, seed=6, progress=False))
    model = build_classifier("smallcnn", source.classes, input_size=64, seed=0).eval()
    config = PackConfig(search=SearchConfig(optimizer="blackbox", budget=4, logo_scale=0.02, lesion_margin=1),
                        shard_size=2)
    dest = f"s3://{BUCKET}/datasets/replaced"

    def run(secrets: str, **kw: Any):
        return pack(source, dest, owner=OWNER, secrets=tmp_path / secrets, surrogates=[model], logo=default_logo(),
                    storage_options=s3, config=config, **kw)

    def listing() -> list[str]:
        fs, path = mlfs.url_to_fs(dest, s3)
        fs.invalidate_cache()
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path))

    old = run("a")
    before = listing()
    with pytest.raises(DestinationInUseError):
        run("b")
    assert listing() == before and not (tmp_path / "b").exists()
    new = run("c", replace=True)
    manifest = read_manifest(dest, OWNER.public, storage_options=s3)
    assert manifest.dataset_id == new.dataset_id != old.dataset_id
    assert listing() == sorted(["manifest.dsse.json", *(s.name for s in manifest.shards),
                                *(s.index for s in manifest.shards), *(f.name for f in manifest.files)])


# ------------------------------------------------ fsspec instances per process, remote errors in the CLI

_PARENT_FS: Any = None


def _child_reads(url: str, options: dict[str, Any]) -> tuple[bool, int]:
    """In a forked child: is the instance a new one, and does it still read the store?"""
    fs, _ = mlfs.url_to_fs(url, options)
    return fs is not _PARENT_FS, len(mlfs.read_bytes(url, options, max_size=1 << 20))


def test_filesystem_instances_are_per_process(remote: Protected, s3: dict[str, Any]) -> None:
    """fsspec's own cache: one instance per process, a fresh one (and event loop) after fork."""
    import multiprocessing

    global _PARENT_FS
    url = mlfs.join(remote.dest, "manifest.dsse.json")
    _PARENT_FS = mlfs.url_to_fs(url, s3)[0]
    assert mlfs.url_to_fs(remote.dest, s3)[0] is _PARENT_FS
    size = len(mlfs.read_bytes(url, s3, max_size=1 << 20))  # the parent's loop is running
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_child_reads, (url, s3)) == (True, size)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from medlocker.cli.main import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_remote_errors_are_one_line(remote: Protected, s3: dict[str, Any], tmp_path, capsys, monkeypatch) -> None:
    """Unreachable endpoint, no credentials, no bucket: one line naming the URL and the option to set."""
    import socket

    OWNER.save(tmp_path / "owner")
    endpoint = s3["client_kwargs"]["endpoint_url"]
    keys = ["--storage-option", "key=testing", "--storage-option", "secret=testing"]
    base = ["verify", "dataset", remote.dest, "--owner", str(tmp_path / "owner.pub"), "--quiet", *keys]
    code, out, _ = _cli(capsys, *base, "--storage-option", f"endpoint_url={endpoint}")
    assert code == 0 and out.startswith("OK: 4 shards, 8 samples")

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, _, err = _cli(capsys, *base, "--storage-option", f"endpoint_url={closed}")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {remote.dest}: cannot connect") and "--storage-option endpoint_url=" in err

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credential lookups off loopback
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    code, _, err = _cli(capsys, *base[:-len(keys)], "--storage-option", f"endpoint_url={endpoint}")
    assert code == 2 and err.count("\n") == 1 and "credentials" in err and "key=ACCESS_KEY" in err

    missing = f"s3://{BUCKET}-missing/ds"
    code, _, err = _cli(capsys, "license", "--owner", str(tmp_path / "owner.key"), "--secrets", str(tmp_path),
                        "--dataset", missing, "--to", str(tmp_path / "owner.pub"), "--expires", "2099-01-01",
                        "--out", str(tmp_path / "x.license"), *keys, "--storage-option", f"endpoint_url={endpoint}")
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {missing}:") and "bucket" in err
