"""Shared bits of the subcommands: logging, one-line errors, key=value storage options, view lists."""

from __future__ import annotations

import argparse
import logging
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
        help="fsspec storage option for a remote DEST, repeatable "
        "(e.g. endpoint_url=http://127.0.0.1:9000, anon=false)",
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
    if "endpoint_url" in out:  # s3fs takes it inside client_kwargs
        out.setdefault("client_kwargs", {})["endpoint_url"] = out.pop("endpoint_url")
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
    """Run a subcommand's ``main``; MedLocker and input errors become one line on stderr, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MedLockerError, ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """:func:`guarded`, then exit the process with its code (``tools/*.py`` and ``python -m``)."""
    sys.exit(guarded(main, argv))
