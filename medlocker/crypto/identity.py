"""MedLocker identities: an Ed25519 signing key plus an X25519 encryption key.

An identity lives in two files written by :meth:`Identity.save`:

* ``NAME.key`` -- private, mode 0600, optionally sealed under a passphrase
  (scrypt + ChaCha20-Poly1305);
* ``NAME.pub`` -- public, shared with whoever must verify the owner's
  signatures or issue a licence to this key.

Both are versioned JSON documents (see ``FORMAT.md``, Part 2). The key id
is derived from both public keys, and every load re-derives it and rejects a
file whose stated id does not match. Every problem with a key file raises
:class:`~medlocker.errors.KeyFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from medlocker.crypto.encoding import b64decode, b64encode, canonical_json, parse_json_strict
from medlocker.errors import KeyFileError, SignatureError

__all__ = [
    "PublicIdentity",
    "Identity",
    "compute_key_id",
    "passphrase_from_env",
    "KEY_FORMAT",
    "KEY_VERSION",
]

logger = logging.getLogger(__name__)

KEY_FORMAT = "medlocker.identity"
KEY_VERSION = 1
_KEY_ID_DOMAIN = b"medlocker.keyid.v1"
_KEY_ID_PREFIX = "ml1:"

# scrypt cost written by default (~50 ms, 32 MiB) and the range a reader
# accepts, so a hostile key file cannot make loading take minutes or GiBs.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MIN_N, _SCRYPT_MAX_N = 2**10, 2**20
_SCRYPT_MAX_R, _SCRYPT_MAX_P = 32, 4
_SCRYPT_MAX_MEM = 128 * 2**20  # bytes: 128 * n * r
_SALT_LEN = 16
_NONCE_LEN = 12
_RAW_LEN = 64  # ed25519 seed (32) || x25519 private (32)

_PUBLIC_FIELDS = {"format", "version", "kind", "name", "key_id", "ed25519", "x25519"}
_PRIVATE_FIELDS = {"format", "version", "kind", "name", "key_id", "encryption", "keys"}
_ENCRYPTION_FIELDS = {"kdf", "n", "r", "p", "salt"}


def compute_key_id(ed25519_raw: bytes, x25519_raw: bytes) -> str:
    """Key id of a public identity.

    ``"ml1:" + hex(sha256(b"medlocker.keyid.v1" + ed25519_raw + x25519_raw))[:32]``.
    """
    digest = hashlib.sha256(_KEY_ID_DOMAIN + ed25519_raw + x25519_raw).hexdigest()
    return _KEY_ID_PREFIX + digest[:32]


def passphrase_from_env(var: str = "MEDLOCKER_PASSPHRASE") -> bytes | None:
    """Read a key-file passphrase from an environment variable.

    Read only when called (never at import). An unset or empty variable
    means "no passphrase".

    Args:
        var: Name of the environment variable.

    Returns:
        The UTF-8 encoded passphrase, or ``None``.
    """
    value = os.environ.get(var)
    return value.encode("utf-8") if value else None


def _pretty_json(obj: dict[str, Any]) -> bytes:
    # Key files are read by people: sorted keys, indented, trailing newline.
    # canonical_json validates the types first.
    canonical_json(obj)
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _parse_key_document(data: bytes, source: str, kind: str) -> dict[str, Any]:
    """Parse a .pub or .key file and check the fields they share."""
    try:
        doc = parse_json_strict(data)
    except ValueError as exc:
        raise KeyFileError(f"{source}: not a MedLocker key file (invalid JSON: {exc})") from None
    return _check_key_document(doc, source, kind)


def _check_key_document(doc: Any, source: str, kind: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT:
        raise KeyFileError(f"{source}: not a MedLocker key file (format is not {KEY_FORMAT!r})")
    if type(doc.get("version")) is not int or doc["version"] != KEY_VERSION:
        raise KeyFileError(
            f"{source}: unsupported key file version {doc.get('version')!r} "
            f"(this MedLocker reads version {KEY_VERSION}); upgrade MedLocker"
        )
    found = doc.get("kind")
    if found != kind:
        if found == "public":
            hint = "it is a public key file (.pub); give the private .key file"
        elif found == "private":
            hint = "it is a private key file (.key); give the public .pub file"
        else:
            hint = f"unknown kind {found!r}"
        raise KeyFileError(f"{source}: wrong key file type, {kind} expected: {hint}")
    expected = _PUBLIC_FIELDS if kind == "public" else _PRIVATE_FIELDS
    if set(doc) != expected:
        raise KeyFileError(f"{source}: corrupt key file (fields {sorted(doc)} != {sorted(expected)})")
    if not isinstance(doc["name"], str) or not isinstance(doc["key_id"], str):
        raise KeyFileError(f"{source}: corrupt key file (name/key_id must be strings)")
    return doc


_K = TypeVar("_K", "PublicIdentity", "Identity")


def _check_key_id(ident: _K, doc: dict[str, Any], source: str) -> _K:
    """Return ``ident`` if the key id written in the file is the one its keys give."""
    if ident.key_id != doc["key_id"]:
        raise KeyFileError(
            f"{source}: key id {doc['key_id']!r} does not match the keys in the file "
            f"({ident.key_id}); the file was altered"
        )
    return ident


def _b64_field(doc: dict[str, Any], field: str, length: int | None, source: str) -> bytes:
    try:
        raw = b64decode(doc[field])
    except ValueError:
        raise KeyFileError(f"{source}: corrupt key file (field {field!r} is not base64)") from None
    if length is not None and len(raw) != length:
        raise KeyFileError(f"{source}: corrupt key file (field {field!r} has {len(raw)} bytes, not {length})")
    return raw


class PublicIdentity:
    """The public half of an identity: verifies signatures, receives wrapped keys.

    Attributes:
        ed25519: The Ed25519 verification key.
        x25519: The X25519 public key that licences wrap content keys to.
        name: Human label (not authenticated by the key id).
        key_id: ``"ml1:"`` + 32 hex chars derived from both public keys.
    """

    __slots__ = ("ed25519", "x25519", "name", "key_id")

    def __init__(self, ed25519: Ed25519PublicKey, x25519: X25519PublicKey, *, name: str = "") -> None:
        if not isinstance(ed25519, Ed25519PublicKey) or not isinstance(x25519, X25519PublicKey):
            raise TypeError("PublicIdentity needs an Ed25519PublicKey and an X25519PublicKey")
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        self.ed25519 = ed25519
        self.x25519 = x25519
        self.name = name
        self.key_id = compute_key_id(self.ed25519_bytes, self.x25519_bytes)

    @property
    def ed25519_bytes(self) -> bytes:
        """Raw 32-byte Ed25519 public key."""
        return self.ed25519.public_bytes_raw()

    @property
    def x25519_bytes(self) -> bytes:
        """Raw 32-byte X25519 public key."""
        return self.x25519.public_bytes_raw()

    def to_dict(self) -> dict[str, Any]:
        """The ``.pub`` document as a dict (also embedded in licences)."""
        return {
            "format": KEY_FORMAT,
            "version": KEY_VERSION,
            "kind": "public",
            "name": self.name,
            "key_id": self.key_id,
            "ed25519": b64encode(self.ed25519_bytes),
            "x25519": b64encode(self.x25519_bytes),
        }

    def to_bytes(self) -> bytes:
        """The exact content of the ``.pub`` file."""
        return _pretty_json(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<dict>") -> PublicIdentity:
        """Build from a parsed ``.pub`` document, checking every field and the key id.

        Raises:
            KeyFileError: Wrong format, version, kind, fields, key sizes or key id.
        """
        return cls._from_checked(_check_key_document(doc, source, "public"), source)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<bytes>") -> PublicIdentity:
        """Parse the content of a ``.pub`` file.

        Args:
            data: File content.
            source: Name used in error messages (usually the path).

        Raises:
            KeyFileError: On any problem: not JSON, wrong format/version/kind,
                bad keys, or a key id that does not match the keys.
        """
        return cls._from_checked(_parse_key_document(data, source, "public"), source)

    @classmethod
    def _from_checked(cls, doc: dict[str, Any], source: str) -> PublicIdentity:
        ed_raw = _b64_field(doc, "ed25519", 32, source)
        x_raw = _b64_field(doc, "x25519", 32, source)
        try:
            ident = cls(
                Ed25519PublicKey.from_public_bytes(ed_raw),
                X25519PublicKey.from_public_bytes(x_raw),
                name=doc["name"],
            )
        except ValueError:
            raise KeyFileError(f"{source}: corrupt key file (invalid public key)") from None
        return _check_key_id(ident, doc, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublicIdentity:
        """Read a ``.pub`` file.

        Raises:
            KeyFileError: The file cannot be read or is not a valid public key file.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read public key file: {exc.strerror or exc}") from None
        return cls.from_bytes(data, source=str(path))

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check an Ed25519 signature by this identity.

        Raises:
            SignatureError: The signature does not verify.
        """
        try:
            self.ed25519.verify(bytes(signature), bytes(data))
        except InvalidSignature:
            raise SignatureError(f"signature does not verify against key {self.key_id}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicIdentity):
            return NotImplemented
        return (self.ed25519_bytes, self.x25519_bytes) == (other.ed25519_bytes, other.x25519_bytes)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"PublicIdentity(key_id={self.key_id!r}, name={self.name!r})"


def _scrypt_key(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _check_scrypt_params(enc: Any, source: str) -> tuple[bytes, int, int, int]:
    if not isinstance(enc, dict) or set(enc) != _ENCRYPTION_FIELDS or enc.get("kdf") != "scrypt":
        raise KeyFileError(f"{source}: corrupt key file (unknown passphrase encryption)")
    n, r, p = enc["n"], enc["r"], enc["p"]
    if not all(type(v) is int for v in (n, r, p)):
        raise KeyFileError(f"{source}: corrupt key file (scrypt parameters must be integers)")
    if (
        not _SCRYPT_MIN_N <= n <= _SCRYPT_MAX_N
        or n & (n - 1)
        or not 1 <= r <= _SCRYPT_MAX_R
        or not 1 <= p <= _SCRYPT_MAX_P
        or 128 * n * r > _SCRYPT_MAX_MEM
        or n >= 2 ** (16 * r)  # RFC 7914: N < 2^(128 r / 8); OpenSSL refuses the rest (MemoryError)
    ):
        raise KeyFileError(f"{source}: scrypt parameters n={n} r={r} p={p} are outside the accepted range")
    salt = _b64_field(enc, "salt", _SALT_LEN, source)
    return salt, n, r, p


class Identity:
    """A private identity: signs manifests and licences, unwraps content keys.

    Attributes:
        ed25519: The Ed25519 signing key.
        x25519: The X25519 private key.
        name: Human label.
    """

    __slots__ = ("ed25519", "x25519", "name", "_public")

    def __init__(self, ed25519: Ed25519PrivateKey, x25519: X25519PrivateKey, *, name: str = "") -> None:
        if not isinstance(ed25519, Ed25519PrivateKey) or not isinstance(x25519, X25519PrivateKey):
            raise TypeError("Identity needs an Ed25519PrivateKey and an X25519PrivateKey")
        self.ed25519 = ed25519
        self.x25519 = x25519
        self.name = name
        self._public = PublicIdentity(ed25519.public_key(), x25519.public_key(), name=name)

    @classmethod
    def generate(cls, *, name: str = "") -> Identity:
        """A fresh identity from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate(), name=name)

    @classmethod
    def from_private_bytes(cls, ed25519_seed: bytes, x25519_private: bytes, *, name: str = "") -> Identity:
        """Rebuild an identity from its raw 32-byte secrets (golden-vector tests use fixed ones).

        Raises:
            ValueError: A secret is not 32 bytes.
        """
        if len(ed25519_seed) != 32 or len(x25519_private) != 32:
            raise ValueError("ed25519_seed and x25519_private must be 32 bytes each")
        return cls(
            Ed25519PrivateKey.from_private_bytes(bytes(ed25519_seed)),
            X25519PrivateKey.from_private_bytes(bytes(x25519_private)),
            name=name,
        )

    @property
    def public(self) -> PublicIdentity:
        """The matching :class:`PublicIdentity`."""
        return self._public

    @property
    def key_id(self) -> str:
        """Key id of the public half."""
        return self._public.key_id

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``data``."""
        return self.ed25519.sign(bytes(data))

    def _raw(self) -> bytes:
        return self.ed25519.private_bytes_raw() + self.x25519.private_bytes_raw()

    def to_bytes(
        self,
        passphrase: bytes | None = None,
        *,
        scrypt_n: int = SCRYPT_N,
        salt: bytes | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        """The exact content of the ``.key`` file.

        Args:
            passphrase: Seal the secrets under this passphrase (scrypt +
                ChaCha20-Poly1305); ``None`` writes them in the clear.
            scrypt_n: scrypt cost (power of two, 2**10..2**20).
            salt: 16-byte scrypt salt; random by default (tests inject it).
            nonce: 12-byte AEAD nonce; random by default (tests inject it).

        Raises:
            ValueError: Empty passphrase, bad cost, salt or nonce size.
        """
        header: dict[str, Any] = {
            "format": KEY_FORMAT,
            "version": KEY_VERSION,
            "kind": "private",
            "name": self.name,
            "key_id": self.key_id,
            "encryption": None,
        }
        raw = self._raw()
        if passphrase is None:
            return _pretty_json({**header, "keys": b64encode(raw)})
        if not isinstance(passphrase, (bytes, bytearray)) or not passphrase:
            raise ValueError("passphrase must be non-empty bytes (or None for no passphrase)")
        if not _SCRYPT_MIN_N <= scrypt_n <= _SCRYPT_MAX_N or scrypt_n & (scrypt_n - 1):
            raise ValueError(f"scrypt_n must be a power of two in [{_SCRYPT_MIN_N}, {_SCRYPT_MAX_N}]")
        salt = os.urandom(_SALT_LEN) if salt is None else salt
        nonce = os.urandom(_NONCE_LEN) if nonce is None else nonce
        if len(salt) != _SALT_LEN or len(nonce) != _NONCE_LEN:
            raise ValueError(f"salt must be {_SALT_LEN} bytes and nonce {_NONCE_LEN} bytes")
        header["encryption"] = {"kdf": "scrypt", "n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64encode(salt)}
        key = _scrypt_key(bytes(passphrase), salt, scrypt_n, SCRYPT_R, SCRYPT_P)
        # The header is associated data: editing name, key id or cost breaks the seal.
        blob = nonce + ChaCha20Poly1305(key).encrypt(nonce, raw, canonical_json(header))
        return _pretty_json({**header, "keys": b64encode(blob)})

    @classmethod
    def from_bytes(cls, data: bytes, passphrase: bytes | None = None, *, source: str = "<bytes>") -> Identity:
        """Parse the content of a ``.key`` file.

        Args:
            data: File content.
            passphrase: Needed when the file is passphrase-protected; ignored otherwise.
            source: Name used in error messages (usually the path).

        Raises:
            KeyFileError: Corrupt file, wrong type (a ``.pub``), unknown version,
                missing or wrong passphrase, or key id mismatch.
        """
        doc = _parse_key_document(data, source, "private")
        enc = doc["encryption"]
        if enc is None:
            raw = _b64_field(doc, "keys", _RAW_LEN, source)
        else:
            salt, n, r, p = _check_scrypt_params(enc, source)
            if not passphrase:
                raise KeyFileError(
                    f"{source}: key file is passphrase-protected; set MEDLOCKER_PASSPHRASE or pass the passphrase"
                )
            blob = _b64_field(doc, "keys", _NONCE_LEN + _RAW_LEN + 16, source)
            header = {k: doc[k] for k in _PRIVATE_FIELDS - {"keys"}}
            try:
                key = _scrypt_key(bytes(passphrase), salt, n, r, p)
                raw = ChaCha20Poly1305(key).decrypt(blob[:_NONCE_LEN], blob[_NONCE_LEN:], canonical_json(header))
            except InvalidTag:
                raise KeyFileError(f"{source}: wrong passphrase, or the key file is corrupt") from None
        try:
            ident = cls.from_private_bytes(raw[:32], raw[32:], name=doc["name"])
        except ValueError:
            raise KeyFileError(f"{source}: corrupt key file (invalid private key)") from None
        return _check_key_id(ident, doc, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, passphrase: bytes | None = None) -> Identity:
        """Read a ``.key`` file (warns through ``logging`` if others can read it).

        Raises:
            KeyFileError: See :meth:`from_bytes`; also when the file cannot be read.
        """
        try:
            with open(path, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                data = fh.read()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read private key file: {exc.strerror or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("%s: private key file is accessible by other users; chmod 600 it", path)
        return cls.from_bytes(data, passphrase, source=str(path))

    def save(
        self,
        stem: str | os.PathLike[str],
        *,
        passphrase: bytes | None = None,
        overwrite: bool = False,
    ) -> tuple[Path, Path]:
        """Write ``stem.key`` (mode 0600) and ``stem.pub``.

        Args:
            stem: Path without extension; ``.key``/``.pub`` are appended.
            passphrase: Protect the private file with this passphrase.
            overwrite: Replace existing files instead of refusing.

        Returns:
            ``(key_path, pub_path)``.

        Raises:
            FileExistsError: A file exists and ``overwrite`` is false.
            ValueError: Empty passphrase.
        """
        key_path, pub_path = Path(f"{os.fspath(stem)}.key"), Path(f"{os.fspath(stem)}.pub")
        if not overwrite:
            for path in (key_path, pub_path):
                if path.exists():
                    raise FileExistsError(f"{path} already exists; pass overwrite=True (keygen --force) to replace it")
        key_bytes = self.to_bytes(passphrase)
        _write_file(key_path, key_bytes, 0o600, overwrite)
        _write_file(pub_path, self.public.to_bytes(), 0o644, overwrite)
        return key_path, pub_path

    def __repr__(self) -> str:
        return f"Identity(key_id={self.key_id!r}, name={self.name!r})"


def _write_file(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # exact mode whatever the umask or the old file's mode
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
    finally:
        if fd != -1:
            os.close(fd)
