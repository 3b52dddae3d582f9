"""Where a run publishes: the destination and the secrets folder, kept apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..shards.fs import is_local, url_to_fs

__all__ = ["check_places", "remove_partial_files"]


def check_places(dest: str, secrets: Path, storage_options: dict[str, Any] | None) -> None:
    """Refuse a secrets folder that overlaps the published location."""
    fs, path = url_to_fs(dest, storage_options)
    if is_local(fs):
        d, s = Path(path).resolve(), secrets.resolve()
        if d == s or d in s.parents or s in d.parents:
            raise ValueError(
                f"the secrets folder {secrets} and the published location {dest} overlap: "
                "owner secrets must never be published; choose separate folders"
            )


def remove_partial_files(dest: str, storage_options: dict[str, Any] | None) -> None:
    """Delete the temporary files an interrupted local run left behind."""
    fs, path = url_to_fs(dest, storage_options)
    if is_local(fs) and fs.exists(path):
        for tmp in fs.glob(path.rstrip("/") + "/.*.tmp"):
            fs.rm(tmp)
