#!/usr/bin/env python3
"""Verify MedLocker artefacts against the owner's public key.

Examples:
  python tools/verify.py dataset ./protected --owner owner.pub
  python tools/verify.py dataset s3://bucket/ds --owner owner.pub \\
      --storage-option endpoint_url=http://127.0.0.1:9000

``dataset`` checks the manifest signature, every shard's size and SHA-256, every
index digest and every sample's public members; no licence is needed. It prints
"OK: N shards, M samples" (exit 0) or the list of problems (exit 1). Errors that
stop it from starting (unreadable key, bad option) are one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from medlocker.cli import add_storage_option, run_cli, storage_options
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from medlocker.cli import add_storage_option, run_cli, storage_options

from tqdm import tqdm

from medlocker.crypto import PublicIdentity
from medlocker.shards import check_dataset


def cmd_dataset(args: argparse.Namespace) -> int:
    owner = PublicIdentity.load(args.owner)
    with tqdm(desc="verifying shards", unit="shard", disable=args.quiet or None) as bar:
        report = check_dataset(
            args.dest, owner, storage_options=storage_options(args.storage_option), on_shard=lambda _: bar.update()
        )
    if report.ok:
        print(f"OK: {report.shards} shards, {report.samples} samples")
        return 0
    print(f"FAILED: {len(report.problems)} problem(s) in {args.dest}")
    for problem in report.problems:
        print(f"  - {problem}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("dataset", help="verify a protected dataset (signature, shards, indexes, samples)")
    d.add_argument("dest", metavar="DEST", help="dataset folder or fsspec URL")
    d.add_argument("--owner", required=True, metavar="PUB", help="the owner's public key file (.pub), pinned")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_storage_option(d)
    d.set_defaults(func=cmd_dataset)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 verified, 1 problems found)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run_cli(main)
