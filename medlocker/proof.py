"""Ownership proofs: show that a leaked image came from a packing run.

The signed index of every shard publishes, per sample, a salted commitment to
its watermark parameters. The owner keeps the plain parameters and salts. To
claim a suspect image, the owner

1. finds the published sample it derives from: candidates by thumbnail, then the
   correlation of fine image detail (a high-pass of the whole image), which is
   unique to each image, unlike the fundus layout every image shares;
2. scores whether the suspect carries *that* sample's logo at *that* placement:
   inside the logo box, the partial correlation of the suspect with the logo
   residual ``published - original`` once what the original explains is
   regressed out (per channel). An unrelated image, or a leaked *original*,
   scores near 0; a re-encoded copy of the published image near 1; and
3. reveals the parameters and the salt that open the signed commitment.

A suspect smaller than the stored image was resized: both references are sent
through the same down-and-up resize before they are compared, so the blur of
that resize is not counted against the match.

Anyone with the owner's public key and the published dataset can check the
proof (:func:`check_proof`): the manifest signature, the index digest, the
commitment opening, and -- given the suspect image -- that it matches the
published sample inside the revealed box.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from .crypto import PublicIdentity, canonical_json, check_commitment, open_payload, parse_json_strict
from .errors import FormatError, IntegrityError
from .owner import OwnerSecrets, param_bytes
from .shards import fs as _fs
from .shards import layout, read_manifest
from .shards.index import parse_index
from .shards.manifest import Manifest
from .shards.reader import iter_samples
from .shards.payload import apply_restoration, is_sha256_digest, sha256_digest
from .watermark import Placement

__all__ = ["Proof", "ProofCheck", "prove", "check_proof", "PROOF_FORMAT"]

PROOF_FORMAT = "medlocker.proof"
PROOF_VERSION = 2
MATCH_THRESHOLD = 0.5
_THUMB = 32
_DETAIL_SIGMA = 1.0


@dataclass(frozen=True)
class Proof:
    """What ``prove`` found; ``to_bytes`` is the proof file (canonical JSON)."""

    doc: dict[str, Any]

    @property
    def score(self) -> float:
        return self.doc["score_milli"] / 1000

    @property
    def image_similarity(self) -> float:
        return self.doc["image_similarity_milli"] / 1000

    @property
    def matched(self) -> bool:
        """The suspect is this sample (fine detail) and carries its watermark (the box)."""
        return self.score >= MATCH_THRESHOLD and self.image_similarity >= MATCH_THRESHOLD

    def to_bytes(self) -> bytes:
        return canonical_json(self.doc)


@dataclass(frozen=True)
class ProofCheck:
    """The outcome of :func:`check_proof`."""

    key: str
    commitment_opens: bool
    box_similarity: float | None  # suspect vs published sample inside the box, if an image was given
    image_similarity: float | None = None  # fine-detail correlation of the whole images, if an image was given

    @property
    def ok(self) -> bool:
        if not self.commitment_opens:
            return False
        return all(v is None or v >= MATCH_THRESHOLD for v in (self.box_similarity, self.image_similarity))


def _gray(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _thumb(img: np.ndarray) -> np.ndarray:
    t = np.asarray(Image.fromarray(img).resize((_THUMB, _THUMB), Image.BILINEAR))
    v = _gray(t).ravel()
    v = v - v.mean()
    return v / (np.linalg.norm(v) + 1e-6)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-6))


def _to_size(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == hw:
        return img
    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BICUBIC))


def _through(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``img`` resized to ``hw`` (the suspect's size) and back: what a leak at that size kept."""
    if img.shape[:2] == hw:
        return img
    small = np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR))
    return _to_size(small, img.shape[:2])


def _high_pass(img: np.ndarray) -> np.ndarray:
    blur = Image.fromarray(img).filter(ImageFilter.GaussianBlur(_DETAIL_SIGMA))
    return img.astype(np.float32) - np.asarray(blur, np.float32)


