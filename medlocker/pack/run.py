"""The one object every packing stage works on: :class:`PackRun`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..crypto import Identity
from ..data import Record, Source
from ..distributed import Comm
from ..models import Classifier
from ..owner import OwnerSecrets, make_secrets_folder
from ..shards import layout
from .config import PackConfig, PackSummary

__all__ = ["PackRun", "share_file"]


@dataclass
class PackRun:
    """A packing run once planned: where it reads and writes, its opened secrets, its logo.

    ``config.protection.seed`` is the run's own search seed (from ``run.json``), so every
    rank and every resumed attempt searches alike. ``summary`` is this rank's tally.
    """

    source: Source
    dest: str
    storage_options: dict[str, Any] | None
    owner: Identity
    secrets: OwnerSecrets
    surrogates: Sequence[Classifier]
    config: PackConfig
    device: torch.device
    comm: Comm
    logo: np.ndarray
    logo_sha256: str
    summary: PackSummary
    progress: Callable[[int, int], None]
    model_labels: tuple[int, ...]
    """The surrogates' output index of each source label (``preflight.model_labels``)."""

    def model_label(self, record: Record) -> int:
        """``record``'s class in the surrogates' numbering: the class the search attacks."""
        return self.model_labels[record.label]

    @property
    def n_shards(self) -> int:
        return -(-len(self.source.records) // self.config.shard_size)

    @property
    def my_shards(self) -> range:
        """The shards this rank packs: ``rank, rank + world_size, ...``."""
        return range(self.comm.rank, self.n_shards, self.comm.world_size)

    def records(self, shard: int) -> Sequence[Record]:
        """Shard ``shard`` always holds records ``[shard * size, (shard + 1) * size)``."""
        size = self.config.shard_size
        return self.source.records[shard * size : (shard + 1) * size]

    @property
    def shard_prefix(self) -> str:
        """This dataset's shard prefix (``layout.dataset_prefix``): no two datasets share a shard name."""
        return layout.dataset_prefix(self.config.prefix, self.secrets.dataset_id)

    @property
    def masked(self) -> bool:
        """The source has a mask folder: a record without a mask file is lesion-free."""
        return self.source.masks is not None


def share_file(comm: Comm, path: Path) -> None:
    """Copy rank 0's secrets file ``path`` to every rank that lacks it (ranks may not share a disk)."""
    if not comm.distributed:
        return
    data = comm.broadcast(path.read_bytes() if comm.rank == 0 else None)
    if comm.rank != 0 and (not path.exists() or path.read_bytes() != data):
        make_secrets_folder(path.parent)
        path.write_bytes(data)
