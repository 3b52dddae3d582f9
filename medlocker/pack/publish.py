"""Where a run publishes: the secrets folder kept local and apart, the destination exclusive.

Two guarantees, both checked before anything is written:

* **Secrets stay private.** The secrets folder is a plain local folder (a path or a
  ``file://`` URL; ``s3://``, chained URLs and every other protocol are refused), and its
  real path (symlinks resolved) neither equals, contains nor lies inside the real local
  path the destination writes to, for every fsspec spelling of the destination:
  ``file://``, ``local://``, relative paths, symlinks, and chained URLs such as
  ``simplecache::file:///x`` (unwrapped to the file system that finally holds the bytes).
* **Publishing is exclusive.** A new run needs an empty (or absent) destination; a
  resumed run accepts only its own partial output (its shard and index names, its
  temporary files, the manifest it wrote if it had finished). Anything else is refused unless ``replace`` is
  given, and then removed only after the new manifest is written:

      1. new shards + indexes   names carry the new dataset's tag (layout.dataset_prefix),
                                so no old file is overwritten and the old manifest still
                                reads the old dataset, digest-checked
      2. new manifest           one atomic write: a manifest reader switches from the
                                whole old dataset to the whole new one
      3. removal                every file the new manifest does not list

  A reader that follows the manifest (``LicensedDataset``, ``verify``, the public read
  over ``manifest.shards``) never sees a mix. A reader that lists the folder (a glob of
  ``*.tar``, Hugging Face ``datasets`` over the folder) sees old and new shards side by
  side between step 1 and the end of step 3; an object store has no atomic folder swap
  to avoid that, so such readers should read after the run returns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec.implementations.cached import CachingFileSystem

from ..shards import ShardInfo, layout
from ..shards.fs import is_local, url_to_fs
from .run import PackRun

__all__ = [
    "DestinationInUseError",
    "check_fresh_destination",
    "check_places",
    "check_resumed_destination",
    "local_secrets_path",
    "remove_partial_files",
    "remove_unlisted",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # "s3://b", and "s3:/b" as pathlib spells it
_LOCAL_PROTOCOLS = ("file", "local")


class DestinationInUseError(FileExistsError):
    """The destination holds files that are not this run's own output."""


def local_secrets_path(secrets: str | os.PathLike[str]) -> Path:
    """The secrets folder as a local path; refuse anything that is not a local folder.

    Raises:
        ValueError: ``secrets`` is a URL of another file system, or a chained URL.
    """
    text = os.fspath(secrets)
    if "::" in text or _URL.match(text):
        protocol = text.split("::", 1)[0].split(":", 1)[0]
        if "::" in text or protocol not in _LOCAL_PROTOCOLS:
            raise ValueError(
                f"--secrets {text}: the owner's secrets must be a local folder, not a {protocol}:// location; "
                "pass a local path (a secrets folder is never uploaded)"
            )
        _, text = fsspec.core.url_to_fs(text)
    return Path(text)


def _local_target(dest: str, storage_options: dict[str, Any] | None) -> str | None:
    """The local path that ``dest``'s bytes finally land in; None for a remote store.

    Chained file systems are unwrapped down to the one that holds the bytes.

    Raises:
        ValueError: a wrapper over the local disk whose target path cannot be told.
    """
    fs, path = url_to_fs(dest, storage_options)
    while not is_local(fs):
        if isinstance(fs, CachingFileSystem):
            fs = fs.fs
        elif isinstance(getattr(fs, "fs", None), fsspec.AbstractFileSystem):
            raise ValueError(  # noqa: TRY004 (a destination we refuse, not a type mistake)
                f"{dest}: cannot tell where a {type(fs).__name__} writes; publish to a plain local path or a store URL"
            )
        else:
            return None
    return path


def _overlap(a: str, b: str) -> bool:
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


def check_places(dest: str, secrets: Path, storage_options: dict[str, Any] | None) -> None:
    """Refuse a secrets folder that overlaps the published location, however it is spelled.

    Both the plain absolute paths and the real paths (symlinks resolved) are compared, so
    neither a symlink into the destination nor one out of it lets secrets be published.

    Raises:
        ValueError: the two overlap.
    """
    target = _local_target(dest, storage_options)
    if target is None:
        return
    pairs = ((os.path.abspath(target), os.path.abspath(secrets)), (os.path.realpath(target), os.path.realpath(secrets)))
    if any(_overlap(d, s) for d, s in pairs):
        raise ValueError(
            f"the secrets folder {secrets} and the published location {dest} overlap: "
            "owner secrets must never be published; choose separate folders"
        )


