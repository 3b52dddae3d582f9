"""The proof file (``*.proof``): canonical JSON, one strict parser for untrusted bytes.

See FORMAT.md Part 4. Every field is checked for type and shape here, so that
:func:`parse_proof` raises only :class:`~medlocker.errors.FormatError` whatever
bytes it is given; nothing downstream sees an unchecked value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..crypto import canonical_json, parse_json_strict
from ..errors import FormatError
from ..shards.payload import is_sha256_digest, sha256_digest
from ..watermark import Placement

__all__ = ["PROOF_FORMAT", "PROOF_VERSION", "ProofDoc", "parse_proof", "suspect_digest"]

PROOF_FORMAT = "medlocker.proof"
PROOF_VERSION = 3
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.:+\-]{1,200}")  # sample keys, shard names, dataset and key ids
_DIGEST_KINDS = ("file", "rgb8")
_SCORES = ("image_similarity_milli", "score_milli", "box_similarity_milli")
_FIELDS = frozenset({
    "format", "version", "dataset_id", "manifest_digest", "owner_key_id", "shard", "key", "placement", "salt",
    "logo_sha256", "commitment", "suspect_sha256", "suspect_digest", "angle_mdeg", "scale_milli", *_SCORES,
})


def suspect_digest(suspect: bytes | np.ndarray) -> tuple[str, str]:
    """``(kind, digest)`` of a suspect: its file bytes (``"file"``), or its decoded pixels (``"rgb8"``).

    The file digest is the one to publish: pixels decoded from a JPEG can differ
    between decoders. ``rgb8`` hashes ``b"rgb8:<H>x<W>:"`` and the uint8 RGB bytes.
    """
    if isinstance(suspect, (bytes, bytearray, memoryview)):
        return "file", sha256_digest(bytes(suspect))
    arr = np.ascontiguousarray(suspect, dtype=np.uint8)
    head = f"rgb8:{arr.shape[0]}x{arr.shape[1]}:".encode()
    return "rgb8", sha256_digest(head + arr.tobytes())


@dataclass(frozen=True)
class ProofDoc:
    """A parsed, type-checked proof document (the values are still claims to check)."""

    dataset_id: str
    manifest_digest: str
    owner_key_id: str
    shard: str
    key: str
    placement: Placement
    salt: bytes
    logo_sha256: str
    commitment: str
    suspect_sha256: str
    suspect_digest: str
    scores: dict[str, int | None]
    angle_mdeg: int
    scale_milli: int
    layer_sha256: str | None = None  # the sample's adversarial layer (``ProtectionConfig.layer``), if any


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _name(doc: dict[str, Any], field: str) -> str:
    v = doc[field]
    if not isinstance(v, str) or not _NAME.fullmatch(v):
        raise FormatError(f"malformed proof: {field} is not a name of letters, digits and _.:+-")
    return v


def parse_proof(data: bytes) -> ProofDoc:
    """Parse untrusted proof bytes.

    Raises:
        FormatError: not UTF-8 JSON, another format or version, a missing, unknown or
            ill-typed field.
    """
    try:
        doc = parse_json_strict(data)
    except ValueError as e:
        raise FormatError(f"not a MedLocker proof: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != PROOF_FORMAT:
        raise FormatError("not a MedLocker proof (no 'format': 'medlocker.proof')")
    if not _is_int(doc.get("version")) or doc["version"] != PROOF_VERSION:
        raise FormatError(f"proof version {doc.get('version')!r} is not supported (this reader knows "
                          f"{PROOF_VERSION}); re-create the proof with this version's 'prove'")
    missing, unknown = _FIELDS - doc.keys(), doc.keys() - _FIELDS - {"layer_sha256"}  # layer: optional
    if missing or unknown:
        raise FormatError(f"malformed proof: missing {sorted(missing)}, unknown {sorted(unknown)}")
    for field in ("salt", "commitment"):
        if not isinstance(doc[field], str) or not _HEX64.fullmatch(doc[field]):
            raise FormatError(f"malformed proof: {field} is not 64 lowercase hex digits")
    for field in ("logo_sha256", "manifest_digest", "suspect_sha256", *({"layer_sha256"} & doc.keys())):
        if not is_sha256_digest(doc[field]):
            raise FormatError(f"malformed proof: {field} is not a 'sha256:<hex>' digest")
    if doc["suspect_digest"] not in _DIGEST_KINDS:
        raise FormatError(f"malformed proof: suspect_digest must be one of {_DIGEST_KINDS}")
    for field in _SCORES:
        if doc[field] is not None and not (_is_int(doc[field]) and -1000 <= doc[field] <= 1000):
            raise FormatError(f"malformed proof: {field} is not an integer in -1000..1000 or null")
    for field in ("angle_mdeg", "scale_milli"):
        if not (_is_int(doc[field]) and abs(doc[field]) <= 10**9):
            raise FormatError(f"malformed proof: {field} is not an integer")
    p = doc["placement"]
    if not isinstance(p, dict) or not all(_is_int(v) and 0 <= v < 2**31 for v in p.values()):
        raise FormatError("malformed proof: placement is not an object of small non-negative integers")
    try:
        placement = Placement.from_dict(p)
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"malformed proof: placement: {e}") from None
    return ProofDoc(
        dataset_id=_name(doc, "dataset_id"), manifest_digest=doc["manifest_digest"],
        owner_key_id=_name(doc, "owner_key_id"), shard=_name(doc, "shard"), key=_name(doc, "key"),
        placement=placement, salt=bytes.fromhex(doc["salt"]), logo_sha256=doc["logo_sha256"],
        commitment=doc["commitment"], suspect_sha256=doc["suspect_sha256"], suspect_digest=doc["suspect_digest"],
        scores={f: doc[f] for f in _SCORES}, angle_mdeg=doc["angle_mdeg"], scale_milli=doc["scale_milli"],
        layer_sha256=doc.get("layer_sha256"),
    )


def proof_bytes(doc: dict[str, Any]) -> bytes:
    """The proof file's bytes (canonical JSON); ``doc`` must parse with :func:`parse_proof`."""
    data = canonical_json(doc)
    parse_proof(data)  # the writer never emits what the reader would refuse
    return data
