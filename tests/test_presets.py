"""Every protection preset through the product: lesion pixels untouched, restoration exact,
every parameter that shapes a sample committed, and the mark still the owner's logo."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch
import webdataset as wds
from skimage.metrics import structural_similarity

from medlocker.crypto import Identity, check_commitment, issue_license
from medlocker.data import generate_fundus, open_source, write_synthetic_dataset
from medlocker.dataset import LicensedDataset
from medlocker.models import build_classifier
from medlocker.owner import OwnerSecrets, param_bytes
from medlocker.pack import PackConfig, pack
from medlocker.shards import read_manifest
from medlocker.watermark import (
    PRESETS,
    Placement,
    default_logo,
    render_exact,
    resize_logo,
)
from medlocker.watermark.config import MARK_MAX_CHANGE, MARK_SSIM_MIN
from medlocker.watermark.layer import Layer, apply_layer

N, SIZE, SEED = 4, 48, 23
_SSIM_MIN_SIDE = 5  # below this logo side (px) the mark's SSIM is not checked


@pytest.fixture(scope="module", params=sorted(PRESETS))
def packed(request, tmp_path_factory):
    name = request.param
    tmp = tmp_path_factory.mktemp(f"preset-{name}")
    source = open_source(write_synthetic_dataset(tmp / "src", n=N, size=SIZE, seed=SEED, progress=False))
    with torch.random.fork_rng():
        torch.manual_seed(4)
        model = build_classifier("smallcnn", source.classes, input_size=SIZE).eval()
    owner = Identity.generate(name="owner")
    dest, secrets = tmp / "ds", tmp / "secrets"
    protection = PRESETS[name]
    pack(source, str(dest), owner=owner, secrets=secrets, surrogates=[model], logo=default_logo(),
         config=PackConfig(protection=protection, shard_size=2, batch_size=4))
    manifest = read_manifest(str(dest), owner.public)
    published = {x["__key__"]: np.asarray(x["png"].convert("RGB")) for x in
                 wds.WebDataset([str(dest / s.name) for s in manifest.shards], shardshuffle=False).decode("pil", only=["png"])}
    samples = {f"synth_{i:06d}": generate_fundus(SEED, i, SIZE) for i in range(N)}
    return {"name": name, "protection": protection, "dest": str(dest), "owner": owner, "manifest": manifest,
            "run": OwnerSecrets.load(secrets, owner), "published": published, "samples": samples}


def test_no_lesion_pixel_changes_and_the_stored_bytes_are_the_committed_parameters(packed):
    run, manifest = packed["run"], packed["manifest"]
    params = run.params()
    assert sorted(params) == sorted(packed["published"])
    for key, rec in params.items():
        p = Placement.from_dict(rec.placement)
        logo = rec.logo() if rec.logo() is not None else resize_logo(run.load_logo(), p.w, p.h)
        sample = packed["samples"][key]
        published = packed["published"][key]
        layer = None if rec.layer is None else Layer.from_bytes(base64.b64decode(rec.layer))[0]
        base = sample.image if layer is None else apply_layer(sample.image, layer)
        # the published pixels are exactly the committed parameters applied to the original
        assert np.array_equal(published, render_exact(base, logo, p))
        outside = np.ones(published.shape[:2], bool)
        outside[p.y:p.y + p.h, p.x:p.x + p.w] = False
        mse = ((published[outside].astype(float) - sample.image[outside]) ** 2).mean()
        assert mse == 0 or 10 * np.log10(255 ** 2 / mse) >= 40.0  # PSNR outside the logo box
        changed = (published != sample.image).any(2)
        for mask in sample.masks.values():
            assert not changed[mask > 0].any(), f"{packed['name']}: a lesion pixel of {key} changed"
        data = param_bytes(dataset_id=run.dataset_id, key=key, placement=rec.placement,
                           logo_sha256=rec.logo_sha256(manifest.logo_sha256), layer_sha256=rec.layer_sha256())
        assert check_commitment(rec.commitment, data, bytes.fromhex(rec.salt))
        if layer is not None:  # the layer is committed: without its digest the commitment does not open
            assert packed["protection"].layer.on
            assert not check_commitment(rec.commitment, param_bytes(
                dataset_id=run.dataset_id, key=key, placement=rec.placement,
                logo_sha256=rec.logo_sha256(manifest.logo_sha256)), bytes.fromhex(rec.salt))
        # the mark is still the owner's logo: SSIM of its luminance vs the public logo's at this box
        public = resize_logo(default_logo(), p.w, p.h)
        lum = np.array([0.299, 0.587, 0.114])
        a = (render_exact(base, logo, p)[p.y:p.y + p.h, p.x:p.x + p.w] @ lum)
        b = (render_exact(base, public, p)[p.y:p.y + p.h, p.x:p.x + p.w] @ lum)
        # SSIM needs a window of at least 5x5 to mean anything: a 4x4 box (a small logo at 48 px
        # on a lesion-dense image) holds only four 3x3 windows. Such boxes are still checked
        # exactly against the committed parameters above.
        win = min(7, p.w, p.h)
        win -= win % 2 == 0  # odd, and no larger than the box
        if min(p.w, p.h) >= _SSIM_MIN_SIDE:
            assert structural_similarity(a, b, data_range=255.0, win_size=win) >= MARK_SSIM_MIN
        if packed["protection"].texture.max_change is not None and rec.logo() is not None:
            run_logo = resize_logo(run.load_logo(), p.w, p.h).astype(int)
            assert np.abs(rec.logo()[..., :3].astype(int) - run_logo[..., :3]).max() <= MARK_MAX_CHANGE


def test_layered_presets_change_pixels_outside_the_box(packed):
    if not packed["protection"].layer.on:
        pytest.skip("no layer in this preset")
    assert any(rec.layer is not None for rec in packed["run"].params().values())


def test_the_licensee_restores_every_sample_exactly(packed):
    owner, manifest = packed["owner"], packed["manifest"]
    alice = Identity.generate(name="alice")
    lic = issue_license(owner, dataset_id=manifest.dataset_id, manifest_digest=manifest.digest,
                        licensee=alice.public, content_key=packed["run"].content_key,
                        expires=datetime.now(timezone.utc) + timedelta(days=1))
    seen = {s["__key__"]: np.asarray(s["image"]) for s in
            LicensedDataset(packed["dest"], license=lic, identity=alice, owner=owner.public)}
    assert sorted(seen) == sorted(packed["samples"])
    assert all(np.array_equal(seen[k], packed["samples"][k].image) for k in seen)


def test_a_leaked_sample_is_proved_with_every_committed_parameter(packed):
    from medlocker.proof import check_proof, prove

    key = sorted(packed["published"])[0]
    suspect = packed["published"][key]
    proof = prove(suspect, secrets=packed["run"], dest=packed["dest"], owner=packed["owner"].public, key=key)
    check = check_proof(proof.to_bytes(), dest=packed["dest"], owner=packed["owner"].public, suspect=suspect)
    assert check.ok and check.commitment_opens
