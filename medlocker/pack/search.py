"""Stage 3, search: lesion boxes by Grad-CAM where no mask says, then the watermark search.

The search batches cross shard boundaries (up to ``batch_size`` images of one size), so
small shards still fill a GPU; every image's result is independent of the batch it is
searched in, so the bytes do not depend on the batching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
import torch

from ..owner import ParamRecord
from ..shards import SampleRecord
from ..watermark import gradcam_boxes, protect
from .finish import finish_sample
from .read import Loaded, Part, loaded_records
from .run import PackRun

__all__ = ["ShardResult", "search_group"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardResult:
    """One shard's finished samples and the owner's parameter records, key order of the source."""

    shard: int
    samples: list[SampleRecord]
    params: list[ParamRecord]


def search_group(run: PackRun, parts: Sequence[Part], pool: Executor) -> list[ShardResult]:
    """Search, then render, encode and seal (in ``pool``) the records of ``parts``.

    Returns one :class:`ShardResult` per part, in the order of ``parts``.
    """
    loaded = list(loaded_records(run, parts))
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(loaded):
        by_size.setdefault(item.image.shape[:2], []).append(i)

    pending: dict[int, Future[tuple[SampleRecord, ParamRecord]]] = {}
    size = run.config.batch_size
    for idx in by_size.values():
        for start in range(0, len(idx), size):
            chunk = idx[start : start + size]
            futures = _search_chunk(run, [loaded[i] for i in chunk], pool)
            pending.update((i, f) for i, f in zip(chunk, futures) if f is not None)
    with run.summary.timed("wait_encode"):
        done = {i: fut.result() for i, fut in sorted(pending.items())}
    return [
        ShardResult(
            part.shard,
            [done[i][0] for i in sorted(done) if loaded[i].shard == part.shard],
            [done[i][1] for i in sorted(done) if loaded[i].shard == part.shard],
        )
        for part in parts
    ]


def _search_chunk(run: PackRun, chunk: list[Loaded], pool: Executor) -> list[Future | None]:
    """Search one batch of same-size images; hand each placed one to the pool to finish.

    Returns per image its finishing future, or None when it was rejected (no placement).
    """
    started = time.perf_counter()
    images = np.stack([x.image for x in chunk])
    labels = [run.model_label(x.record) for x in chunk]
    _fill_gradcam_boxes(run, chunk, images)
    seeds = [run.secrets.sample_seed(x.record.key) for x in chunk]
    with torch.no_grad():
        clean = run.surrogates[0](_tensor(images, run.device)).argmax(1).cpu().tolist()
    results = protect(
        images, labels, [x.boxes for x in chunk], run.surrogates, logo=run.logo, config=run.config.protection,
        device=run.device, seeds=seeds,
    )
    run.summary.timings["search"] += time.perf_counter() - started
    futures: list[Future | None] = []
    for item, res, c, label in zip(chunk, results, clean, labels):
        if res.placement is None:
            reason = f"no lesion-free place for the logo ({res.status}); try a smaller --logo-scale"
            run.summary.reject(item.record.key, item.record.path, reason)
            log.warning("rejected %s: %s", item.record.path, reason)
            futures.append(None)
        else:
            # Rendering, PNG encoding and sealing run in the pool while the next chunk is searched.
            futures.append(pool.submit(finish_sample, run, item, res, clean_correct=c == label))
    run.progress(len(chunk), sum(r.success for r in results))
    return futures


def _fill_gradcam_boxes(run: PackRun, chunk: list[Loaded], images: np.ndarray) -> None:
    """Grad-CAM boxes for the images without mask-based boxes."""
    need = [j for j, x in enumerate(chunk) if x.boxes is None]
    if not need:
        return
    labels = torch.tensor([run.model_label(chunk[j].record) for j in need], device=run.device)
    for j, boxes in zip(need, gradcam_boxes(run.surrogates[0], _tensor(images[need], run.device), labels)):
        chunk[j].boxes = boxes


def _tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)