def _detail_similarity(suspect: np.ndarray, reference: np.ndarray) -> float:
    """Correlation of fine detail (vessels, texture, noise): high only for the same image."""
    return _cosine(_high_pass(suspect), _high_pass(reference))


def _watermark_score(suspect: np.ndarray, published: np.ndarray, original: np.ndarray) -> float:
    """Partial correlation of ``suspect`` with the logo residual given ``original`` (one box, HxWx3)."""
    rs, rd = [], []
    for c in range(3):
        o = original[..., c].ravel().astype(np.float64)
        basis = np.stack([np.ones_like(o), o], axis=1)
        for target, out in ((suspect[..., c].ravel().astype(np.float64), rs),
                            (published[..., c].ravel().astype(np.float64) - o, rd)):
            coef = np.linalg.lstsq(basis, target, rcond=None)[0]
            out.append(target - basis @ coef)
    a, b = np.concatenate(rs), np.concatenate(rd)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _samples(dest: str, manifest: Manifest, storage_options: dict | None, shards=None) -> Iterator[dict[str, Any]]:
    """Verified raw samples (see :func:`medlocker.shards.reader.iter_samples`)."""
    return iter_samples(dest, manifest, shards=shards, storage_options=storage_options)


def _sample(dest: str, manifest: Manifest, shard_name: str, key: str, storage_options: dict | None) -> dict[str, Any]:
    for sample in _samples(dest, manifest, storage_options, shards=[shard_name]):
        if sample["__key__"] == key:
            return sample
    raise IntegrityError(f"sample {key!r} is not in shard {shard_name}")


def _index(manifest: Manifest, dest: str, shard_name: str, storage_options: dict | None):
    info = next((s for s in manifest.shards if s.name == shard_name), None)
    if info is None:
        raise FormatError(f"shard {shard_name!r} is not in the manifest of {dest}")
    data = _fs.read_bytes(_fs.join(dest, info.index), storage_options, max_size=256 * 2**20)
    return parse_index(data, expected_sha256=info.index_sha256, shard=info.name, dataset_id=manifest.dataset_id)


def prove(
    suspect: np.ndarray,
    *,
    secrets: OwnerSecrets,
    dest: str,
    owner: PublicIdentity,
    storage_options: dict[str, Any] | None = None,
    candidates: int = 5,
) -> Proof:
    """Find the published sample ``suspect`` (uint8 HxWx3) derives from and build a proof.

    Raises:
        FormatError: the dataset has no samples, or the secrets lack a sample's parameters.
    """
    manifest = read_manifest(dest, owner, storage_options=storage_options)
    if manifest.dataset_id != secrets.dataset_id:
        raise FormatError(f"{secrets.root} holds the secrets of {secrets.dataset_id}, not of {dest}")
    target = _thumb(suspect)
    # One pass over the dataset; the best `candidates` samples are kept with their bytes.
    top: list[tuple[float, int, str, str, dict[str, Any]]] = []
    for shard in manifest.shards:
        for sample in _samples(dest, manifest, storage_options, shards=[shard.name]):
            item = (float(_thumb(_decode(sample[layout.EXT_IMAGE])) @ target), -len(top), sample["__key__"],
                    shard.name, sample)
            (heapq.heappush if len(top) < candidates else heapq.heappushpop)(top, item)
    if not top:
        raise FormatError(f"{dest} holds no samples")
    params = secrets.params()

    hw = suspect.shape[:2]
    best: tuple[float, float, str, str] | None = None
    for _, _, key, shard_name, m in sorted(top, reverse=True):
        published = _decode(m[layout.EXT_IMAGE])
        plain = open_payload(
            secrets.content_key, m[layout.EXT_SEAL], dataset_id=secrets.dataset_id, sample_key=key,
            watermarked_digest=sha256_digest(m[layout.EXT_IMAGE]),
        )
        original = apply_restoration(published, plain)
        x0, y0, x1, y1 = Placement.from_dict(params[key].placement).box
        s = _to_size(suspect, published.shape[:2])
        p, o = _through(published, hw), _through(original, hw)
        image_sim = _detail_similarity(s, p)
        score = _watermark_score(s[y0:y1, x0:x1], p[y0:y1, x0:x1], o[y0:y1, x0:x1])
        if best is None or image_sim > best[1]:  # which sample it is: fine detail, not the score
            best = (score, image_sim, key, shard_name)
    assert best is not None
    score, image_sim, key, shard_name = best
    rec = params[key]
    doc = {
        "format": PROOF_FORMAT,
        "version": PROOF_VERSION,
        "dataset_id": manifest.dataset_id,
        "manifest_digest": manifest.digest,
        "owner_key_id": manifest.owner_key_id,
        "shard": shard_name,
        "key": key,
        "placement": rec.placement,
        "salt": rec.salt,
        "logo_sha256": rec.logo_sha256(manifest.logo_sha256),  # the sample's own logo with per-image colours
        **({"layer_sha256": rec.layer_sha256()} if rec.layer is not None else {}),  # its adversarial layer
        "commitment": rec.commitment,
        "score_milli": int(round(score * 1000)),
        "image_similarity_milli": int(round(image_sim * 1000)),
        "suspect_sha256": sha256_digest(np.ascontiguousarray(suspect).tobytes()),
    }
    return Proof(doc)


