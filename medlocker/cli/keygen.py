"""Create a MedLocker identity: NAME.key (private, mode 0600) and NAME.pub.

Examples:
    medlocker keygen --out keys/owner --name "Eye Clinic A"
    MEDLOCKER_PASSPHRASE=... medlocker keygen --out keys/owner --passphrase-env MEDLOCKER_PASSPHRASE
    medlocker keygen --out keys/reader --prompt

Prints the key id on stdout. Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from medlocker.crypto.identity import Identity, passphrase_from_env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlocker keygen",
        description=(
            "Generate a MedLocker identity (Ed25519 signing key + X25519 encryption key). "
            "Writes NAME.key (private, mode 0600; keep it secret) and NAME.pub (public; share it), "
            "and prints the key id."
        ),
    )
    parser.add_argument("--out", required=True, metavar="NAME", help="path stem: writes NAME.key and NAME.pub")
    parser.add_argument("--name", default="", metavar="LABEL", help="human-readable label stored in both files")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="protect NAME.key with the passphrase in environment variable VAR (scrypt + ChaCha20-Poly1305)",
    )
    secret.add_argument("--prompt", action="store_true", help="protect NAME.key with a passphrase typed at a prompt")
    parser.add_argument("--force", action="store_true", help="overwrite existing NAME.key / NAME.pub")
    return parser


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if args.passphrase_env:
        value = passphrase_from_env(args.passphrase_env)
        if value is None:
            raise ValueError(f"environment variable {args.passphrase_env} is unset or empty")
        return value
    if args.prompt:
        first = getpass.getpass("Passphrase for the new key: ")
        if not first:
            raise ValueError("empty passphrase")
        if getpass.getpass("Repeat passphrase: ") != first:
            raise ValueError("passphrases do not match")
        return first.encode("utf-8")
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        passphrase = _passphrase(args)
        identity = Identity.generate(name=args.name)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        key_path, pub_path = identity.save(args.out, passphrase=passphrase, overwrite=args.force)
    except (OSError, ValueError, EOFError) as exc:
        print(f"keygen: error: {str(exc) or 'no passphrase given'}", file=sys.stderr)
        return 2
    print(identity.key_id)
    print(f"wrote {key_path} (private, keep secret) and {pub_path} (public)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
