"""Stage 5, write: one shard (tar + index) to the destination, then its checkpoint to the secrets.

The checkpoint is written after the shard, so a checkpointed shard is always complete;
``--resume`` skips it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..shards import write_shard
from ..util import atomic_write
from .run import PackRun
from .search import ShardResult

__all__ = ["write_result"]


def write_result(run: PackRun, result: ShardResult, rejects: Sequence[dict[str, str]]) -> None:
    """Publish ``result``'s shard (none if every record was rejected) and checkpoint it.

    ``rejects`` may list other shards' records too; the checkpoint keeps this shard's.
    """
    info = write_shard(
        run.dest, result.shard, result.samples, dataset_id=run.secrets.dataset_id, prefix=run.shard_prefix,
        storage_options=run.storage_options,
    ) if result.samples else None
    keys = {r.key for r in run.records(result.shard)}
    state = {
        "shard": info.to_dict() if info else None,
        "params": [p.to_dict() for p in result.params],
        "rejects": [r for r in rejects if r["key"] in keys],
        "fooled": sum(p.success for p in result.params),
    }
    atomic_write(run.secrets.progress_file(result.shard), json.dumps(state, sort_keys=True))
