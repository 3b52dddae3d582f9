"""Per-image logo colours (ProtectionConfig.texture) through the product: pack, commit, restore, prove."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from medlocker.crypto import Identity, check_commitment, issue_license
from medlocker.data import generate_fundus, open_source, write_synthetic_dataset
from medlocker.dataset import LicensedDataset
from medlocker.models import build_classifier
from medlocker.owner import OwnerSecrets, param_bytes
from medlocker.pack import PackConfig, pack
from medlocker.proof import check_proof, prove
from medlocker.shards import read_manifest
from medlocker.watermark import (
    Placement,
    PlacementConfig,
    ProtectionConfig,
    TextureConfig,
    default_logo,
    render_exact,
    resize_logo,
)

N, SIZE, SEED = 6, 64, 17


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colours")
    source = open_source(write_synthetic_dataset(tmp / "src", n=N, size=SIZE, seed=SEED, progress=False))
    with torch.random.fork_rng():
        torch.manual_seed(2)
        model = build_classifier("smallcnn", source.classes, input_size=SIZE).eval()
    owner = Identity.generate(name="owner")
    dest, secrets = tmp / "ds", tmp / "secrets"
    protection = ProtectionConfig(placement=PlacementConfig(optimizer="gradient", budget=40, logo_scale=0.04,
                                                            lesion_margin=1), texture=TextureConfig(steps=8))
    summary = pack(source, str(dest), owner=owner, secrets=secrets, surrogates=[model], logo=default_logo(),
                   config=PackConfig(protection=protection, shard_size=4, batch_size=4))
    manifest = read_manifest(str(dest), owner.public)
    published = {}
    for x in wds.WebDataset([str(dest / s.name) for s in manifest.shards], shardshuffle=False).decode("pil", only=["png"]):
        published[x["__key__"]] = np.asarray(x["png"].convert("RGB"))
    originals = {f"synth_{i:06d}": generate_fundus(SEED, i, SIZE).image for i in range(N)}
    return {"dest": str(dest), "owner": owner, "run": OwnerSecrets.load(secrets, owner), "manifest": manifest,
            "published": published, "originals": originals, "summary": summary}


def test_each_sample_is_its_own_logo_rendered_and_committed(packed):
    run, manifest = packed["run"], packed["manifest"]
    params = run.params()
    assert packed["summary"].protected == N
    own = 0
    for key, rec in params.items():
        p = Placement.from_dict(rec.placement)
        logo = rec.logo()
        if logo is None:  # kept the plain logo (the colours would have lost a success)
            logo = resize_logo(run.load_logo(), p.w, p.h)
        else:
            own += 1
            plain = resize_logo(run.load_logo(), p.w, p.h)
            assert logo.shape == plain.shape and np.array_equal(logo[..., 3], plain[..., 3])
        # The published bytes are exactly the original with this logo at this placement.
        assert np.array_equal(packed["published"][key], render_exact(packed["originals"][key], logo, p))
        digest = rec.logo_sha256(manifest.logo_sha256)
        data = param_bytes(dataset_id=run.dataset_id, key=key, placement=rec.placement, logo_sha256=digest)
        assert check_commitment(rec.commitment, data, bytes.fromhex(rec.salt))
        if rec.logo_png is not None:  # a per-sample digest, not the dataset's
            assert digest != manifest.logo_sha256
            assert not check_commitment(rec.commitment, param_bytes(
                dataset_id=run.dataset_id, key=key, placement=rec.placement, logo_sha256=manifest.logo_sha256),
                bytes.fromhex(rec.salt))
    assert own >= N - 1


def test_licensee_still_gets_the_exact_originals(packed):
    owner, manifest = packed["owner"], packed["manifest"]
    alice = Identity.generate(name="alice")
    lic = issue_license(owner, dataset_id=manifest.dataset_id, manifest_digest=manifest.digest,
                        licensee=alice.public, content_key=packed["run"].content_key,
                        expires=datetime.now(timezone.utc) + timedelta(days=1))
    seen = {s["__key__"]: np.asarray(s["image"]) for s in
            LicensedDataset(packed["dest"], license=lic, identity=alice, owner=owner.public)}
    assert sorted(seen) == sorted(packed["originals"])
    assert all(np.array_equal(seen[k], packed["originals"][k]) for k in seen)


def test_a_leak_is_proved_with_the_samples_own_logo_digest(packed):
    key = sorted(packed["published"])[1]
    buf = io.BytesIO()
    Image.fromarray(packed["published"][key]).save(buf, format="JPEG", quality=80)
    suspect = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    proof = prove(suspect, secrets=packed["run"], dest=packed["dest"], owner=packed["owner"].public)
    assert proof.doc["key"] == key and proof.matched
    rec = packed["run"].params()[key]
    assert proof.doc["logo_sha256"] == rec.logo_sha256(packed["manifest"].logo_sha256)
    check = check_proof(proof.to_bytes(), dest=packed["dest"], owner=packed["owner"].public, suspect=suspect)
    assert check.ok and check.commitment_opens
    doc = json.loads(proof.to_bytes())  # another logo digest does not open the commitment
    doc["logo_sha256"] = "sha256:" + hashlib.sha256(b"another logo").hexdigest()
    assert not check_proof(json.dumps(doc).encode(), dest=packed["dest"], owner=packed["owner"].public).commitment_opens
