"""Shared bits of the command-line tools: logging, one-line errors, key=value options."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import MedLockerError

__all__ = ["run_cli", "storage_options", "add_storage_option"]


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
    from medlocker.watermark.transforms import get_view  # torch: only when the flag is given

    views = () if text.strip().lower() == "none" else tuple(v.strip() for v in text.split(",") if v.strip())
    for v in views:
        try:
            get_view(v)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return views


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a tool's ``main``; MedLocker and input errors become one line on stderr, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except (MedLockerError, ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)
