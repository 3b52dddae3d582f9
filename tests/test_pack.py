"""End to end: tools/pack.py -> shards + manifest -> licence -> LicensedDataset / public view."""

from __future__ import annotations

import dataclasses
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
from medlocker.data import open_source
from medlocker.dataset import LicensedDataset
from medlocker.models import build_classifier
from medlocker.owner import PROGRESS_DIR, OwnerSecrets
from medlocker.pack import DestinationInUseError, pack
from medlocker.pack.publish import local_secrets_path
from medlocker.shards import read_manifest
from medlocker.shards.layout import CATALOG_NAMES  # fixed names, rewritten in place like the manifest
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
    for x in wds.WebDataset(urls, shardshuffle=False).decode("pil", only=["png"]):
        key, img = x["__key__"], np.asarray(x["png"].convert("RGB"))
        x0, y0, x1, y1 = Placement.from_dict(params[key].placement).box
        outside = np.ones(img.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(img[outside], originals[key][outside])
        assert not np.array_equal(img, originals[key])
        assert int(x["cls"]) == params[key].label  # undecoded: only the PNG decoder runs
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
    while not list((secrets / PROGRESS_DIR).glob("shard-*.json")) if secrets.exists() else True:
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
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
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


# -- publishing is exclusive; replace publishes the new dataset whole -----------------------


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _published_names(folder: Path, owner) -> list[str]:
    m = read_manifest(str(folder), owner.public, allow_insecure_test_seed=True)  # the CLI test packs with a test seed
    return sorted(["manifest.dsse.json", *(s.name for s in m.shards), *(s.index for s in m.shards),
                   *(f.name for f in m.files)])  # the catalog (wids index, dataset card) it pins


def test_repacking_into_a_used_destination_fails_before_writing_anything(world, quick_config, tmp_path):
    dest = tmp_path / "ds"
    first = pack(world["source"], str(dest), owner=world["owner"], secrets=tmp_path / "s1",
                 surrogates=[world["model"]], logo=default_logo(), config=quick_config(budget=4, shard_size=5))
    before = _files(dest)
    for secrets, resume in ((tmp_path / "s2", False), (tmp_path / "s1", False)):
        with pytest.raises(DestinationInUseError, match="--replace"):
            pack(world["source"], str(dest), owner=world["owner"], secrets=secrets, surrogates=[world["model"]],
                 logo=default_logo(), config=quick_config(budget=4, shard_size=5), resume=resume)
    assert _files(dest) == before and not (tmp_path / "s2").exists()
    # a stray file is not this run's partial output either: --resume refuses it
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DestinationInUseError, match="notes.txt"):
        pack(world["source"], str(dest), owner=world["owner"], secrets=tmp_path / "s1", surrogates=[world["model"]],
             logo=default_logo(), config=quick_config(budget=4, shard_size=5), resume=True)
    assert read_manifest(str(dest), world["owner"].public).dataset_id == first.dataset_id


def test_replace_leaves_exactly_the_new_dataset_and_plain_webdataset_reads_only_it(world, quick_config, tmp_path):
    dest = tmp_path / "ds"
    old = pack(world["source"], str(dest), owner=world["owner"], secrets=tmp_path / "old",
               surrogates=[world["model"]], logo=default_logo(), config=quick_config(budget=4, shard_size=3))
    old_names = set(_listing(dest))
    fewer = dataclasses.replace(world["source"], records=world["source"].records[:4])
    new = pack(fewer, str(dest), owner=world["owner"], secrets=tmp_path / "new", surrogates=[world["model"]],
               logo=default_logo(), config=quick_config(budget=4, shard_size=3), replace=True)
    assert new.dataset_id != old.dataset_id
    assert _listing(dest) == _published_names(dest, world["owner"])  # nothing else is left
    assert not (old_names - {"manifest.dsse.json", *CATALOG_NAMES}) & set(_listing(dest))  # no old shard name was reused
    # a reader that globs the folder, as plain webdataset users do, sees only the new samples
    urls = sorted(str(p) for p in dest.glob("*.tar"))
    seen = [(x["__key__"], json.loads(x["json"])["dataset_id"]) for x in wds.WebDataset(urls, shardshuffle=False)]
    assert sorted(k for k, _ in seen) == sorted(r.key for r in fewer.records)
    assert {d for _, d in seen} == {new.dataset_id}


