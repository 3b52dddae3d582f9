"""``medlocker NAME ...``: dispatch to the subcommand module ``medlocker.cli.NAME``.

Subcommand modules load only when named, so ``medlocker --help`` and ``--version``
start without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "main", "run", "version"]

# name -> one line for `medlocker --help`, in the order a user meets them
COMMANDS = {
    "demo": "the whole flow on synthetic data: synthesize, train, pack, license, read back",
    "synth": "write a synthetic diabetic-retinopathy dataset (images, labels.csv, lesion masks)",
    "train": "train a surrogate classifier on a labelled image folder or CSV",
    "keygen": "create an identity: NAME.key (private) and NAME.pub (public)",
    "pack": "protect a dataset and publish it as signed WebDataset shards",
    "license": "issue a licence that lets one licensee key read the originals",
    "verify": "verify a published dataset, trace a leaked image, check an ownership proof",
    "evaluate": "measure the protection of a packed dataset or of synthetic images (HTML + JSON)",
    "report": "the protection report on synthetic data, with the headline table",
}


def version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("medlocker")
    except PackageNotFoundError:
        from medlocker import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {line}" for name, line in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="medlocker",
        description="Visible adversarial watermarks for medical image datasets, published as signed "
        "WebDataset shards; licensees restore the exact originals.",
        epilog=f"commands:\n{listing}\n\n'medlocker COMMAND --help' explains one command.\n"
        "Start with 'medlocker demo' (a few minutes on a CPU, synthetic data).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="the command to run (listed below)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``medlocker COMMAND ARGS``; returns the exit code (errors become one line, exit 2)."""
    from .common import guarded

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    module = importlib.import_module(f"medlocker.cli.{args.command}")
    return guarded(module.main, args.args)


def run() -> None:
    """The console script ``medlocker``."""
    sys.exit(main())
