"""DDP over a licensed dataset with uneven shards: every rank takes the same steps, nobody hangs.

Issue 17 case 5: with shards split by rank then by worker, 2 ranks x 2 workers over 3
shards hung at the first all-reduce after one rank ran out, and with 4 ranks over 3
shards one rank got nothing. Each rank here is a real process in a gloo group that
runs one DDP step (forward, backward with its all-reduce, optimizer step) per batch.
A gloo timeout and a join deadline turn a hang into a failure.

The ranks are spawned, so their DataLoader workers are spawned too and inherit
neither ``RANK`` nor the process group: before the shard list carried the rank it
saw when built, every rank then read all 7 samples (and the forked variant of this
test hung in the full suite on locks the parent's threads held).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from shardkit import ALICE, NOW, OWNER, Protected, make_dataset

from medlocker.dataset import LicensedDataset

DEADLINE_S = 120
BATCH = 2


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> Protected:
    """7 samples of 8x8 px in 3 shards of 3, 3 and 1."""
    return make_dataset(str(tmp_path_factory.mktemp("ddp")), n=7, per_shard=3, height=8, width=8, vary_size=False)


def to_pair(sample: dict) -> tuple[torch.Tensor, int, str]:
    image = torch.from_numpy(np.asarray(sample["image"], dtype=np.float32) / 255).flatten()
    return image, sample["label"], sample["__key__"]


def _rank(rank: int, world: int, workers: int, init: str, ds: Protected, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    for var in ("RANK", "WORLD_SIZE"):
        os.environ.pop(var, None)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=DEADLINE_S // 2))
    try:
        torch.manual_seed(0)
        dataset = LicensedDataset(ds.dest, license=ds.license(), identity=ALICE, owner=OWNER.public, now=NOW)
        model = DistributedDataParallel(torch.nn.Linear(8 * 8 * 3, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = torch.utils.data.DataLoader(dataset.map(to_pair), batch_size=BATCH, num_workers=workers)
        steps, keys = 0, []
        for images, labels, batch_keys in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()  # all-reduce
            opt.step()
            steps += 1
            keys += list(batch_keys)
        dist.barrier()
        Path(out, f"rank{rank}.json").write_text(json.dumps({"steps": steps, "keys": keys, "len": len(dataset)}))
    finally:
        dist.destroy_process_group()
    # Leave without interpreter finalisation: gloo's worker threads can still hold
    # tensors then, and freeing them while Python is torn down aborts the process
    # (SIGABRT, "terminate called without an active exception"; pytorch/pytorch#190489),
    # which failed one CI run (rank 0 of 4, 2 busy cores).
    os._exit(0)


def _run(ds: Protected, tmp_path: Path, world: int, workers: int) -> list[dict]:
    import torch.multiprocessing as mp

    # spawn, not fork: by the time this runs in the full suite the parent holds threads
    # (OpenMP pools, loopback servers, loader workers' feeders) whose locks a forked
    # child can inherit held, and the ranks then hang before their first all-reduce.
    ctx = mp.start_processes(_rank, args=(world, workers, str(tmp_path / "init"), ds, str(tmp_path)),
                             nprocs=world, join=False, start_method="spawn")
    try:
        for _ in range(DEADLINE_S):
            if ctx.join(timeout=1):
                break
        else:
            pytest.fail(f"DDP over {world} ranks x {workers} workers did not finish in {DEADLINE_S} s (hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.parametrize("world, workers", [(2, 2), (4, 0)])
def test_every_rank_takes_the_same_steps(uneven: Protected, tmp_path: Path, world: int, workers: int) -> None:
    ranks = _run(uneven, tmp_path, world, workers)
    per_rank = -(-7 // world)  # ceil: the last ranks are padded from the start
    assert [r["len"] for r in ranks] == [per_rank] * world
    assert [len(r["keys"]) for r in ranks] == [per_rank] * world
    assert len({r["steps"] for r in ranks}) == 1 and ranks[0]["steps"] > 0
    seen = [k for r in ranks for k in r["keys"]]
    assert set(seen) == set(uneven.originals)  # every sample read; padding repeats only a few
    assert len(seen) - len(set(seen)) == world * per_rank - 7
