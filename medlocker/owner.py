"""The owner's secrets folder: what a packing run must keep and never publish.

Layout (one folder per packing run, never inside the published location)::

    run.json          dataset id, owner key id, creation time, search seed, and the
                      run's content key and run secret, both wrapped to the owner's
                      own X25519 key (never in the clear)
    logo.png          the exact logo the run stamped (the learned one, if any)
    params.jsonl      per sample: placement, salt and commitment, search outcome
    rejects.jsonl     inputs that could not be protected, with the reason
    progress/         one JSON per finished shard (``shard-NNNNNN.json``), for ``--resume``

Every name above is built here (:data:`RUN_FILE` ... :func:`progress_name`), so the
packer, the proof tools and the tests never type a secrets file name by hand.

The plain parameter list in ``params.jsonl`` opens the salted commitments that
the signed index files publish: it is what proves a leaked image came from this
run (``tools/verify.py prove``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .crypto import Identity, canonical_json, unwrap_key, wrap_key
from .errors import FormatError
from .shards.payload import sha256_digest
from .util import atomic_open, atomic_write, parse_rfc3339, rfc3339

__all__ = [
    "OwnerSecrets",
    "ParamRecord",
    "make_secrets_folder",
    "new_run",
    "param_bytes",
    "png_bytes",
    "progress_name",
    "read_jsonl",
    "write_jsonl",
]

FORMAT = "medlocker.owner-secrets"
VERSION = 1
RUN_FILE = "run.json"
LOGO_FILE = "logo.png"
PARAMS_FILE = "params.jsonl"
REJECTS_FILE = "rejects.jsonl"
PROGRESS_DIR = "progress"


def progress_name(shard: int) -> str:
    """File name, inside :data:`PROGRESS_DIR`, of shard ``shard``'s checkpoint."""
    if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0:
        raise ValueError(f"shard number must be a non-negative int, got {shard!r}")
    return f"shard-{shard:06d}.json"


def make_secrets_folder(root: str | os.PathLike[str]) -> Path:
    """Create the secrets folder layout (owner-only folder, :data:`PROGRESS_DIR` inside)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    (root / PROGRESS_DIR).mkdir(exist_ok=True)
    return root


def _context(dataset_id: str, what: str) -> bytes:
    return f"medlocker.owner.v1/{what}/{dataset_id}".encode()


def param_bytes(*, dataset_id: str, key: str, placement: dict[str, int], logo_sha256: str,
                layer_sha256: str | None = None) -> bytes:
    """The exact bytes a sample's salted commitment is computed over (``layer_sha256``: the digest of
    the sample's adversarial layer, ``Layer.to_bytes``; absent from the bytes when it has none)."""
    doc = {"dataset_id": dataset_id, "key": key, "logo_sha256": logo_sha256, "placement": placement}
    if layer_sha256 is not None:
        doc["layer_sha256"] = layer_sha256
    return canonical_json(doc)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 pixels as PNG, deterministically (fixed zlib level, no metadata)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


@dataclass(frozen=True)
class ParamRecord:
    """One sample's watermark parameters as the owner keeps them."""

    key: str
    label: int
    shard: int
    placement: dict[str, int] | None
    salt: str
    commitment: str
    success: bool
    queries: int
    margin: float
    status: str
    clean_correct: bool
    logo_png: str | None = None  # base64 PNG of this sample's own logo (per-image colours); None: the run's logo
    layer: str | None = None  # base64 of this sample's adversarial layer (Layer.to_bytes); None: no layer

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for optional in ("logo_png", "layer"):  # runs without them keep the original record layout
            if d[optional] is None:
                del d[optional]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParamRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d or k not in ("logo_png", "layer")})

    def layer_sha256(self) -> str | None:
        """The digest of this sample's layer bytes, which its commitment binds; None without a layer."""
        return None if self.layer is None else sha256_digest(base64.b64decode(self.layer))

    def logo(self) -> np.ndarray | None:
        """This sample's own RGBA logo, or None when it carries the run's logo."""
        if self.logo_png is None:
            return None
        with Image.open(io.BytesIO(base64.b64decode(self.logo_png))) as im:
            return np.asarray(im.convert("RGBA"))

    def logo_sha256(self, run_logo_sha256: str) -> str:
        """The logo digest this sample's commitment binds: its own logo's PNG, else the run's."""
        if self.logo_png is None:
            return run_logo_sha256
        return sha256_digest(base64.b64decode(self.logo_png))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write JSON lines atomically (temp file + rename)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise FormatError(f"{path}:{n}: not valid JSON ({e.msg})") from None


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


