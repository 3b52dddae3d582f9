"""Ownership proofs: a re-posted leak (cropped, rotated, rescaled, re-encoded) is traced to its sample."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medlocker.crypto import Identity
from medlocker.data import generate_fundus, open_source, write_synthetic_dataset
from medlocker.errors import FormatError, IntegrityError, MedLockerError, SignatureError
from medlocker.models import build_classifier
from medlocker.owner import OwnerSecrets
from medlocker.pack import PackConfig, pack
from medlocker.proof import Repost, check_proof, prove, repost
from medlocker.shards import read_manifest
from medlocker.watermark import SearchConfig, default_logo

SIZE = 96


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
         config=PackConfig(search=SearchConfig(optimizer="blackbox", budget=8, logo_scale=0.04, lesion_margin=1),
                           shard_size=3))
    run = OwnerSecrets.load(secrets, owner)
    import webdataset as wds

    published = {}
    manifest = read_manifest(str(dest), owner.public)
    for x in wds.WebDataset([str(dest / s.name) for s in manifest.shards], shardshuffle=False):
        published[x["__key__"]] = np.asarray(Image.open(io.BytesIO(x["png"])).convert("RGB"))
    originals = {f"synth_{i:06d}": generate_fundus(11, i, SIZE).image for i in range(8)}
    return {"dest": str(dest), "owner": owner, "run": run, "published": published, "originals": originals, "tmp": tmp}


def _file(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def _prove(packed, data, **kw):
    return prove(data, secrets=packed["run"], dest=packed["dest"], owner=packed["owner"].public, **kw)


def _check(packed, proof_bytes, suspect=None):
    return check_proof(proof_bytes, dest=packed["dest"], owner=packed["owner"].public, suspect=suspect)


EDITS = {
    "crop_8px": Repost(crop=(8 / SIZE,) * 4),
    "crop_10pct_uneven": Repost(crop=(0.1, 0.02, 0.06, 0.1)),
    "rotate_3deg": Repost(angle=3.0),
    "rotate_minus_5deg": Repost(angle=-5.0),
    "scale_0.5": Repost(scale=0.5),
    "scale_2": Repost(scale=2.0),
    "jpeg_q50": Repost(quality=50),
    "all": Repost(crop=(0.1, 0.05, 0.03, 0.08), angle=4.0, scale=0.6, quality=50),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_a_reposted_leak_is_traced_matched_and_checked(packed, name):
    for i in (1, 6):  # two images per edit class
        key = sorted(packed["published"])[i]
        leak = _file(repost(packed["published"][key], EDITS[name]))
        proof = _prove(packed, leak)
        assert proof.doc["key"] == key, (name, proof.doc)
        assert proof.matched, (name, proof.summary())
        result = _check(packed, proof.to_bytes(), leak)
        assert result.suspect_digest_matches and result.commitment_opens
        assert result.matched and result.ok, (name, result.statement())
        assert "MATCH: the image is sample" in result.statement()


def test_unrelated_images_do_not_match(packed):
    from skimage import data as skdata

    photo = np.asarray(Image.fromarray(skdata.retina()).resize((SIZE, SIZE), Image.BICUBIC))
    others = [generate_fundus(900 + s, s % 5, SIZE).image for s in range(4)] + [photo]
    for j, other in enumerate(others):
        leak = _file(repost(other, Repost(angle=2.0 * j - 4, crop=(0.03 * j,) * 4, quality=50)))
        proof = _prove(packed, leak)
        assert not proof.matched, (j, proof.summary())
        result = _check(packed, proof.to_bytes(), leak)
        assert result.commitment_opens and not result.matched, (j, result.statement())
    # A published image claimed as another sample of the same dataset.
    a, b = sorted(packed["published"])[:2]
    leak = _file(packed["published"][b])
    proof = _prove(packed, leak, key=a)
    assert proof.doc["key"] == a and not proof.matched
    assert not _check(packed, proof.to_bytes(), leak).matched


def test_a_leaked_original_carries_no_watermark(packed):
    """The owner's score measures the logo itself: the unprotected original of a sample scores ~0."""
    key = sorted(packed["published"])[3]
    proof = _prove(packed, _file(repost(packed["originals"][key], Repost(angle=2.0, quality=75))))
    assert proof.doc["key"] == key and proof.image_similarity > 0.5  # it is the same image ...
    assert abs(proof.score) < 0.2 and not proof.matched  # ... without the watermark


def test_check_proof_without_an_image_claims_no_match(packed):
    key = min(packed["published"])
    proof = _prove(packed, _file(packed["published"][key]))
    result = _check(packed, proof.to_bytes())
    assert result.commitment_opens and not result.suspect_checked
    assert not result.matched and not result.ok
    text = result.statement()
    assert f"open the owner-signed commitment of sample {key}" in text
    assert "NOT SHOWN: that any particular image is that sample" in text and "MATCH:" not in text


def test_suspect_sha256_is_checked_against_the_image_given(packed):
    key = sorted(packed["published"])[2]
    leak = _file(repost(packed["published"][key], Repost(angle=1.0)))
    proof = _prove(packed, leak)
    assert proof.matched and proof.doc["suspect_digest"] == "file"
    other_file = _file(repost(packed["published"][key], Repost(angle=1.0)), "JPEG")  # same picture, other file
    result = _check(packed, proof.to_bytes(), other_file)
    assert result.suspect_checked and result.suspect_digest_matches is False and not result.matched
    assert "not the image this proof was made for" in result.statement()
    # Pixels instead of the file: a pixel digest, which the file proof does not name either.
    pixels = np.asarray(Image.open(io.BytesIO(leak)).convert("RGB"))
    assert not _check(packed, proof.to_bytes(), pixels).suspect_digest_matches
    by_pixels = _prove(packed, pixels)
    assert by_pixels.doc["suspect_digest"] == "rgb8" and _check(packed, by_pixels.to_bytes(), pixels).matched


