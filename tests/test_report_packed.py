"""The packed-dataset evaluation: shards + owner secrets + checkpoints -> report (tools/evaluate.py --dataset)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from medlocker.errors import IntegrityError
from medlocker.models import build_classifier, save_checkpoint
from medlocker.pack import pack
from medlocker.report.packed import (
    load_packed,
    model_names,
    read_public,
    surrogates_from_settings,
)
from medlocker.shards import read_manifest
from medlocker.watermark import default_logo

ROOT = Path(__file__).resolve().parents[1]
N, SIZE = 8, 64


def _tool():
    spec = importlib.util.spec_from_file_location("medlocker_tools_evaluate", ROOT / "tools" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def packed(pack_world, quick_config):
    """8 synthetic images packed with a fixed-seed smallcnn surrogate; a second (held-out) model."""
    w = pack_world("packed", n=N, seed=5)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        held_out = build_classifier("vit_tiny", w.source.classes, input_size=SIZE).eval()
    save_checkpoint(w.model, w.tmp / "smallcnn.pt")
    save_checkpoint(held_out, w.tmp / "vit.pt")
    dest, secrets = w.tmp / "ds", w.tmp / "secrets"
    pack(w.source, str(dest), owner=w.owner, secrets=secrets, surrogates=[w.model], logo=default_logo(),
         config=quick_config(budget=8, shard_size=3, batch_size=8))
    return {"tmp": w.tmp, "src": w.src, "source": w.source, "dest": dest, "secrets": secrets, "owner": w.owner,
            "surrogate": w.model}


def test_cli_report_on_a_packed_dataset(packed):
    tmp = packed["tmp"]
    out = tmp / "report"
    rc = _tool().main([
        "--dataset", str(packed["dest"]), "--secrets", str(packed["secrets"]), "--owner", str(tmp / "owner.key"),
        "--model", str(tmp / "smallcnn.pt"), "--model", str(tmp / "vit.pt"), "--source", str(packed["src"]),
        "--device", "cpu", "--out", str(out),
    ])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["synthetic"] is True and report["data"]["n_images"] == N

    # restoration measured through the licensed reader, against the source pixels
    lic = report["removal"]["licensed"]
    assert lic["assumed_exact"] is False and lic["exact_fraction"] == 1.0
    # the logo never touches a lesion box (boxes from the source masks)
    assert report["quality"]["lesion_pixels_changed"]["total"] == 0
    assert "mask" in report["meta"]["provenance"]["lesion_boxes"]
    # roles from run.json settings: the smallcnn was the surrogate
    assert report["models"]["smallcnn"]["role"] == "white-box"
    assert report["models"]["vit_tiny"]["role"] == "black-box"
    assert report["headline"]["white_box_models"] == ["smallcnn"]

    # protected accuracy == an independent recomputation from the public shards (webdataset + PIL)
    manifest = read_manifest(str(packed["dest"]), packed["owner"].public)
    urls = [str(packed["dest"] / s.name) for s in manifest.shards]
    images, labels = [], []
    for x in wds.WebDataset(urls, shardshuffle=False).decode("pil", only=["png"]):
        images.append(np.asarray(x["png"].convert("RGB")))
        labels.append(int(x["cls"]))
    assert len(images) == N
    with torch.no_grad():
        logits = packed["surrogate"](torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255))
    expected = float((logits.argmax(1).numpy() == np.asarray(labels)).mean())
    assert report["models"]["smallcnn"]["protected_acc"] == pytest.approx(expected, abs=1e-12)

    # the HTML is self-contained: every image inline, nothing fetched
    html = (out / "report.html").read_text()
    assert "synthetic data" in html
    srcs = re.findall(r'(?:src|href)="([^"#]*)"', html)
    assert srcs and all(s.startswith("data:") for s in srcs), [s[:40] for s in srcs if not s.startswith("data:")]
    assert "<script src" not in html and "@import" not in html and "url(http" not in html


def test_without_source_lesion_boxes_come_from_gradcam_and_restoration_is_digest_checked(packed):
    data = load_packed(str(packed["dest"]), packed["secrets"], packed["owner"], gradcam_model=packed["surrogate"])
    assert len(data.keys) == N and data.protected.shape == (N, SIZE, SIZE, 3)
    assert np.array_equal(data.originals, data.restored)
    assert "Grad-CAM" in data.provenance["lesion_boxes"] and "smallcnn" in data.provenance["lesion_boxes"]
    assert all(isinstance(b, list) for b in data.lesion_boxes)
    assert sum(p is not None for p in data.placements) == N
    # the restored originals really are the source pixels
    src = {r.key: r for r in packed["source"].records}
    from PIL import Image
    for k, img in zip(data.keys, data.restored):
        assert np.array_equal(img, np.asarray(Image.open(src[k].path).convert("RGB")))
    with pytest.raises(ValueError, match="Grad-CAM"):
        load_packed(str(packed["dest"]), packed["secrets"], packed["owner"])


def test_a_tampered_shard_is_refused(packed, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(packed["dest"], copy)
    manifest = read_manifest(str(copy), packed["owner"].public)
    shard = copy / manifest.shards[0].name
    raw = bytearray(shard.read_bytes())
    raw[600] ^= 0x01  # inside the first member's data
    shard.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        read_public(str(copy), manifest)


def test_surrogate_matching_and_names(packed):
    models = {"smallcnn": packed["surrogate"], "other": build_classifier("resnet18", ["0", "1"], input_size=32)}
    assert surrogates_from_settings(models, {"surrogates": ["smallcnn"]}) == {"smallcnn"}
    assert surrogates_from_settings(models, {"surrogates": ["smallcnn"]}, ["other"]) == {"other"}
    with pytest.raises(ValueError, match="not among"):
        surrogates_from_settings(models, {}, ["nope"])
    names = model_names(["a/r1.pt", "b/r2.pt", "c/s.pt"], ["resnet18", "resnet18", "smallcnn"])
    assert names == ["r1", "r2", "smallcnn"]
