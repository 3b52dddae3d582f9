"""``prove`` (the owner) and ``check_proof`` (anyone): see the package docstring."""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..crypto import PublicIdentity, check_commitment, open_payload
from ..errors import BadInputError, FormatError, IntegrityError
from ..owner import OwnerSecrets, param_bytes
from ..shards import fs as _fs
from ..shards import layout, read_manifest
from ..shards.index import parse_index
from ..shards.manifest import Manifest
from ..shards.payload import apply_restoration, sha256_digest
from ..shards.reader import iter_samples
from ..watermark import Placement
from .document import (
    PROOF_FORMAT,
    PROOF_VERSION,
    parse_proof,
    proof_bytes,
    suspect_digest,
)
from .match import THRESHOLDS, Scores, score
from .register import Registration, SuspectTemplates, coarse_match, register

__all__ = ["Proof", "ProofCheck", "check_proof", "decode_suspect", "prove"]

_MAX_SUSPECT_PIXELS = 64 * 2**20
_MIN_SIDE = 16


def _milli(v: float | None) -> int | None:
    return None if v is None else max(-1000, min(1000, round(v * 1000)))


def _at_least(v: float | None, t: float) -> bool:
    return v is not None and v >= t


@dataclass(frozen=True)
class Proof:
    """What ``prove`` found; ``to_bytes`` is the proof file (canonical JSON)."""

    doc: dict[str, Any]

    def _get(self, field: str) -> float | None:
        v = self.doc[field]
        return None if v is None else v / 1000

    @property
    def score(self) -> float | None:
        """Watermark score inside the logo box (``None``: the box is cut off in the suspect)."""
        return self._get("score_milli")

    @property
    def image_similarity(self) -> float:
        return self._get("image_similarity_milli") or 0.0

    @property
    def box_similarity(self) -> float | None:
        return self._get("box_similarity_milli")

    @property
    def matched(self) -> bool:
        """The suspect is this sample (fine detail) and carries its watermark (the box)."""
        return self.image_similarity >= THRESHOLDS.image and _at_least(self.score, THRESHOLDS.watermark)

    def summary(self) -> str:
        """The verdict in words (the verify tool prints this)."""
        d = self.doc
        fmt = lambda v: "n/a (the logo box is cut off)" if v is None else f"{v:.3f}"
        verdict = "MATCH" if self.matched else "NO MATCH"
        return (f"{verdict}: sample {d['key']} of {d['shard']} (registered at {d['angle_mdeg'] / 1000:+.2f} deg, "
                f"scale {d['scale_milli'] / 1000:.3f}; image detail similarity {self.image_similarity:.3f} "
                f"(>= {THRESHOLDS.image}), watermark score {fmt(self.score)} (>= {THRESHOLDS.watermark}))")

    def to_bytes(self) -> bytes:
        return proof_bytes(self.doc)


@dataclass(frozen=True)
class ProofCheck:
    """The outcome of :func:`check_proof`.

    Without a suspect image only the commitment is checked: :attr:`matched` is then
    always False, because nothing about any image was shown (see :meth:`statement`).
    """

    key: str
    shard: str
    dataset_id: str
    commitment_opens: bool
    suspect_checked: bool = False
    suspect_digest_matches: bool | None = None  # the image given is the one the proof was made for
    box_similarity: float | None = None  # suspect vs published detail in the logo box
    image_similarity: float | None = None  # suspect vs published detail over the image
    angle: float | None = None  # the registration found: degrees, suspect px per published px
    scale: float | None = None

    @property
    def matched(self) -> bool:
        """Commitment opens, and the given suspect is the image the proof names and is this sample."""
        return (self.commitment_opens and self.suspect_checked and bool(self.suspect_digest_matches)
                and _at_least(self.image_similarity, THRESHOLDS.image)
                and _at_least(self.box_similarity, THRESHOLDS.box))

    @property
    def ok(self) -> bool:
        """Alias of :attr:`matched` (False without a suspect image)."""
        return self.matched

    def statement(self) -> str:
        """What was checked and what it shows, in words (the verify tool prints this)."""
        sample = f"sample {self.key} of shard {self.shard} of dataset {self.dataset_id}"
        if not self.commitment_opens:
            return (f"FAILED: the revealed parameters and salt do NOT open the signed commitment of {sample}; "
                    "the proof does not hold")
        lines = [(f"commitment: the revealed watermark parameters and salt open the owner-signed commitment of "
                  f"{sample}, so they are that sample's parameters as signed at packing time.")]
        if not self.suspect_checked:
            lines.append("NOT SHOWN: that any particular image is that sample; no image was checked and no "
                         "match is claimed. Give the suspect image (--image) to check it.")
            return "\n".join(lines)
        if not self.suspect_digest_matches:
            lines.append("FAILED: the image given is not the image this proof was made for "
                         "(its SHA-256 differs from suspect_sha256); no match")
            return "\n".join(lines)
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        lines.append(f"image: registered at {self.angle:+.2f} deg, scale {self.scale:.3f}; detail similarity "
                     f"{fmt(self.image_similarity)} (>= {THRESHOLDS.image}), in the logo box "
                     f"{fmt(self.box_similarity)} (>= {THRESHOLDS.box})")
        lines.append(f"MATCH: the image is {sample}" if self.matched
                     else "NO MATCH: the image is not shown to be that sample")
        return "\n".join(lines)