def test_tampered_or_foreign_proofs_are_rejected(packed):
    key = min(packed["published"])
    proof = _prove(packed, _file(packed["published"][key]))
    doc = json.loads(proof.to_bytes())
    doc["salt"] = "00" * 32
    assert not _check(packed, json.dumps(doc).encode()).commitment_opens
    doc = json.loads(proof.to_bytes())
    doc["placement"]["x"] += 1
    assert not _check(packed, json.dumps(doc).encode()).commitment_opens
    doc = json.loads(proof.to_bytes())
    doc["dataset_id"] = "mld-" + "0" * 32
    with pytest.raises(IntegrityError):
        _check(packed, json.dumps(doc).encode())
    with pytest.raises(SignatureError):
        check_proof(proof.to_bytes(), dest=packed["dest"], owner=Identity.generate().public)
    doc = json.loads(proof.to_bytes())
    doc["version"] = 2
    with pytest.raises(FormatError, match="version 2 is not supported"):
        _check(packed, json.dumps(doc).encode())
    with pytest.raises(FormatError):
        _check(packed, b"not json")


def _tool(capsys, *argv: str) -> tuple[int, str, str]:
    """Run tools/verify.py in-process, as its ``__main__`` does (exit code, stdout, stderr)."""
    import importlib.util

    from medlocker.cli import run_cli

    path = Path(__file__).resolve().parents[1] / "tools" / "verify.py"
    spec = importlib.util.spec_from_file_location("verify_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_:
        run_cli(module.main, list(argv))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_verify_tool_prove_and_check_proof(packed, capsys):
    tmp, key = packed["tmp"], sorted(packed["published"])[1]
    leaked = tmp / "leaked.jpg"
    leaked.write_bytes(_file(repost(packed["published"][key], Repost(angle=-3.0, crop=(0.05,) * 4, scale=0.8)), "JPEG"))
    code, out, err = _tool(capsys, "prove", "--image", str(leaked), "--secrets", str(packed["run"].root),
                           "--dataset", packed["dest"], "--owner", str(tmp / "owner.key"), "--out", str(tmp / "leak.proof"))
    assert code == 0 and f"MATCH: sample {key}" in out, out + err
    check = ("check-proof", str(tmp / "leak.proof"), "--dataset", packed["dest"], "--owner", str(tmp / "owner.pub"))
    code, out, err = _tool(capsys, *check, "--image", str(leaked))
    assert code == 0 and f"MATCH: the image is sample {key}" in out, out + err
    code, out, err = _tool(capsys, *check)
    assert code == 0 and "NOT SHOWN" in out and "MATCH" not in out, out + err
    other = tmp / "other.png"
    other.write_bytes(_file(packed["published"][key]))
    code, out, err = _tool(capsys, *check, "--image", str(other))
    assert code == 1 and "not the image this proof was made for" in out, out + err
    code, out, err = _tool(capsys, *check[:-1], str(tmp / "owner.key"))
    assert code == 2 and err.startswith("error:")  # a private key file is not a .pub


# --- check_proof on untrusted proof documents: only MedLockerError may escape --------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _mutations(valid: dict):
    fields = sorted(valid)
    placement = sorted(valid["placement"])
    return st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps(v).encode()),
        st.tuples(st.sampled_from(fields), _json).map(lambda kv: {**valid, kv[0]: kv[1]}),
        st.sampled_from(fields).map(lambda k: {f: v for f, v in valid.items() if f != k}),
        st.tuples(st.sampled_from(placement), _json).map(
            lambda kv: {**valid, "placement": {**valid["placement"], kv[0]: kv[1]}}),
        st.tuples(st.text(max_size=12), _json).map(lambda kv: {**valid, kv[0]: kv[1]}),
        st.tuples(st.integers(0, 4000), st.integers(0, 255)).map(lambda iv: (iv, valid)),
    )


def _to_bytes(m) -> bytes:
    if isinstance(m, bytes):
        return m
    if isinstance(m, tuple):  # flip one byte of the valid document
        (i, v), doc = m
        raw = bytearray(json.dumps(doc, sort_keys=True).encode())
        raw[i % len(raw)] = v
        return bytes(raw)
    return json.dumps(m).encode()


@pytest.fixture(scope="module")
def valid_proof(packed):
    key = sorted(packed["published"])[4]
    return json.loads(_prove(packed, _file(packed["published"][key])).to_bytes())


def test_check_proof_fuzz_raises_only_medlocker_errors(packed, valid_proof):
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_mutations(valid_proof))
    def run(m):
        try:
            result = _check(packed, _to_bytes(m))
        except MedLockerError:
            return
        assert isinstance(result.commitment_opens, bool) and not result.matched

    run()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_check_proof_fuzz_suspect_bytes(packed, valid_proof, data):
    try:
        result = _check(packed, json.dumps(valid_proof).encode(), data)
    except MedLockerError:
        return
    assert not result.matched  # random bytes are never the file the proof names


@settings(max_examples=25, deadline=None)
@given(st.integers(16, 80), st.integers(16, 80), st.integers(0, 2**32 - 1), st.sampled_from(["PNG", "JPEG"]))
def test_check_proof_fuzz_any_image_the_proof_names(packed, valid_proof, w, h, seed, fmt):
    """An arbitrary image whose digest the proof names is registered and scored without a crash."""
    from medlocker.shards.payload import sha256_digest

    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    data = _file(pixels, fmt)
    doc = {**valid_proof, "suspect_sha256": sha256_digest(data)}
    result = _check(packed, json.dumps(doc).encode(), data)
    assert result.suspect_digest_matches and not result.matched
