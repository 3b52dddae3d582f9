"""What a packing run is told (:class:`PackConfig`) and what it reports (:class:`PackSummary`)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from ..watermark import DEFAULT_PRESET, PRESETS, ProtectionConfig

__all__ = ["PackConfig", "PackSummary", "created_time", "default_read_processes"]


@dataclass(frozen=True)
class PackConfig:
    """How to pack. The protection itself is configured by ``protection`` (default: the
    ``standard`` preset, :data:`medlocker.watermark.PRESETS`)."""

    protection: ProtectionConfig = field(default_factory=lambda: PRESETS[DEFAULT_PRESET])
    shard_size: int = 256
    batch_size: int = 32
    resize: int | None = None
    prefix: str = "shard"
    workers: int = 2
    read_processes: int = 0
    """Decode source images and label mask components in this many worker processes
    (0: in the ``workers`` threads). Reading is Python and numpy work that holds the
    interpreter lock much of the time, so threads barely run it in parallel; on a GPU,
    where the search is fast, processes keep up with it."""
    search: InitVar[ProtectionConfig | None] = None
    """Deprecated spelling of ``protection`` (earlier releases' ``PackConfig(search=...)``)."""

    def __post_init__(self, search: ProtectionConfig | None) -> None:
        if search is not None:
            object.__setattr__(self, "protection", search)
        if not isinstance(self.protection, ProtectionConfig):
            raise TypeError(f"PackConfig.protection must be a ProtectionConfig, got {type(self.protection).__name__}")


def default_read_processes(device: str | torch.device) -> int:
    """Reader processes for ``PackConfig.read_processes`` by default: on a GPU one per CPU core
    but one (at most 16), since reading would otherwise hold the search back; on CPU none."""
    if torch.device(device).type != "cuda":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return min(16, max(1, cores - 1))


def created_time(now: datetime | None = None) -> datetime:
    """The run's creation time: ``SOURCE_DATE_EPOCH`` if set (reproducible builds), else now."""
    if now is not None:
        return now
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return datetime.fromtimestamp(int(epoch), timezone.utc)
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass
class PackSummary:
    """What a packing run did; ``to_dict`` is printed by the CLI."""

    dataset_id: str
    dest: str
    secrets: str
    total: int = 0
    protected: int = 0
    fooled: int = 0
    clean_correct: int = 0
    protected_correct: int = 0
    queries: list[int] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)
    shards: int = 0
    seconds: float = 0.0
    # Where this rank's main thread spent its time: waiting for reads, searching (Grad-CAM and
    # the clean forward included), waiting for encoding/sealing and for shard writes.
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("wait_read", "search", "wait_encode", "wait_write"), 0.0))
    manifest_digest: str | None = None

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the time spent in the block to ``timings[key]``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] += time.perf_counter() - t

    def reject(self, key: str, path: str, reason: str) -> None:
        """List an input that could not be protected (``rejects.jsonl``)."""
        self.rejects.append({"key": key, "path": path, "reason": reason})

    def add_totals(self, params: list[dict[str, Any]], rejects: list[dict[str, str]]) -> None:
        """Totals from the checkpoints, so resumed and distributed runs report everything."""
        self.protected = len(params)
        self.fooled = sum(p["success"] for p in params)
        self.protected_correct = self.protected - self.fooled
        self.clean_correct = sum(p["clean_correct"] for p in params)
        self.queries = [p["queries"] for p in params]
        self.rejects = rejects

    def to_dict(self) -> dict[str, Any]:
        n = max(self.protected, 1)
        q = sorted(self.queries) or [0]
        return {
            "dataset_id": self.dataset_id,
            "dest": self.dest,
            "secrets": self.secrets,
            "images": self.total,
            "protected": self.protected,
            "rejected": len(self.rejects),
            "shards": self.shards,
            "attack_success_rate": self.fooled / n,
            "surrogate_clean_accuracy": self.clean_correct / n,
            "surrogate_protected_accuracy": self.protected_correct / n,
            "median_queries": float(np.median(q)),
            "mean_queries": float(np.mean(q)),
            "seconds": round(self.seconds, 2),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            "images_per_second": round(self.protected / self.seconds, 2) if self.seconds else None,
            "manifest_digest": self.manifest_digest,
            "rejects": self.rejects,
        }
