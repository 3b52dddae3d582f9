"""Identities and key files: golden bytes, round trips, every way a key file is refused."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
from pathlib import Path

import pytest

from medlocker.crypto.identity import Identity, PublicIdentity, compute_key_id, passphrase_from_env
from medlocker.errors import KeyFileError, SignatureError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "crypto-v1.json").read_text())
IN, OUT = GOLDEN["inputs"], GOLDEN["outputs"]
PASSPHRASE = IN["key_passphrase"].encode()


def golden_identity(who: str) -> Identity:
    d = IN[who]
    return Identity.from_private_bytes(
        bytes.fromhex(d["ed25519_seed"]), bytes.fromhex(d["x25519_private"]), name=d["name"]
    )


@pytest.fixture(scope="module")
def owner() -> Identity:
    return golden_identity("owner")


# --- golden vectors ------------------------------------------------------------------


def test_key_id_formula(owner):
    pub = owner.public
    digest = hashlib.sha256(b"medlocker.keyid.v1" + pub.ed25519_bytes + pub.x25519_bytes).hexdigest()
    assert owner.key_id == "ml1:" + digest[:32] == "ml1:0df6ba698bb412d65970cc8c5b68b89f"
    assert compute_key_id(pub.ed25519_bytes, pub.x25519_bytes) == owner.key_id


def test_golden_pub_bytes(owner):
    assert owner.public.to_bytes() == OUT["owner_pub"].encode()
    assert PublicIdentity.from_bytes(OUT["owner_pub"].encode()) == owner.public


def test_golden_key_bytes(owner):
    assert owner.to_bytes() == OUT["owner_key"].encode()
    loaded = Identity.from_bytes(OUT["owner_key"].encode())
    assert loaded.key_id == owner.key_id and loaded.name == "golden-owner"
    assert loaded.sign(b"x") == owner.sign(b"x")  # same secret keys


def test_golden_encrypted_key_bytes(owner):
    data = owner.to_bytes(
        PASSPHRASE,
        scrypt_n=IN["key_scrypt_n"],
        salt=bytes.fromhex(IN["key_salt"]),
        nonce=bytes.fromhex(IN["key_nonce"]),
    )
    assert data == OUT["owner_key_encrypted"].encode()
    assert Identity.from_bytes(data, PASSPHRASE).key_id == owner.key_id


# --- round trips and files -----------------------------------------------------------


def test_save_load_round_trip_and_mode(tmp_path):
    ident = Identity.generate(name="Clinic A")
    key_path, pub_path = ident.save(tmp_path / "clinic.v2")
    assert (key_path.name, pub_path.name) == ("clinic.v2.key", "clinic.v2.pub")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    loaded = Identity.load(key_path)
    assert loaded.key_id == ident.key_id and loaded.name == "Clinic A"
    assert PublicIdentity.load(pub_path) == ident.public
    sig = loaded.sign(b"data")
    PublicIdentity.load(pub_path).verify(sig, b"data")


def test_save_refuses_overwrite_then_forces_mode_0600(tmp_path):
    stem = tmp_path / "k"
    Identity.generate().save(stem)
    with pytest.raises(FileExistsError, match="already exists"):
        Identity.generate().save(stem)
    os.chmod(f"{stem}.key", 0o644)
    other = Identity.generate()
    key_path, _ = other.save(stem, overwrite=True)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert Identity.load(key_path).key_id == other.key_id


def test_encrypted_round_trip(tmp_path):
    ident = Identity.generate()
    key_path, _ = ident.save(tmp_path / "enc", passphrase=b"s3cret")
    assert b'encryption": null' not in key_path.read_bytes()
    assert Identity.load(key_path, passphrase=b"s3cret").key_id == ident.key_id


def test_sign_verify(owner):
    sig = owner.sign(b"hello")
    owner.public.verify(sig, b"hello")
    with pytest.raises(SignatureError):
        owner.public.verify(sig, b"hellO")
    with pytest.raises(SignatureError):
        owner.public.verify(sig[:-1], b"hello")
    with pytest.raises(SignatureError):
        golden_identity("licensee").public.verify(sig, b"hello")


def test_passphrase_from_env(monkeypatch):
    monkeypatch.delenv("ML_TEST_PW", raising=False)
    assert passphrase_from_env("ML_TEST_PW") is None
    monkeypatch.setenv("ML_TEST_PW", "")
    assert passphrase_from_env("ML_TEST_PW") is None
    monkeypatch.setenv("ML_TEST_PW", "pässword")
    assert passphrase_from_env("ML_TEST_PW") == "pässword".encode()


# --- refusals ------------------------------------------------------------------------


def test_wrong_and_missing_passphrase():
    data = OUT["owner_key_encrypted"].encode()
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        Identity.from_bytes(data, b"wrong", source="owner.key")
    with pytest.raises(KeyFileError, match="passphrase-protected"):
        Identity.from_bytes(data, None, source="owner.key")


def test_wrong_type(tmp_path, owner):
    key_path, pub_path = owner.save(tmp_path / "o")
    with pytest.raises(KeyFileError, match="public key file"):
        Identity.load(pub_path)
    with pytest.raises(KeyFileError, match="private key file"):
        PublicIdentity.load(key_path)


def _edit(text: str, **changes) -> bytes:
    doc = json.loads(text)
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[]",
        b'{"format": "medlocker.identity"}',
        _edit(OUT["owner_key"], version=2),
        _edit(OUT["owner_key"], version=True),
        _edit(OUT["owner_key"], format="other"),
        _edit(OUT["owner_key"], keys="!!notbase64"),
        _edit(OUT["owner_key"], keys="AAEC"),
        _edit(OUT["owner_key"], key_id="ml1:00000000000000000000000000000000"),
        _edit(OUT["owner_key"], extra=1),
        _edit(OUT["owner_key"], name=5),
        _edit(OUT["owner_key_encrypted"], name="renamed"),  # header is AEAD associated data
        _edit(
            OUT["owner_key_encrypted"],
            encryption={"kdf": "scrypt", "n": 2**30, "r": 8, "p": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="},
        ),
        # Within the memory cap (128 * n * r = 128 MiB) but N >= 2^(16 r): OpenSSL raised MemoryError.
        _edit(
            OUT["owner_key_encrypted"],
            encryption={"kdf": "scrypt", "n": 2**20, "r": 1, "p": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="},
        ),
        _edit(
            OUT["owner_key_encrypted"],
            encryption={"kdf": "scrypt", "n": 2**16, "r": 1, "p": 4, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="},
        ),
        _edit(
            OUT["owner_key_encrypted"],
            encryption={"kdf": "scrypt", "n": 2**15, "r": True, "p": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="},
        ),
        _edit(
            OUT["owner_key_encrypted"],
            encryption={"kdf": "argon2", "n": 2**15, "r": 8, "p": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="},
        ),
        OUT["owner_key"].encode().replace(b'"kind": "private"', b'"kind": "private", "kind": "private"'),
    ],
)
def test_corrupt_private_key_file(data):
    with pytest.raises(KeyFileError, match="k.key"):
        Identity.from_bytes(data, PASSPHRASE, source="k.key")


@pytest.mark.parametrize("n, r, p", [(2**15, 1, 1), (2**10, 32, 4), (2**12, 2, 4), (2**14, 8, 2)])
def test_accepted_scrypt_parameters_derive(n, r, p):
    """Every accepted cost runs (small ones here): the file is refused for its passphrase, not a MemoryError."""
    data = _edit(OUT["owner_key_encrypted"],
                 encryption={"kdf": "scrypt", "n": n, "r": r, "p": p, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="})
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        Identity.from_bytes(data, PASSPHRASE, source="k.key")


@pytest.mark.parametrize(
    "changes",
    [
        {"ed25519": "AAAA"},
        {"x25519": 3},
        {"key_id": "ml1:0df6ba698bb412d65970cc8c5b68b89e"},
        {"version": 0},
        {"kind": "secret"},
    ],
)
def test_corrupt_public_key_file(changes):
    with pytest.raises(KeyFileError, match="o.pub"):
        PublicIdentity.from_bytes(_edit(OUT["owner_pub"], **changes), source="o.pub")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(KeyFileError, match="nope.key"):
        Identity.load(tmp_path / "nope.key")
    with pytest.raises(KeyFileError, match="nope.pub"):
        PublicIdentity.load(tmp_path / "nope.pub")


def test_repr_has_no_secret(owner):
    assert "key_id" in repr(owner) and IN["owner"]["ed25519_seed"] not in repr(owner)


# --- tools/keygen.py -----------------------------------------------------------------


@pytest.fixture(scope="module")
def keygen():
    path = Path(__file__).resolve().parents[1] / "tools" / "keygen.py"
    spec = importlib.util.spec_from_file_location("medlocker_tool_keygen", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keygen_cli(keygen, tmp_path, capsys, monkeypatch):
    stem = tmp_path / "alice"
    assert keygen.main(["--out", str(stem), "--name", "Alice"]) == 0
    key_id = capsys.readouterr().out.strip()
    assert Identity.load(f"{stem}.key").key_id == key_id
    assert stat.S_IMODE(os.stat(f"{stem}.key").st_mode) == 0o600

    assert keygen.main(["--out", str(stem)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keygen: error:") and err.count("\n") == 1 and "--force" in err

    monkeypatch.setenv("ML_KEYGEN_PW", "pw")
    assert keygen.main(["--out", str(stem), "--force", "--passphrase-env", "ML_KEYGEN_PW"]) == 0
    new_id = capsys.readouterr().out.strip()
    assert new_id != key_id
    assert Identity.load(f"{stem}.key", passphrase=b"pw").key_id == new_id
    with pytest.raises(KeyFileError):
        Identity.load(f"{stem}.key")

    monkeypatch.delenv("ML_KEYGEN_PW")
    assert keygen.main(["--out", str(tmp_path / "bob"), "--passphrase-env", "ML_KEYGEN_PW"]) == 2
    assert "unset" in capsys.readouterr().err
    assert not (tmp_path / "bob.key").exists()


def test_loading_a_world_readable_key_warns(tmp_path, caplog):
    key_path, _ = Identity.generate().save(tmp_path / "loose")
    os.chmod(key_path, 0o644)
    with caplog.at_level("WARNING", logger="medlocker.crypto.identity"):
        Identity.load(key_path)
    assert "chmod 600" in caplog.text


def test_empty_passphrase_is_a_caller_mistake(tmp_path):
    with pytest.raises(ValueError):
        Identity.generate().save(tmp_path / "x", passphrase=b"")
    assert not (tmp_path / "x.key").exists()
