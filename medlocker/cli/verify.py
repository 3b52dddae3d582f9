"""Verify MedLocker artefacts against the owner's public key.

Examples:
  medlocker verify dataset ./protected --owner owner.pub
  medlocker verify dataset s3://bucket/ds --owner owner.pub \\
      --storage-option endpoint_url=http://127.0.0.1:9000
  medlocker verify prove --image leaked.jpg --secrets owner-secrets/ds \\
      --dataset ./protected --owner owner.key --out leaked.proof
  medlocker verify check-proof leaked.proof --dataset ./protected \\
      --owner owner.pub [--image leaked.jpg]

``dataset`` checks the manifest signature, every shard's size and SHA-256, every
index digest and every sample's public members; no licence is needed. It prints
"OK: N shards, M samples" (exit 0) or the list of problems (exit 1).

``prove`` (the owner) finds the published sample a suspect image derives from, also
after a re-poster's crop (up to 10 % per side), rotation (up to 5 degrees), rescaling
and JPEG re-encoding, and writes a proof that reveals the watermark parameters and
salt opening that sample's signed commitment, with the suspect file's SHA-256; exit 0
on a match, 1 if not. ``check-proof`` (anyone with the owner's public key) checks it
against the published dataset. Without ``--image`` it shows only that the revealed
parameters open the signed commitment of the named sample (exit 0), never that an
image is that sample; with ``--image`` it checks the file's SHA-256 against the proof
and matches the image against the published sample (exit 0 on a match, 1 if not).
Errors that stop a command from starting (unreadable key, bad option) are one line,
exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from medlocker.cli.common import add_storage_option, run_cli, storage_options
from medlocker.cli.remote import probe
from medlocker.crypto import PublicIdentity
from medlocker.shards import check_dataset


def cmd_dataset(args: argparse.Namespace) -> int:
    owner = PublicIdentity.load(args.owner)
    options = storage_options(args.storage_option)
    probe(args.dest, options)  # an unreachable store is one error line, not "no manifest"
    with tqdm(desc="verifying shards", unit="shard", disable=args.quiet or None) as bar:
        report = check_dataset(args.dest, owner, storage_options=options, on_shard=lambda _: bar.update())
    if report.ok:
        print(f"OK: {report.shards} shards, {report.samples} samples")
        return 0
    print(f"FAILED: {len(report.problems)} problem(s) in {args.dest}")
    for problem in report.problems:
        print(f"  - {problem}")
    return 1


def cmd_prove(args: argparse.Namespace) -> int:
    from medlocker.crypto import Identity, passphrase_from_env
    from medlocker.owner import OwnerSecrets
    from medlocker.proof import prove

    owner = Identity.load(args.owner, passphrase=passphrase_from_env(args.passphrase_env))
    secrets = OwnerSecrets.load(args.secrets, owner)
    proof = prove(Path(args.image).read_bytes(), secrets=secrets, dest=args.dataset, owner=owner.public,
                  storage_options=storage_options(args.storage_option), key=args.sample)
    out = Path(args.out or Path(args.image).with_suffix(".proof"))
    out.write_bytes(proof.to_bytes())
    print(f"{proof.summary()}\nproof written to {out}")
    return 0 if proof.matched else 1


def cmd_check_proof(args: argparse.Namespace) -> int:
    from medlocker.proof import check_proof

    owner = PublicIdentity.load(args.owner)
    suspect = Path(args.image).read_bytes() if args.image else None
    result = check_proof(Path(args.proof).read_bytes(), dest=args.dataset, owner=owner, suspect=suspect,
                         storage_options=storage_options(args.storage_option))
    print(result.statement())
    # Without --image, exit 0 says only that the commitment opens (no match is claimed).
    return 0 if (result.matched if args.image else result.commitment_opens) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlocker verify",
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

    p = sub.add_parser("prove", help="(owner) trace a suspect image to its sample and write a proof")
    p.add_argument("--image", required=True,
                   help="the suspect image file (PNG/JPEG; possibly cropped, rotated, resized, re-encoded)")
    p.add_argument("--sample", metavar="KEY", help="claim this sample (default: search the dataset)")
    p.add_argument("--secrets", required=True, metavar="DIR", help="the owner's secrets folder of the packing run")
    p.add_argument("--dataset", required=True, metavar="DEST", help="the published dataset (folder or URL)")
    p.add_argument("--owner", required=True, metavar="KEY", help="the owner's private key file (.key)")
    p.add_argument("--passphrase-env", default="MEDLOCKER_PASSPHRASE", metavar="VAR",
                   help="environment variable holding the key's passphrase (default %(default)s)")
    p.add_argument("--out", metavar="FILE", help="proof file (default: the image name with .proof)")
    add_storage_option(p)
    p.set_defaults(func=cmd_prove)

    c = sub.add_parser("check-proof", help="(anyone) check an ownership proof against the published dataset")
    c.add_argument("proof", metavar="PROOF", help="proof file written by 'prove'")
    c.add_argument("--dataset", required=True, metavar="DEST", help="the published dataset (folder or URL)")
    c.add_argument("--owner", required=True, metavar="PUB", help="the owner's public key file (.pub), pinned")
    c.add_argument("--image", help="the suspect image file the proof names (its SHA-256 is checked), to match it "
                                   "against the published sample; without it no match is checked or claimed")
    add_storage_option(c)
    c.set_defaults(func=cmd_check_proof)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 verified, 1 problems found)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run_cli(main)