@dataclass
class OwnerSecrets:
    """An opened secrets folder (the keys unwrapped with the owner's identity)."""

    root: Path
    dataset_id: str
    owner_key_id: str
    created: datetime
    search_seed: int
    content_key: bytes = field(repr=False)
    run_secret: bytes = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    # -- derived per-sample randomness, reproducible for --resume --------------
    def sample_bytes(self, what: str, key: str, n: int) -> bytes:
        """Per-sample randomness derived from the run secret (salts, nonces, seeds)."""
        return hmac.new(self.run_secret, f"{what}/{key}".encode(), hashlib.sha256).digest()[:n]

    def sample_seed(self, key: str) -> int:
        return int.from_bytes(self.sample_bytes("seed", key, 8), "big") >> 1

    # -- files ------------------------------------------------------------------
    @property
    def progress_dir(self) -> Path:
        return self.root / PROGRESS_DIR

    def progress_file(self, shard: int) -> Path:
        """Checkpoint of shard ``shard`` (written once the shard is written)."""
        return self.progress_dir / progress_name(shard)

    @property
    def params_path(self) -> Path:
        return self.root / PARAMS_FILE

    @property
    def rejects_path(self) -> Path:
        return self.root / REJECTS_FILE

    @property
    def logo_path(self) -> Path:
        return self.root / LOGO_FILE

    def load_logo(self) -> np.ndarray:
        with Image.open(self.logo_path) as im:
            return np.asarray(im.convert("RGBA")).copy()

    def save_logo(self, logo: np.ndarray) -> str:
        data = png_bytes(logo)
        atomic_write(self.logo_path, data)
        return sha256_digest(data)

    def params(self) -> dict[str, ParamRecord]:
        path = self.params_path
        if not path.exists():
            raise FormatError(f"{path} is missing: the packing run did not finish (rerun it with --resume)")
        return {r["key"]: ParamRecord.from_dict(r) for r in read_jsonl(path)}

    @classmethod
    def load(cls, root: str | os.PathLike[str], owner: Identity) -> OwnerSecrets:
        """Open a secrets folder with the owner's private identity."""
        root = Path(root)
        path = root / RUN_FILE
        if not path.exists():
            raise FormatError(f"{path} not found: {root} is not a MedLocker secrets folder")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FormatError(f"{path}: unreadable ({e})") from None
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise FormatError(f"{path}: unknown format {info.get('format')!r} version {info.get('version')!r}")
        if info["owner_key_id"] != owner.key_id:
            raise FormatError(
                f"{path} belongs to owner key {info['owner_key_id']}, not {owner.key_id}: pass the right --owner key"
            )
        ds = info["dataset_id"]
        return cls(
            root=root,
            dataset_id=ds,
            owner_key_id=info["owner_key_id"],
            created=parse_rfc3339(info["created"]),
            search_seed=int(info["search_seed"]),
            content_key=unwrap_key(base64.b64decode(info["content_key"]), owner, context=_context(ds, "content")),
            run_secret=unwrap_key(base64.b64decode(info["run_secret"]), owner, context=_context(ds, "run")),
            info=info,
        )


def new_run(
    root: str | os.PathLike[str],
    owner: Identity,
    *,
    created: datetime,
    settings: dict[str, Any],
    test_seed: int | None = None,
) -> OwnerSecrets:
    """Create a secrets folder for a new packing run, drawing fresh randomness.

    ``test_seed`` derives the dataset id and keys from a number instead of the OS
    RNG. It exists only so tests can compare an interrupted and an uninterrupted
    run byte for byte; a dataset packed with it has no secrets worth the name.
    """
    root = Path(root)
    if (root / RUN_FILE).exists():
        raise FileExistsError(
            f"{root / RUN_FILE} exists: this secrets folder already holds a run. "
            "Pass --resume to continue it, or choose a new --secrets folder."
        )
    make_secrets_folder(root)

    def draw(what: str, n: int) -> bytes:
        if test_seed is None:
            return os.urandom(n)
        return hashlib.sha256(f"medlocker.INSECURE-test-seed/{test_seed}/{what}".encode()).digest()[:n]

    dataset_id = "mld-" + draw("dataset", 16).hex()
    content_key, run_secret = draw("content", 32), draw("run", 32)
    seed = int.from_bytes(draw("seed", 8), "big") >> 1
    info = {
        "format": FORMAT,
        "version": VERSION,
        "dataset_id": dataset_id,
        "owner_key_id": owner.key_id,
        "created": rfc3339(created),
        "search_seed": seed,
        "content_key": base64.b64encode(
            wrap_key(content_key, owner.public, context=_context(dataset_id, "content"))
        ).decode(),
        "run_secret": base64.b64encode(
            wrap_key(run_secret, owner.public, context=_context(dataset_id, "run"))
        ).decode(),
        "insecure_test_seed": test_seed is not None,
        "settings": settings,
    }
    _write_json(root / RUN_FILE, info)
    os.chmod(root / RUN_FILE, 0o600)
    return OwnerSecrets.load(root, owner)