def test_replace_refuses_sub_folders(world, quick_config, tmp_path):
    dest = tmp_path / "ds"
    (dest / "keep").mkdir(parents=True)
    with pytest.raises(DestinationInUseError, match="sub-folders"):
        pack(world["source"], str(dest), owner=world["owner"], secrets=tmp_path / "s", surrogates=[world["model"]],
             logo=default_logo(), config=quick_config(budget=4, shard_size=5), replace=True)
    assert _listing(dest) == ["keep"] and not (tmp_path / "s").exists()


# -- secrets are a local folder, apart from the destination however it is spelled ----------


def _refused(world, dest: str, secrets, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pack(world["source"], dest, owner=world["owner"], secrets=secrets, surrogates=[world["model"]],
             logo=default_logo())


@pytest.mark.parametrize("form", ["plain", "file", "local", "simplecache", "filecache", "relative", "dot-dot"])
def test_secrets_inside_the_destination_are_refused_for_every_url_form(world, tmp_path, monkeypatch, form):
    out = tmp_path / "pub"
    monkeypatch.chdir(tmp_path)
    dest = {"plain": str(out), "file": f"file://{out}", "local": f"local://{out}",
            "simplecache": f"simplecache::file://{out}", "filecache": f"filecache::file://{out}",
            "relative": "pub", "dot-dot": f"{tmp_path}/x/../pub"}[form]
    for secrets in (out / "secrets", out, tmp_path):  # inside, equal, around
        _refused(world, dest, secrets, "never be published")
    assert not out.exists()


def test_secrets_behind_a_symlink_are_refused(world, tmp_path):
    out = tmp_path / "pub"
    out.mkdir()
    (tmp_path / "link-in").symlink_to(out)  # secrets path is a symlink into the destination
    _refused(world, str(out), tmp_path / "link-in" / "secrets", "never be published")
    (tmp_path / "dest-link").symlink_to(tmp_path / "private", target_is_directory=True)
    (tmp_path / "private").mkdir()  # the destination is a symlink to the folder holding the secrets
    _refused(world, str(tmp_path / "dest-link"), tmp_path / "private" / "secrets", "never be published")
    _refused(world, f"simplecache::file://{tmp_path / 'dest-link'}", tmp_path / "private", "never be published")
    # a wrapper over the local disk whose target path is not plain: refused, not guessed
    _refused(world, f"dir::file://{out}", tmp_path / "elsewhere", "cannot tell where")
    assert _listing(out) == [] and _listing(tmp_path / "private") == []


@pytest.mark.parametrize("secrets", ["s3://bucket/secrets", "memory://secrets", "simplecache::file:///tmp/s",
                                     "gs://b/x", "s3:/bucket/secrets"])
def test_non_local_secrets_are_refused_before_anything_is_written(world, tmp_path, monkeypatch, secrets):
    monkeypatch.chdir(tmp_path)
    _refused(world, str(tmp_path / "pub"), secrets, "must be a local folder")
    _refused(world, str(tmp_path / "pub"), Path(secrets), "must be a local folder")
    assert _listing(tmp_path) == []


def test_a_file_url_for_the_secrets_is_a_local_folder(tmp_path):
    assert local_secrets_path(f"file://{tmp_path}/s") == tmp_path / "s"
    assert local_secrets_path("relative/s") == Path("relative/s")


# -- pre-flight: wrong classes and too-small images are caught before work, with their cause --


def test_a_surrogate_with_other_classes_is_refused_before_anything_is_written(world, tmp_path):
    two = build_classifier("smallcnn", ["healthy", "sick"], input_size=SIZE, seed=0).eval()
    with pytest.raises(ValueError, match=r"2 classes \['healthy', 'sick'\].* has 5 .*trained on this source's classes"):
        pack(world["source"], str(tmp_path / "ds"), owner=world["owner"], secrets=tmp_path / "s",
             surrogates=[two], logo=default_logo())
    with pytest.raises(ValueError, match=r"disagree on their classes"):
        pack(world["source"], str(tmp_path / "ds"), owner=world["owner"], secrets=tmp_path / "s",
             surrogates=[world["model"], two], logo=default_logo())
    assert _listing(tmp_path) == []


def test_an_image_too_small_for_the_logo_is_rejected_for_its_size(world, quick_config, tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rows = ["image,label"]
    for r in world["source"].records[:3]:
        (src / "images" / Path(r.path).name).write_bytes(Path(r.path).read_bytes())
        rows.append(f"{Path(r.path).stem},{r.label}")
    Image.open(world["source"].records[3].path).resize((12, 12)).save(src / "images" / "tiny.png")
    rows.append("tiny,1")
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    source = open_source(src, masks=None)
    model = build_classifier("smallcnn", source.classes, input_size=SIZE, seed=0).eval()
    summary = pack(source, str(tmp_path / "ds"), owner=world["owner"], secrets=tmp_path / "s", surrogates=[model],
                   logo=default_logo(), config=quick_config(budget=4, shard_size=4))
    assert summary.protected == 3
    [reject] = summary.rejects
    assert Path(reject["path"]).name == "tiny.png"
    assert "12x12 px, too small for the logo" in reject["reason"] and "lesion-free" not in reject["reason"]
    # resized below what the logo needs: the whole run is refused up front
    with pytest.raises(ValueError, match="--resize 12: the image is 12x12 px, too small"):
        pack(source, str(tmp_path / "ds2"), owner=world["owner"], secrets=tmp_path / "s2", surrogates=[model],
             logo=default_logo(), config=dataclasses.replace(quick_config(budget=4, shard_size=4), resize=12))
    assert not (tmp_path / "ds2").exists() and not (tmp_path / "s2").exists()


def test_a_source_with_some_of_the_models_classes_is_searched_in_the_models_numbering(world):
    from medlocker.pack.preflight import model_labels

    some = dataclasses.replace(world["source"], classes=world["source"].classes[1:])  # a CSV without grade 0
    assert model_labels(some, [world["model"]]) == (1, 2, 3, 4)
    assert model_labels(world["source"], [world["model"], world["model"]]) == (0, 1, 2, 3, 4)


def test_cli_refuses_a_used_destination_and_replaces_with_replace(world, tmp_path, capsys):
    from medlocker.cli.common import guarded
    from medlocker.cli.pack import main

    dest, paper = tmp_path / "ds", ("--protection", "paper")  # the flag's wiring, not the protection, is tested
    assert guarded(main, _pack_args(world, dest, tmp_path / "s1", *paper)) == 0
    first = _files(dest)
    capsys.readouterr()
    assert guarded(main, _pack_args(world, dest, tmp_path / "s2", *paper)) == 2
    assert "--replace" in capsys.readouterr().err and _files(dest) == first
    assert guarded(main, _pack_args(world, dest, tmp_path / "s3", "--replace", "--insecure-test-seed", "8", *paper)) == 0
    assert _listing(dest) == _published_names(dest, world["owner"])
    assert not set(_listing(dest)) & (set(first) - {"manifest.dsse.json", *CATALOG_NAMES})
    # the same seed again would write the same shard names over the old ones: refused
    assert guarded(main, _pack_args(world, dest, tmp_path / "s4", "--replace", "--insecure-test-seed", "8", *paper)) == 2
    assert "same --insecure-test-seed" in capsys.readouterr().err


def test_an_interrupted_replace_leaves_the_old_dataset_whole_and_resumes(world, quick_config, tmp_path, monkeypatch):
    from medlocker.pack import pipeline
    from medlocker.shards import check_dataset

    dest, kw = tmp_path / "ds", {"owner": world["owner"], "surrogates": [world["model"]], "logo": default_logo(),
                                 "config": quick_config(budget=4, shard_size=3)}
    old = pack(world["source"], str(dest), secrets=tmp_path / "old", **kw)
    fewer = dataclasses.replace(world["source"], records=world["source"].records[:4])

    def crash(run):
        raise KeyboardInterrupt("killed before the manifest")

    monkeypatch.setattr(pipeline, "sign_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        pack(fewer, str(dest), secrets=tmp_path / "new", replace=True, **kw)
    monkeypatch.undo()
    # step 1 done: the new shards sit beside the old ones, and the old manifest still reads the old dataset, intact
    report = check_dataset(str(dest), world["owner"].public)
    assert report.ok and report.samples == len(world["source"].records)
    assert read_manifest(str(dest), world["owner"].public).dataset_id == old.dataset_id
    with pytest.raises(DestinationInUseError):  # resuming must say --replace again
        pack(fewer, str(dest), secrets=tmp_path / "new", resume=True, **kw)
    new = pack(fewer, str(dest), secrets=tmp_path / "new", resume=True, replace=True, **kw)
    assert read_manifest(str(dest), world["owner"].public).dataset_id == new.dataset_id
    assert _listing(dest) == _published_names(dest, world["owner"])
