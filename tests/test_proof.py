"""Ownership proofs: a leaked (re-encoded, resized) image is traced to its sample."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from medlocker.crypto import Identity
from medlocker.data import generate_fundus, open_source, write_synthetic_dataset
from medlocker.errors import FormatError, IntegrityError, SignatureError
from medlocker.models import build_classifier
from medlocker.owner import OwnerSecrets
from medlocker.pack import PackConfig, pack
from medlocker.proof import check_proof, prove
from medlocker.shards import read_manifest
from medlocker.watermark import SearchConfig, default_logo

SIZE = 64


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proof")
    source = open_source(write_synthetic_dataset(tmp / "src", n=8, size=SIZE, seed=11, progress=False))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = build_classifier("smallcnn", source.classes, input_size=SIZE).eval()
    owner = Identity.generate(name="owner")
    owner.save(tmp / "owner")
    dest, secrets = tmp / "ds", tmp / "secrets"
    pack(source, str(dest), owner=owner, secrets=secrets, surrogates=[model], logo=default_logo(),
         config=PackConfig(search=SearchConfig(optimizer="blackbox", budget=8, logo_scale=0.03, lesion_margin=1),
                           shard_size=3))
    run = OwnerSecrets.load(secrets, owner)
    published = {}
    import webdataset as wds

    manifest = read_manifest(str(dest), owner.public)
    for x in wds.WebDataset([str(dest / s.name) for s in manifest.shards], shardshuffle=False).decode("pil"):
        published[x["__key__"]] = np.asarray(x["png"].convert("RGB"))
    originals = {f"synth_{i:06d}": generate_fundus(11, i, SIZE).image for i in range(8)}
    return {"dest": str(dest), "owner": owner, "run": run, "published": published, "originals": originals, "tmp": tmp}


def _jpeg_and_resize(img: np.ndarray, quality: int, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    im = Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.mark.parametrize("quality,scale", [(95, 1.0), (75, 1.0), (75, 0.8)])
def test_leaked_image_is_traced_and_the_proof_checks(packed, quality, scale):
    key = sorted(packed["published"])[2]
    suspect = _jpeg_and_resize(packed["published"][key], quality, scale)
    proof = prove(suspect, secrets=packed["run"], dest=packed["dest"], owner=packed["owner"].public)
    assert proof.doc["key"] == key
    assert proof.matched, proof.doc
    result = check_proof(proof.to_bytes(), dest=packed["dest"], owner=packed["owner"].public, suspect=suspect)
    assert result.ok and result.commitment_opens and result.box_similarity > 0.5 and result.image_similarity > 0.5


@pytest.mark.parametrize("scale", [1.0, 0.8])
def test_unrelated_images_do_not_match(packed, scale):
    # Every synthetic fundus shares the disc layout, so these are hard negatives.
    for seed in range(12):
        other = _jpeg_and_resize(generate_fundus(900 + seed, seed % 5, SIZE).image, 90, scale)
        proof = prove(other, secrets=packed["run"], dest=packed["dest"], owner=packed["owner"].public)
        assert not proof.matched, (seed, proof.doc)
        assert proof.score < 0.5
        result = check_proof(proof.to_bytes(), dest=packed["dest"], owner=packed["owner"].public, suspect=other)
        assert result.commitment_opens and not result.ok, (seed, result)


def test_a_leaked_original_carries_no_watermark(packed):
    """The score measures the logo itself: the unprotected original of a sample scores ~0."""
    key = sorted(packed["published"])[3]
    original = packed["originals"][key]
    proof = prove(original, secrets=packed["run"], dest=packed["dest"], owner=packed["owner"].public)
    assert proof.doc["key"] == key and proof.image_similarity > 0.5  # it is the same image ...
    assert abs(proof.score) < 0.2 and not proof.matched  # ... without the watermark


def test_tampered_or_foreign_proofs_are_rejected(packed):
    key = sorted(packed["published"])[0]
    proof = prove(packed["published"][key], secrets=packed["run"], dest=packed["dest"], owner=packed["owner"].public)
    doc = json.loads(proof.to_bytes())
    doc["salt"] = "00" * 32
    bad = json.dumps(doc).encode()
    assert not check_proof(bad, dest=packed["dest"], owner=packed["owner"].public).commitment_opens
    doc = json.loads(proof.to_bytes())
    doc["placement"]["x"] += 1
    assert not check_proof(json.dumps(doc).encode(), dest=packed["dest"], owner=packed["owner"].public).ok
    doc = json.loads(proof.to_bytes())
    doc["dataset_id"] = "mld-" + "0" * 32
    with pytest.raises(IntegrityError):
        check_proof(json.dumps(doc).encode(), dest=packed["dest"], owner=packed["owner"].public)
    with pytest.raises(SignatureError):
        check_proof(proof.to_bytes(), dest=packed["dest"], owner=Identity.generate().public)
    with pytest.raises((FormatError, ValueError)):
        check_proof(b"not json", dest=packed["dest"], owner=packed["owner"].public)


def test_verify_tool_prove_and_check_proof(packed):
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "verify.py"
    tmp, key = packed["tmp"], sorted(packed["published"])[1]
    leaked = tmp / "leaked.jpg"
    Image.fromarray(_jpeg_and_resize(packed["published"][key], 80, 0.9)).save(leaked, quality=90)
    run = lambda *a: subprocess.run([sys.executable, str(tool), *a], capture_output=True, text=True, timeout=300)
    p = run("prove", "--image", str(leaked), "--secrets", str(packed["run"].root), "--dataset", packed["dest"],
            "--owner", str(tmp / "owner.key"), "--out", str(tmp / "leaked.proof"))
    assert p.returncode == 0 and f"MATCH: sample {key}" in p.stdout, p.stdout + p.stderr
    c = run("check-proof", str(tmp / "leaked.proof"), "--dataset", packed["dest"], "--owner", str(tmp / "owner.pub"),
            "--image", str(leaked))
    assert c.returncode == 0 and "OK: the proof holds" in c.stdout, c.stdout + c.stderr
    c = run("check-proof", str(tmp / "leaked.proof"), "--dataset", packed["dest"], "--owner", str(tmp / "owner.key"))
    assert c.returncode == 2 and c.stderr.startswith("error:")  # a private key file is not a .pub
