"""End to end: tools/pack.py -> shards + manifest -> licence -> LicensedDataset / public view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from medlocker.crypto import Identity, issue_license
from medlocker.dataset import LicensedDataset
from medlocker.owner import OwnerSecrets
from medlocker.pack import pack
from medlocker.shards import read_manifest
from medlocker.watermark import Placement, default_logo

ROOT = Path(__file__).resolve().parents[1]
N, SIZE = 10, 64


@pytest.fixture(scope="module")
def world(pack_world):
    """A tiny synthetic source, a (deterministically initialised) surrogate, and keys."""
    w = pack_world("pack", n=N, seed=3)
    return {"tmp": w.tmp, "src": w.src, "source": w.source, "model": w.model, "owner": w.owner,
            "alice": Identity.generate(name="alice")}


def _cli(*args: str, env: dict | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pack.py"), *args],
        env=full_env, capture_output=True, text=True, timeout=600, **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pack.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_pack_then_licensed_read_is_exact_and_public_view_is_watermarked(world, quick_config):
    tmp, source, owner, alice = world["tmp"], world["source"], world["owner"], world["alice"]
    dest, secrets = tmp / "ds", tmp / "secrets"
    summary = pack(
        source, str(dest), owner=owner, secrets=secrets, surrogates=[world["model"]], logo=default_logo(),
        config=quick_config(budget=24, shard_size=4, batch_size=4),
    )
    assert summary.to_dict()["protected"] == N and summary.shards == 3
    timings = summary.to_dict()["timings"]  # where the main thread's time went
    assert set(timings) == {"wait_read", "search", "wait_encode", "wait_write"}
    assert timings["search"] > 0 and sum(timings.values()) <= summary.seconds
    manifest = read_manifest(str(dest), owner.public)
    assert manifest.dataset_id == summary.dataset_id and manifest.num_samples == N
    assert not any(p.name in ("run.json", "params.jsonl") for p in dest.iterdir())  # no secrets published

    run = OwnerSecrets.load(secrets, owner)
    lic = issue_license(
        owner, dataset_id=manifest.dataset_id, manifest_digest=manifest.digest, licensee=alice.public,
        content_key=run.content_key, expires=datetime.now(timezone.utc) + timedelta(days=1),
    )
    originals = {r.key: np.asarray(Image.open(r.path).convert("RGB")) for r in source.records}
    seen = {}
    for sample in LicensedDataset(str(dest), license=lic, identity=alice, owner=owner.public):
        seen[sample["__key__"]] = np.asarray(sample["image"])
    assert sorted(seen) == sorted(originals)
    assert all(np.array_equal(seen[k], originals[k]) for k in originals)

    params = run.params()
    masks = {r.key: r.masks for r in source.records}
    urls = [str(dest / s.name) for s in manifest.shards]
    public = 0
    for x in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        key, img = x["__key__"], np.asarray(x["png"].convert("RGB"))
        x0, y0, x1, y1 = Placement.from_dict(params[key].placement).box
        outside = np.ones(img.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(img[outside], originals[key][outside])
        assert not np.array_equal(img, originals[key])
        assert x["cls"] == params[key].label
        for m in masks[key]:  # lesion pixels never change
            lesion = np.asarray(Image.open(m)) > 0
            assert np.array_equal(img[lesion], originals[key][lesion])
        public += 1
    assert public == N


def test_secrets_inside_dest_is_refused(world):
    dest = world["tmp"] / "overlap"
    with pytest.raises(ValueError, match="never be published"):
        pack(world["source"], str(dest), owner=world["owner"], secrets=dest / "secrets",
             surrogates=[world["model"]], logo=default_logo())


def _pack_args(world, dest: Path, secrets: Path, *extra: str) -> list[str]:
    t = world["tmp"]
    return ["--input", str(world["src"]), "--out", str(dest), "--owner", str(t / "owner.key"),
            "--secrets", str(secrets), "--model", str(t / "model.pt"), "--optimizer", "blackbox",
            "--budget", "16", "--logo-scale", "0.02", "--lesion-margin", "1", "--shard-size", "3", "--batch-size", "3", "--device", "cpu",
            "--insecure-test-seed", "7", *extra]


REPRO_ENV = {"SOURCE_DATE_EPOCH": "1767225600"}


@pytest.fixture(scope="module")
def reference(world) -> Path:
    """One uninterrupted single-process CLI run with a fixed test seed and clock."""
    full = world["tmp"] / "full"
    _cli(*_pack_args(world, full, world["tmp"] / "full-secrets"), env=REPRO_ENV)
    assert (full / "manifest.dsse.json").exists()
    return full


def test_resume_after_kill_is_byte_identical(world, reference):
    t = world["tmp"]

    part, secrets = t / "part", t / "part-secrets"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "pack.py"), *_pack_args(world, part, secrets)],
        env={**os.environ, "OMP_NUM_THREADS": "1", **REPRO_ENV},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list((secrets / "progress").glob("shard-*.json")) if secrets.exists() else True:
        assert proc.poll() is None, "pack finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (part / "manifest.dsse.json").exists()  # no manifest until the last shard
    with pytest.raises(Exception, match="manifest"):
        read_manifest(str(part), world["owner"].public)

    _cli(*_pack_args(world, part, secrets, "--resume"), env=REPRO_ENV)
    assert _files(part) == _files(reference)


def test_rejects_are_listed_and_fail_the_run_unless_allowed(world, tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rows = ["image,label"]
    for r in world["source"].records[:4]:
        (src / "images" / Path(r.path).name).write_bytes(Path(r.path).read_bytes())
        rows.append(f"{Path(r.path).stem},{r.label}")
    (src / "images" / "corrupt.png").write_bytes(Path(world["source"].records[0].path).read_bytes()[:200])
    (src / "images" / "notes.png").write_text("not an image")
    rows += ["corrupt,1", "notes,2"]
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    t = world["tmp"]
    args = ["--input", str(src), "--owner", str(t / "owner.key"), "--model", str(t / "model.pt"),
            "--optimizer", "blackbox", "--budget", "8", "--logo-scale", "0.02", "--lesion-margin", "1",
            "--device", "cpu"]
    # read in processes: a bad file's error crosses the process boundary and is listed like any other
    proc = _cli(*args, "--out", str(tmp_path / "a"), "--secrets", str(tmp_path / "sa"), "--read-processes", "2",
                check=False)
    assert proc.returncode == 1, proc.stderr
    assert "corrupt.png" in proc.stdout and "notes.png" in proc.stdout
    rejects = [json.loads(l) for l in (tmp_path / "sa" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in rejects) == ["corrupt.png", "notes.png"]
    assert all(r["reason"] for r in rejects)
    manifest = read_manifest(str(tmp_path / "a"), world["owner"].public)
    assert manifest.num_samples == 4  # the good images are all there

    proc = _cli(*args, "--out", str(tmp_path / "b"), "--secrets", str(tmp_path / "sb"), "--allow-rejects")
    assert "rejected            2" in proc.stdout


def test_torchrun_two_ranks_writes_the_same_dataset(world, reference):
    t = world["tmp"]
    multi = t / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **REPRO_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         str(ROOT / "tools" / "pack.py"), *_pack_args(world, multi, t / "multi-secrets")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _files(multi) == _files(reference)


def test_search_batches_across_shards_write_the_same_dataset(world, reference):
    # Shards of 3 searched in batches of 7: each batch spans shards (groups of 3 shards), and
    # every image's search is independent of its batch, so the bytes are those of batch 3.
    t = world["tmp"]
    wide = t / "wide"
    _cli(*_pack_args(world, wide, t / "wide-secrets", "--batch-size", "7"), env=REPRO_ENV)
    assert _files(wide) == _files(reference)


def test_reader_processes_write_the_same_dataset(world, reference):
    t = world["tmp"]
    procs = t / "procs"
    _cli(*_pack_args(world, procs, t / "procs-secrets", "--read-processes", "2"), env=REPRO_ENV)
    assert _files(procs) == _files(reference)
