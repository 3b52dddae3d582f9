"""Issue a licence: let one licensee key read the originals of one packed dataset.

Examples:
  medlocker license --owner owner.key --secrets owner-secrets/ds --dataset ./protected \\
      --to alice.pub --expires 2026-12-31 --out alice.license
  medlocker license ... --dataset s3://bucket/ds --storage-option endpoint_url=http://127.0.0.1:9000

The manifest is read and verified with the owner's key first, and the licence is
bound to its digest: repacking the dataset needs new licences. --expires and
--not-before take a date (00:00 UTC that day) or an ISO 8601 time with a zone.
Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from medlocker.cli.common import add_storage_option, run_cli, storage_options
from medlocker.crypto import (
    Identity,
    PublicIdentity,
    issue_license,
    passphrase_from_env,
)
from medlocker.errors import WrongDatasetError
from medlocker.owner import OwnerSecrets
from medlocker.shards import read_manifest
from medlocker.util import atomic_write


def parse_when(text: str) -> datetime:
    """``YYYY-MM-DD`` (00:00 UTC) or an ISO 8601 time; naive times are taken as UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medlocker license",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--owner", required=True, metavar="KEY", help="the owner's private identity (.key)")
    p.add_argument("--passphrase-env", metavar="VAR", default="MEDLOCKER_PASSPHRASE",
                   help="environment variable holding the owner key's passphrase (default %(default)s)")
    p.add_argument("--secrets", required=True, metavar="DIR", help="the owner's secrets folder of this dataset")
    p.add_argument("--dataset", required=True, metavar="DEST", help="the published dataset (folder or fsspec URL)")
    p.add_argument("--to", required=True, metavar="PUB", help="the licensee's public key (.pub)")
    p.add_argument("--expires", required=True, type=parse_when, metavar="DATE", help="end of validity")
    p.add_argument("--not-before", type=parse_when, metavar="DATE", help="start of validity (default: now)")
    p.add_argument("--out", required=True, metavar="FILE", help="licence file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_storage_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (MedLocker errors propagate to run_cli: exit 2)."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    owner = Identity.load(args.owner, passphrase=passphrase_from_env(args.passphrase_env))
    manifest = read_manifest(args.dataset, owner.public, storage_options=storage_options(args.storage_option))
    secrets = OwnerSecrets.load(args.secrets, owner)
    if secrets.dataset_id != manifest.dataset_id:
        raise WrongDatasetError(
            f"{args.secrets} holds the secrets of dataset {secrets.dataset_id}, "
            f"but {args.dataset} is dataset {manifest.dataset_id}"
        )
    licensee = PublicIdentity.load(args.to)
    data = issue_license(
        owner,
        dataset_id=manifest.dataset_id,
        manifest_digest=manifest.digest,
        licensee=licensee,
        content_key=secrets.content_key,
        expires=args.expires,
        not_before=args.not_before,
    )
    atomic_write(out, data)
    print(out)
    print(
        f"licensed dataset {manifest.dataset_id} ({manifest.num_samples} samples) to {licensee.key_id}"
        f"{f' ({licensee.name})' if licensee.name else ''} until {args.expires.isoformat()}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
