"""Small helpers every layer shares: atomic local writes and RFC 3339 times.

One copy of each, so a file is never half-written and a time has one spelling.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "atomic_write", "rfc3339", "parse_rfc3339"]

_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it is synced and renamed onto ``path``.

    Readers see the old file or the new one, never a partial write. On an exception the
    temporary file is removed and ``path`` is left as it was.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (:func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def rfc3339(value: datetime) -> str:
    """RFC 3339 UTC with whole seconds (``2025-01-02T03:04:05Z``): one spelling per instant.

    Raises:
        TypeError: ``value`` is not a datetime.
        ValueError: ``value`` is naive (use ``datetime.now(timezone.utc)``).
    """
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return value.astimezone(timezone.utc).strftime(_RFC3339)


def parse_rfc3339(text: object) -> datetime:
    """The inverse of :func:`rfc3339`: only the exact ``YYYY-MM-DDTHH:MM:SSZ`` form is accepted.

    Raises:
        ValueError: any other text (callers parsing untrusted input re-raise their own error).
    """
    if not isinstance(text, str) or not _RFC3339_RE.fullmatch(text):
        raise ValueError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SSZ")
    return datetime.strptime(text, _RFC3339).replace(tzinfo=timezone.utc)
