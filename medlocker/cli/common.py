"""Shared bits of the subcommands: logging, one-line errors, key=value storage options, view lists."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import MedLockerError

__all__ = ["add_storage_option", "run_cli", "storage_options"]


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option for a remote dataset URL, repeatable: for s3:// endpoint_url=http://HOST:PORT "
        "(an S3-compatible server), key=... secret=... (credentials), region_name=..., anon=true (public bucket)",
    )


def storage_options(pairs: Sequence[str]) -> dict[str, Any] | None:
    """``["endpoint_url=http://x", "anon=false"]`` -> fsspec storage options."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--storage-option {pair!r}: expected KEY=VALUE")
        lowered = value.lower()
        out[key] = {"true": True, "false": False}.get(lowered, value)
    for key in ("endpoint_url", "region_name"):  # s3fs takes these inside client_kwargs
        if key in out:
            out.setdefault("client_kwargs", {})[key] = out.pop(key)
    return out or None


def view_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated EOT view names (``none`` = no view), each checked."""
    from medlocker.watermark.transforms import (
        get_view,  # torch: only when the flag is given
    )

    views = () if text.strip().lower() == "none" else tuple(v.strip() for v in text.split(",") if v.strip())
    for v in views:
        try:
            get_view(v)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return views


def guarded(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a subcommand's ``main``; input and remote-store errors become one line on stderr, exit 2.

    Remote-store failures (unreachable endpoint, missing credentials, back end not
    installed) are told apart by :mod:`medlocker.cli.remote`, which names the URL and the
    ``--storage-option`` to set; anything else unexpected keeps its traceback.
    """
    from .remote import describe, urls_in

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("aiobotocore", "botocore", "s3fs", "fsspec"):  # their INFO lines are not ours to show
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `medlocker ... | head`: stop quietly (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        line = describe(e, urls_in(sys.argv[1:] if argv is None else argv))
        if line is None and not isinstance(e, (MedLockerError, ValueError, FileExistsError, FileNotFoundError)):
            raise
        print(f"error: {line or e}", file=sys.stderr)
        return 2


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """:func:`guarded`, then exit the process with its code (``tools/*.py`` and ``python -m``)."""
    sys.exit(guarded(main, argv))