def check_proof(
    proof: bytes,
    *,
    dest: str,
    owner: PublicIdentity,
    suspect: np.ndarray | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ProofCheck:
    """Check a proof with only the owner's public key and the published dataset.

    Raises:
        FormatError: malformed proof; SignatureError: manifest not signed by ``owner``;
        IntegrityError: the proof is for another dataset or its commitment does not open.
    """
    doc = parse_json_strict(proof)
    if not isinstance(doc, dict) or doc.get("format") != PROOF_FORMAT or doc.get("version") != PROOF_VERSION:
        raise FormatError("not a MedLocker proof (unknown format or version)")
    try:
        key, shard_name, salt = doc["key"], doc["shard"], bytes.fromhex(doc["salt"])
        placement = Placement.from_dict(doc["placement"])
        logo_sha256 = doc["logo_sha256"]
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"malformed proof: {e}") from None
    if not is_sha256_digest(logo_sha256):
        raise FormatError("malformed proof: logo_sha256 is not a 'sha256:<hex>' digest")
    manifest = read_manifest(dest, owner, storage_options=storage_options)
    if doc.get("dataset_id") != manifest.dataset_id or doc.get("manifest_digest") != manifest.digest:
        raise IntegrityError(f"the proof is for dataset {doc.get('dataset_id')}, not for {dest}")
    entry = _index(manifest, dest, shard_name, storage_options).entries.get(key)
    if entry is None:
        raise IntegrityError(f"sample {key!r} is not in shard {shard_name}")
    # The revealed logo digest: the dataset's logo, or the sample's own (per-image colours).
    layer_sha256 = doc.get("layer_sha256")
    if layer_sha256 is not None and not is_sha256_digest(layer_sha256):
        raise FormatError("malformed proof: layer_sha256 is not a 'sha256:<hex>' digest")
    data = param_bytes(dataset_id=manifest.dataset_id, key=key, placement=placement.to_dict(), logo_sha256=logo_sha256,
                       layer_sha256=layer_sha256)
    opens = entry.commitment == doc.get("commitment") and check_commitment(entry.commitment, data, salt)
    similarity = image_similarity = None
    if suspect is not None:
        m = _sample(dest, manifest, shard_name, key, storage_options)  # members checked against the index
        published = _decode(m[layout.EXT_IMAGE])
        x0, y0, x1, y1 = placement.box
        s, p = _to_size(suspect, published.shape[:2]), _through(published, suspect.shape[:2])
        similarity = _cosine(s[y0:y1, x0:x1].astype(np.float32), p[y0:y1, x0:x1].astype(np.float32))
        image_similarity = _detail_similarity(s, p)
    return ProofCheck(key=key, commitment_opens=bool(opens), box_similarity=similarity,
                      image_similarity=image_similarity)