def _listing(dest: str, storage_options: dict[str, Any] | None) -> dict[str, str]:
    """Names directly under ``dest`` and their type (``file`` or ``directory``); {} if absent."""
    fs, path = url_to_fs(dest, storage_options)
    fs.invalidate_cache(path)  # object stores cache listings; this one must be current
    if not fs.exists(path):
        return {}
    if not fs.isdir(path):
        raise DestinationInUseError(f"{dest} is a file, not a folder: choose a folder for the dataset")
    out = {}
    for entry in fs.ls(path, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if name:
            out[name] = entry.get("type", "file")
    return out


def _refuse(dest: str, names: Iterable[str], what: str) -> None:
    names = sorted(names)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise DestinationInUseError(
        f"{dest} already holds {len(names)} file(s) {what} ({shown}): publish to an empty folder, "
        "or pass replace=True (--replace) to publish over it (the old files are removed once the new manifest is written)"
    )


def _no_subfolders(dest: str, listing: dict[str, str]) -> None:
    folders = [n for n, t in listing.items() if t == "directory"]
    if folders:
        raise DestinationInUseError(
            f"{dest} holds sub-folders ({', '.join(sorted(folders)[:5])}): a dataset folder holds files only; "
            "publish to another folder (replace never deletes folders)"
        )


def check_fresh_destination(dest: str, storage_options: dict[str, Any] | None, *, replace: bool) -> None:
    """A new run: the destination must be empty, or (``replace``) hold files only.

    Raises:
        DestinationInUseError: the destination is in use.
    """
    listing = _listing(dest, storage_options)
    if listing and not replace:
        _refuse(dest, listing, "from another dataset or from elsewhere")
    _no_subfolders(dest, listing)


def _own_names(run: PackRun) -> set[str]:
    names = set()
    for i in range(run.n_shards):
        shard = layout.shard_name(run.shard_prefix, i)
        names |= {shard, layout.index_name(shard)}
    return names


def _is_own_temp(name: str, own: set[str]) -> bool:
    # util.atomic_open's temporary name: ".<name>.<hex>.tmp"
    return name.startswith(".") and name.endswith(".tmp") and name[1:].rsplit(".", 2)[0] in own


def check_resumed_destination(run: PackRun, *, resume: bool, replace: bool) -> None:
    """Once the run is open: everything in the destination is this run's, or ``replace`` allows it.

    A fresh run (``resume`` false) in ``replace`` mode must not overwrite an old file under
    one of its own names (possible only for two runs with the same insecure test seed).

    Raises:
        DestinationInUseError: files of another dataset without ``replace``, or a collision.
    """
    listing = _listing(run.dest, run.storage_options)
    own = _own_names(run)
    signed = {layout.MANIFEST_NAME, *layout.CATALOG_NAMES}  # written by the signing step, rewritten on resume
    others = {n for n in listing if n not in own and not _is_own_temp(n, own | signed)}
    if resume and others and others <= signed:
        # Only this run's shards beside it: the manifest of this run once finished (or one
        # with no dataset left to mix with); signing overwrites it in one atomic write.
        others = set()
    if others and not replace:
        _refuse(run.dest, others, "that this run did not write")
    _no_subfolders(run.dest, listing)
    if not resume and own & set(listing):
        raise DestinationInUseError(
            f"{run.dest} already holds files named like this run's shards ({min(own & set(listing))}): "
            "it holds a dataset packed with the same --insecure-test-seed; use another seed or folder"
        )


def remove_unlisted(run: PackRun, shards: Sequence[ShardInfo]) -> list[str]:
    """After the new manifest (listing ``shards``): delete every file it does not list.

    Returns:
        The names removed.
    """
    keep = {layout.MANIFEST_NAME, *layout.CATALOG_NAMES} | {s.name for s in shards} | {s.index for s in shards}
    fs, path = url_to_fs(run.dest, run.storage_options)
    gone = []
    for name, kind in sorted(_listing(run.dest, run.storage_options).items()):
        if name not in keep and kind == "file":
            fs.rm_file(path.rstrip("/") + "/" + name)
            gone.append(name)
    return gone


def remove_partial_files(dest: str, storage_options: dict[str, Any] | None) -> None:
    """Delete the temporary files an interrupted local run left behind."""
    fs, path = url_to_fs(dest, storage_options)
    if is_local(fs) and fs.exists(path):
        for tmp in fs.glob(path.rstrip("/") + "/.*.tmp"):
            fs.rm(tmp)
