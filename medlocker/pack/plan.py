"""Stage 1, plan: open (or resume) the run, fix the logo, and list the shards left to pack.

Everything that can be checked before the first image is searched is checked here, so
a mistake costs seconds, not a half-written dataset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..crypto import Identity
from ..data import Source
from ..distributed import Comm
from ..errors import BadInputError
from ..models import Classifier
from ..owner import RUN_FILE, OwnerSecrets, new_run
from ..shards import sha256_digest
from ..watermark import learn_logo
from .config import PackConfig, PackSummary
from .read import load_record
from .run import PackRun, share_file

__all__ = ["open_run", "plan_shards", "run_settings"]


def run_settings(source: Source, surrogates: Sequence[Classifier], config: PackConfig) -> dict[str, Any]:
    """The options ``run.json`` records; ``--resume`` must be given the same ones."""
    return {
        "protection": config.protection.to_dict(),
        "shard_size": config.shard_size,
        "resize": config.resize,
        "prefix": config.prefix,
        "surrogates": [m.arch for m in surrogates],
        "source": str(source.root),
    }


def open_run(
    source: Source,
    dest: str,
    *,
    owner: Identity,
    secrets: Path,
    surrogates: Sequence[Classifier],
    logo: np.ndarray,
    config: PackConfig,
    resume: bool,
    storage_options: dict[str, Any] | None,
    device: torch.device,
    created: datetime,
    test_seed: int | None,
    progress: Callable[[int, int], None],
    comm: Comm,
    model_labels: tuple[int, ...],
) -> PackRun:
    """Create (rank 0) or reopen the secrets folder, share it, and fix the run's logo.

    Raises:
        FileExistsError: ``secrets`` holds a run and ``resume`` is false.
        ValueError: ``resume`` with other settings than the interrupted run.
    """
    settings = run_settings(source, surrogates, config)
    if comm.rank == 0 and not resume:
        new_run(secrets, owner, created=created, settings=settings, test_seed=test_seed)
    share_file(comm, secrets / RUN_FILE)
    opened = OwnerSecrets.load(secrets, owner)
    if opened.info["settings"] != json.loads(json.dumps(settings)):
        raise ValueError(f"{secrets}: --resume with different settings than the interrupted run; use the same options")
    config = replace(config, protection=replace(config.protection, seed=opened.search_seed))
    for m in surrogates:
        m.to(device).eval()

    # The logo: fixed, or learned once (rank 0), then read back by every rank.
    if comm.rank == 0 and not opened.logo_path.exists():
        if config.protection.universal.learned:
            logo = _learn_logo(source, logo, surrogates, config, opened, model_labels)
        opened.save_logo(logo)
    share_file(comm, opened.logo_path)
    summary = PackSummary(
        dataset_id=opened.dataset_id, dest=dest, secrets=str(secrets), total=len(source.records)
    )
    return PackRun(
        source=source, dest=dest, storage_options=storage_options, owner=owner, secrets=opened,
        surrogates=surrogates, config=config, device=device, comm=comm, logo=opened.load_logo(),
        logo_sha256=sha256_digest(opened.logo_path.read_bytes()), summary=summary, progress=progress,
        model_labels=model_labels,
    )


def plan_shards(run: PackRun) -> list[list[int]]:
    """This rank's shards without a checkpoint, in groups searched together.

    Consecutive shards are grouped until they hold a full search batch, so small shards
    still fill a GPU. Shards finished by an interrupted attempt count towards progress.
    """
    todo = []
    for i in run.my_shards:
        done = run.secrets.progress_file(i)
        if done.exists():
            run.progress(len(run.records(i)), json.loads(done.read_text())["fooled"])
        else:
            todo.append(i)
    per_group = max(1, -(-run.config.batch_size // run.config.shard_size))
    return [todo[g : g + per_group] for g in range(0, len(todo), per_group)]


def _learn_logo(
    source: Source,
    logo: np.ndarray,
    surrogates: Sequence[Classifier],
    config: PackConfig,
    secrets: OwnerSecrets,
    model_labels: tuple[int, ...],
) -> np.ndarray:
    """Learn the logo's colours once on the first ``protection.universal.images`` images of the source."""
    picks = []
    for rec in source.records[: config.protection.universal.images]:
        try:
            picks.append((rec, *load_record(rec, config.resize, source.masks is not None)))
        except BadInputError:
            continue
    size = picks[0][1].shape[:2]
    picks = [p for p in picks if p[1].shape[:2] == size]
    images = np.stack([p[1] for p in picks])
    labels = [model_labels[p[0].label] for p in picks]
    boxes = [p[2] or [] for p in picks]
    gen = torch.Generator().manual_seed(secrets.search_seed)
    return learn_logo(images, labels, boxes, surrogates, logo=logo, config=config.protection, generator=gen)
