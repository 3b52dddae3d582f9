"""The packing run end to end: :func:`pack` runs the stages over one :class:`PackRun`."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import numpy as np
import torch

from ..crypto import Identity
from ..data import Source
from ..distributed import Comm
from ..models import Classifier
from .config import PackConfig, PackSummary, created_time
from .plan import open_run, plan_shards
from .preflight import check_before_work
from .publish import (
    check_fresh_destination,
    check_places,
    check_resumed_destination,
    local_secrets_path,
    remove_partial_files,
    remove_unlisted,
)
from .read import read_group
from .run import PackRun
from .search import search_group
from .sign import sign_dataset
from .write import write_result

__all__ = ["pack"]

log = logging.getLogger(__name__)


def pack(
    source: Source,
    dest: str,
    *,
    owner: Identity,
    secrets: str | os.PathLike[str],
    surrogates: Sequence[Classifier],
    logo: np.ndarray,
    config: PackConfig = PackConfig(),  # noqa: B008 (frozen, shared safely)
    resume: bool = False,
    storage_options: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    now: datetime | None = None,
    test_seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    comm: Comm | None = None,
    replace: bool = False,
) -> PackSummary:
    """Protect ``source`` and publish it at ``dest``; owner secrets go to ``secrets``.

    Args:
        source: the opened input (``medlocker.data.open_source``).
        dest: local folder or fsspec URL of the published dataset.
        owner: the owner's private identity (signs the manifest).
        secrets: local folder for the owner's secrets; never inside ``dest``.
        surrogates: the models in the search loop (an ensemble if several).
        logo: RGBA uint8 logo; with ``protection.universal.mode == 'learned'`` its colours are
            optimised once.
        config: shard size, batch size, resize, and the protection.
        resume: continue the run whose secrets are in ``secrets``.
        progress: ``callback(images_done, images_fooled)`` per batch.
        comm: ranks and collectives (:mod:`medlocker.distributed`); rank ``r``
            packs shards ``r, r + world_size, ...`` and rank 0 signs the manifest.
        replace: publish over the dataset (or other files) at ``dest``: the new shards,
            then the new manifest, then removal of every file it does not list
            (:mod:`medlocker.pack.publish`). Without it ``dest`` must be empty, or hold
            only this run's partial output when resuming.

    Returns:
        A :class:`PackSummary` (aggregated over ranks on rank 0).

    Raises:
        FileExistsError: ``secrets`` holds a run and ``resume`` is false.
        DestinationInUseError: ``dest`` holds files this run did not write, and not ``replace``.
        ValueError: ``secrets`` is not a local folder, or it overlaps ``dest``; a
            surrogate's classes are not the source's (:mod:`medlocker.pack.preflight`).

    Every check above runs before anything is written.
    """
    t0 = time.perf_counter()
    secrets = local_secrets_path(secrets)
    check_places(dest, secrets, storage_options)
    labels = check_before_work(source, surrogates, logo, config)
    if not resume:
        check_fresh_destination(dest, storage_options, replace=replace)
    comm = comm or Comm()
    run = open_run(
        source, dest, owner=owner, secrets=secrets, surrogates=surrogates, logo=logo, config=config,
        resume=resume, storage_options=storage_options, device=torch.device(device), created=created_time(now),
        test_seed=test_seed, progress=progress or (lambda done, fooled: None), comm=comm, model_labels=labels,
    )
    check_resumed_destination(run, resume=resume, replace=replace)
    if resume and comm.rank == 0:
        remove_partial_files(dest, storage_options)
    comm.barrier()
    _run_stages(run, plan_shards(run))
    published = sign_dataset(run)
    if replace and comm.rank == 0:
        for name in remove_unlisted(run, published):
            log.info("removed %s from %s: not part of the new dataset", name, dest)
    run.summary.seconds = time.perf_counter() - t0
    return run.summary


def _run_stages(run: PackRun, groups: list[list[int]]) -> None:
    """Read -> search -> finish -> write over the shard groups, as a pipeline.

    While group g is searched, group g+1 is read and decoded by the readers and group
    g-1 is written by the writer thread; each sample is finished in the pool as soon as
    its chunk's search ends. The output does not depend on the timing.
    """
    if not groups:
        return
    summary = run.summary
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, run.config.workers)))
        writer = stack.enter_context(ThreadPoolExecutor(1))
        readers: Executor = pool
        if run.config.read_processes > 0:
            # forkserver: a clean process to fork readers from (this one may hold CUDA and threads).
            readers = stack.enter_context(ProcessPoolExecutor(
                run.config.read_processes, mp_context=multiprocessing.get_context("forkserver")))
        parts = read_group(run, groups[0], readers)
        writing: list[Future[None]] = []
        for g in range(len(groups)):
            current = parts
            if g + 1 < len(groups):
                parts = read_group(run, groups[g + 1], readers)
            done = search_group(run, current, pool)
            with summary.timed("wait_write"):
                for w in writing:
                    w.result()  # one group in flight at a time; errors surface here
            writing = [writer.submit(write_result, run, r, list(summary.rejects)) for r in done]
        with summary.timed("wait_write"):
            for w in writing:
                w.result()