def decode_suspect(data: bytes, name: str = "suspect image") -> np.ndarray:
    """Decode untrusted image bytes to uint8 RGB, or raise :class:`BadInputError` naming ``name``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > _MAX_SUSPECT_PIXELS or min(im.width, im.height) < _MIN_SIDE:
                raise BadInputError(f"{name}: {im.width}x{im.height} px is not a size a leaked image can be "
                                    f"matched at (each side >= {_MIN_SIDE} px, at most {_MAX_SUSPECT_PIXELS} px)")
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise BadInputError(f"{name}: cannot decode the image ({type(e).__name__}: {e})") from None


def _as_image(suspect: bytes | np.ndarray) -> np.ndarray:
    if isinstance(suspect, (bytes, bytearray, memoryview)):
        return decode_suspect(bytes(suspect))
    arr = np.asarray(suspect)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < _MIN_SIDE:
        raise ValueError(f"suspect must be uint8 [H, W, 3] with sides >= {_MIN_SIDE} or encoded image bytes, "
                         f"got {arr.dtype} {arr.shape}")
    return arr


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _sample(dest: str, manifest: Manifest, shard_name: str, key: str, storage_options: dict | None) -> dict[str, Any]:
    for sample in iter_samples(dest, manifest, shards=[shard_name], storage_options=storage_options):
        if sample["__key__"] == key:
            return sample
    raise IntegrityError(f"sample {key!r} is not in shard {shard_name}")


def _index(manifest: Manifest, dest: str, shard_name: str, storage_options: dict | None):
    info = next((s for s in manifest.shards if s.name == shard_name), None)
    if info is None:
        raise IntegrityError(f"shard {shard_name!r} is not in the manifest of {dest}")
    data = _fs.read_bytes(_fs.join(dest, info.index), storage_options, max_size=256 * 2**20)
    return parse_index(data, expected_sha256=info.index_sha256, shard=info.name, dataset_id=manifest.dataset_id)


def _candidates(dest: str, manifest: Manifest, suspect: np.ndarray, storage_options: dict | None,
                n: int) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
    """The ``n`` published samples whose coarse registration with ``suspect`` is best, best first."""
    templates: dict[tuple[int, int], SuspectTemplates] = {}
    top: list[tuple[float, int, str, dict[str, Any]]] = []
    seen = 0
    for shard in manifest.shards:
        for sample in iter_samples(dest, manifest, shards=[shard.name], storage_options=storage_options):
            published = _decode(sample[layout.EXT_IMAGE])
            hw = published.shape[:2]
            if hw not in templates:
                templates[hw] = SuspectTemplates(suspect, hw)
            ncc, _ = coarse_match(templates[hw], published)
            seen += 1
            item = (ncc, -seen, shard.name, sample)  # ties: the earlier sample first
            (heapq.heappush if len(top) < n else heapq.heappushpop)(top, item)
    for _, _, shard_name, sample in sorted(top, key=lambda t: (t[0], t[1]), reverse=True):
        yield shard_name, sample, _decode(sample[layout.EXT_IMAGE])


def _named(dest: str, manifest: Manifest, key: str, storage_options: dict | None):
    for shard in manifest.shards:
        for sample in iter_samples(dest, manifest, shards=[shard.name], storage_options=storage_options):
            if sample["__key__"] == key:
                return [(shard.name, sample, _decode(sample[layout.EXT_IMAGE]))]
    raise ValueError(f"sample {key!r} is not in {dest}")


def prove(
    suspect: bytes | np.ndarray,
    *,
    secrets: OwnerSecrets,
    dest: str,
    owner: PublicIdentity,
    storage_options: dict[str, Any] | None = None,
    candidates: int = 5,
    key: str | None = None,
) -> Proof:
    """Find the published sample ``suspect`` derives from and build a proof.

    Args:
        suspect: the suspect image file's bytes (its digest goes into the proof), or
            uint8 ``[H, W, 3]`` pixels.
        candidates: how many published samples, ranked by coarse registration, are
            registered finely and scored.
        key: score the suspect against this sample only (the owner claims it is that
            sample) instead of searching the dataset.

    Raises:
        FormatError: the dataset has no samples, or the secrets lack a sample's parameters.
        BadInputError: ``suspect`` bytes are not a decodable image.
    """
    kind, digest = suspect_digest(suspect)
    image = _as_image(suspect)
    manifest = read_manifest(dest, owner, storage_options=storage_options)
    if manifest.dataset_id != secrets.dataset_id:
        raise FormatError(f"{secrets.root} holds the secrets of {secrets.dataset_id}, not of {dest}")
    params = secrets.params()
    best: tuple[Scores, Registration, str, str] | None = None
    found = (_candidates(dest, manifest, image, storage_options, candidates) if key is None
             else _named(dest, manifest, key, storage_options))
    for shard_name, m, published in found:
        key = m["__key__"]
        if key not in params or params[key].placement is None:
            raise FormatError(f"{secrets.root} has no watermark parameters for sample {key}")
        plain = open_payload(
            secrets.content_key, m[layout.EXT_SEAL], dataset_id=secrets.dataset_id, sample_key=key,
            watermarked_digest=sha256_digest(m[layout.EXT_IMAGE]),
        )
        original = apply_restoration(published, plain)
        reg = register(SuspectTemplates(image, published.shape[:2]), published)
        s = score(image, published, reg, Placement.from_dict(params[key].placement).box, original)
        if best is None or s.image > best[0].image:  # which sample it is: fine detail, not the box
            best = (s, reg, key, shard_name)
    if best is None:
        raise FormatError(f"{dest} holds no samples")
    s, reg, key, shard_name = best
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
        "score_milli": _milli(s.watermark),
        "image_similarity_milli": _milli(s.image),
        "box_similarity_milli": _milli(s.box),
        "angle_mdeg": round(reg.angle * 1000),
        "scale_milli": round(reg.scale * 1000),
        "suspect_digest": kind,
        "suspect_sha256": digest,
    }
    return Proof(doc)


def check_proof(
    proof: bytes,
    *,
    dest: str,
    owner: PublicIdentity,
    suspect: bytes | np.ndarray | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ProofCheck:
    """Check a proof with only the owner's public key and the published dataset.

    Without ``suspect`` this shows only that the revealed parameters open the signed
    commitment of the named sample; it never reports a match. With ``suspect`` (the
    image file's bytes, or pixels if the proof was made from pixels) its digest is
    checked against ``suspect_sha256``, then it is registered against the published
    sample and compared over the image and inside the revealed logo box.

    Raises:
        FormatError: malformed proof; SignatureError: manifest not signed by ``owner``;
        IntegrityError: the proof is for another dataset, or names a shard or sample it lacks;
        BadInputError: ``suspect`` bytes are not a decodable image.
    """
    doc = parse_proof(proof)
    manifest = read_manifest(dest, owner, storage_options=storage_options)
    if doc.dataset_id != manifest.dataset_id or doc.manifest_digest != manifest.digest:
        raise IntegrityError(f"the proof is for dataset {doc.dataset_id}, not for {dest}")
    entry = _index(manifest, dest, doc.shard, storage_options).entries.get(doc.key)
    if entry is None:
        raise IntegrityError(f"sample {doc.key!r} is not in shard {doc.shard} of {dest}")
    data = param_bytes(dataset_id=manifest.dataset_id, key=doc.key, placement=doc.placement.to_dict(),
                       logo_sha256=doc.logo_sha256, layer_sha256=doc.layer_sha256)
    opens = entry.commitment == doc.commitment and check_commitment(entry.commitment, data, doc.salt)
    result = ProofCheck(key=doc.key, shard=doc.shard, dataset_id=doc.dataset_id, commitment_opens=bool(opens))
    if suspect is None:
        return result
    kind, digest = suspect_digest(suspect)
    if kind != doc.suspect_digest or digest != doc.suspect_sha256:
        return replace(result, suspect_checked=True, suspect_digest_matches=False)
    image = _as_image(suspect)
    published = _decode(_sample(dest, manifest, doc.shard, doc.key, storage_options)[layout.EXT_IMAGE])
    reg = register(SuspectTemplates(image, published.shape[:2]), published)
    s = score(image, published, reg, doc.placement.box)
    return replace(result, suspect_checked=True, suspect_digest_matches=True, box_similarity=s.box,
                   image_similarity=s.image, angle=reg.angle, scale=reg.scale)
