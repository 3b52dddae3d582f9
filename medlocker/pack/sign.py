"""Stage 6, sign: gather every rank's checkpoints, write the owner's lists, sign the manifest.

Rank 0 assembles the checkpoints through the communicator (secrets folders need not be
shared between ranks) and writes the manifest last: a dataset without it is incomplete.
"""

from __future__ import annotations

import json

from ..owner import write_jsonl
from ..shards import ShardInfo, write_manifest
from ..shards.catalog import write_catalog
from .run import PackRun

__all__ = ["sign_dataset"]


def sign_dataset(run: PackRun) -> list[ShardInfo]:
    """On rank 0: ``params.jsonl``, ``rejects.jsonl``, the totals, and the signed manifest.

    Returns:
        The shards the manifest lists (on other ranks: none).
    """
    states = {i: run.secrets.progress_file(i).read_text() for i in run.my_shards}
    everything = run.comm.all_gather(states)
    if run.comm.rank != 0:
        return []
    merged = {i: text for part in everything for i, text in part.items()}
    infos, params, rejects = [], [], []
    for i in range(run.n_shards):
        state = json.loads(merged[i])
        if state["shard"] is not None:
            infos.append(ShardInfo.from_dict(state["shard"]))
        params += state["params"]
        rejects += state["rejects"]
    write_jsonl(run.secrets.params_path, sorted(params, key=lambda r: r["key"]))
    write_jsonl(run.secrets.rejects_path, rejects)
    run.summary.add_totals(params, rejects)
    run.summary.shards = len(infos)
    files = write_catalog(run.dest, dataset_id=run.secrets.dataset_id, owner_key_id=run.owner.key_id,
                          classes=run.source.classes, shards=infos, created=run.secrets.created,
                          storage_options=run.storage_options)  # the wids index and the dataset card
    run.summary.manifest_digest = write_manifest(
        run.dest,
        run.owner,
        dataset_id=run.secrets.dataset_id,
        shards=infos,
        classes=run.source.classes,
        logo_sha256=run.logo_sha256,
        created=run.secrets.created,
        files=files,
        storage_options=run.storage_options,
        insecure_test_seed=bool(run.secrets.info.get("insecure_test_seed")),
    )
    return infos
