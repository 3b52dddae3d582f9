"""Packing: source images -> protected, signed WebDataset shards.

One pass over the source, shard by shard (a shard is the unit of work, of
``--resume`` and of distribution across ranks)::

    load + resize -> lesion boxes (masks, or Grad-CAM) -> watermark search
    -> render exact + PNG -> seal the original pixels under the logo
    -> write shard + index -> checkpoint progress
    ... after the last shard: params.jsonl, rejects.jsonl, signed manifest

Shard ``i`` always holds source records ``[i * shard_size, (i + 1) * shard_size)``
and every random choice about a sample is derived from the run secret and the
sample key, so a resumed or distributed run writes the same bytes as a single
uninterrupted one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import InitVar, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .crypto import Identity, commit, seal_payload
from .data import Record, Source, load_image, load_mask
from .distributed import Comm
from .errors import BadInputError
from .models import Classifier
from .owner import (
    PARAMS_FILE,
    REJECTS_FILE,
    RUN_FILE,
    OwnerSecrets,
    ParamRecord,
    new_run,
    param_bytes,
    png_bytes,
    write_jsonl,
)
from .shards import (
    SampleRecord,
    ShardInfo,
    build_restoration,
    pixel_digest,
    sha256_digest,
    write_manifest,
    write_shard,
)
from .shards.fs import is_local, url_to_fs
from .util import atomic_write
from .watermark import (
    DEFAULT_PRESET,
    PRESETS,
    Placement,
    ProtectionConfig,
    boxes_from_masks,
    gradcam_boxes,
    learn_logo,
    protect,
    render_exact,
)
from .watermark.layer import apply_layer

__all__ = ["PackConfig", "PackSummary", "pack", "created_time"]

log = logging.getLogger(__name__)


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


def created_time(now: datetime | None = None) -> datetime:
    """The run's creation time: ``SOURCE_DATE_EPOCH`` if set (reproducible builds), else now."""
    if now is not None:
        return now
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return datetime.fromtimestamp(int(epoch), timezone.utc)
    return datetime.now(timezone.utc).replace(microsecond=0)


# -- reading one record --------------------------------------------------------


def _load(
    record: Record, resize: int | None, masked: bool = False
) -> tuple[np.ndarray, list[tuple[int, int, int, int]] | None]:
    """Image (uint8 HxWx3) and lesion boxes from mask files.

    Boxes are None (find them with Grad-CAM) when the record has no mask file and its
    source has no mask folder (``masked`` false); ``[]`` (no lesions) when it has one.
    """
    image = load_image(record.path)
    if resize:
        image = np.asarray(Image.fromarray(image).resize((resize, resize), Image.BICUBIC))
    if not record.masks:
        return image, ([] if masked else None)
    h, w = image.shape[:2]
    masks = [load_mask(m, (h, w)) for m in record.masks]
    return image, boxes_from_masks(masks, min_area=1)  # every lesion pixel is protected


def _check_dest(dest: str, secrets: Path, storage_options: dict[str, Any] | None) -> None:
    fs, path = url_to_fs(dest, storage_options)
    if is_local(fs):
        d, s = Path(path).resolve(), secrets.resolve()
        if d == s or d in s.parents or s in d.parents:
            raise ValueError(
                f"the secrets folder {secrets} and the published location {dest} overlap: "
                "owner secrets must never be published; choose separate folders"
            )


# -- one shard -----------------------------------------------------------------


def _protect_shards(
    parts: Sequence[tuple[int, Sequence[Record], Sequence[Future[tuple[np.ndarray, list | None]]]]],
    *,
    run: OwnerSecrets,
    surrogates: Sequence[Classifier],
    logo: np.ndarray,
    logo_sha256: str,
    classes: Sequence[str],
    config: PackConfig,
    device: torch.device,
    pool: ThreadPoolExecutor,
    on_batch: Callable[[int, int], None],
    summary: PackSummary,
) -> list[tuple[int, list[SampleRecord], list[ParamRecord]]]:
    """Search, render, encode and seal the records of a few consecutive shards, whose reads are
    under way: ``parts`` holds ``(shard, records, loads)``. The search batches cross shard
    boundaries (up to ``config.batch_size`` images), so small shards still fill a GPU; every
    image's result is independent of the batch it is searched in. Returns per shard
    ``(shard, samples, params)`` in the order of ``parts``."""
    loaded: list[tuple[Record, np.ndarray, list | None]] = []
    shard_of: list[int] = []
    for shard, records, loads in parts:
        for rec, fut in zip(records, loads):
            try:
                with _timed(summary, "wait_read"):
                    image, boxes = fut.result()
            except (BadInputError, OSError, ValueError) as e:
                summary.rejects.append({"key": rec.key, "path": rec.path, "reason": str(e)})
                log.warning("rejected %s: %s", rec.path, e)
                on_batch(0, 0)
                continue
            loaded.append((rec, image, boxes))
            shard_of.append(shard)

    # Group by size: the search batches images of one size.
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (_, image, _) in enumerate(loaded):
        by_size.setdefault(image.shape[:2], []).append(i)

    samples: list[SampleRecord | None] = [None] * len(loaded)
    params: list[ParamRecord | None] = [None] * len(loaded)
    pending: list[tuple[int, Future[tuple[SampleRecord, ParamRecord]]]] = []
    for idx in by_size.values():
        for start in range(0, len(idx), config.batch_size):
            chunk = idx[start : start + config.batch_size]
            search_started = time.perf_counter()
            images = np.stack([loaded[i][1] for i in chunk])
            labels = [loaded[i][0].label for i in chunk]
            boxes = [loaded[i][2] for i in chunk]
            need = [j for j, b in enumerate(boxes) if b is None]
            if need:  # Grad-CAM only for the images without mask-based boxes
                x = torch.from_numpy(images[need]).permute(0, 3, 1, 2).float().div(255).to(device)
                cam = gradcam_boxes(surrogates[0], x, torch.tensor([labels[j] for j in need], device=device))
                for j, c in zip(need, cam):
                    boxes[j] = c
            seeds = [run.sample_seed(loaded[i][0].key) for i in chunk]
            with torch.no_grad():
                x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)
                clean = surrogates[0](x).argmax(1).cpu().tolist()
            results = protect(
                images, labels, boxes, surrogates, logo=logo, config=config.protection, device=device, seeds=seeds
            )
            summary.timings["search"] += time.perf_counter() - search_started
            keep = []
            for i, res in zip(chunk, results):
                if res.placement is None:
                    rec = loaded[i][0]
                    reason = f"no lesion-free place for the logo ({res.status}); try a smaller --logo-scale"
                    summary.rejects.append({"key": rec.key, "path": rec.path, "reason": reason})
                    log.warning("rejected %s: %s", rec.path, reason)
                else:
                    keep.append(i)
            futs = [
                pool.submit(
                    _finish_sample, loaded[i][0], loaded[i][1], res, shard=shard_of[i], run=run, logo=logo,
                    logo_sha256=logo_sha256, classes=classes, clean_correct=c == lab,
                )
                for i, res, c, lab in zip(chunk, results, clean, labels)
                if res.placement is not None
            ]
            # Rendering, PNG encoding and sealing run in the pool while the next chunk is searched.
            pending.extend(zip(keep, futs))
            on_batch(len(chunk), sum(r.success for r in results))
    with _timed(summary, "wait_encode"):
        for i, fut in pending:
            samples[i], params[i] = fut.result()
    out = []
    for shard, _, _ in parts:
        mine = [i for i in range(len(loaded)) if shard_of[i] == shard and samples[i] is not None]
        out.append((shard, [samples[i] for i in mine], [params[i] for i in mine]))
    return out


@contextlib.contextmanager
def _timed(summary: PackSummary, key: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        summary.timings[key] += time.perf_counter() - t


def _submit_loads(
    pool: Executor, records: Sequence[Record], resize: int | None, masked: bool
) -> list[Future[tuple[np.ndarray, list | None]]]:
    return [pool.submit(_load, r, resize, masked) for r in records]


def _finish_sample(
    record: Record,
    image: np.ndarray,
    result: Any,
    *,
    shard: int,
    run: OwnerSecrets,
    logo: np.ndarray,
    logo_sha256: str,
    classes: Sequence[str],
    clean_correct: bool,
) -> tuple[SampleRecord, ParamRecord]:
    """Render, encode, seal and commit one sample (runs in a worker thread)."""
    p: Placement = result.placement
    own_png = png_bytes(result.logo) if result.logo is not None else None  # per-image colours: its own logo
    if own_png is not None:
        logo, logo_sha256 = result.logo, sha256_digest(own_png)
    layer = result.layer  # the adversarial layer outside the logo, if any: applied first, committed, sealed
    protected = render_exact(image if layer is None else apply_layer(image, layer), logo, p)
    layer_bytes = None if layer is None else layer.to_bytes()
    png = png_bytes(protected)
    wm_digest = sha256_digest(png)
    payload = seal_payload(
        run.content_key,
        build_restoration(image, p.box, layer),
        dataset_id=run.dataset_id,
        sample_key=record.key,
        watermarked_digest=wm_digest,
        nonce=run.sample_bytes("nonce", record.key, 12),
    )
    salt = run.sample_bytes("salt", record.key, 32)
    placement = p.to_dict()
    commitment = commit(
        param_bytes(dataset_id=run.dataset_id, key=record.key, placement=placement, logo_sha256=logo_sha256,
                    layer_sha256=None if layer_bytes is None else sha256_digest(layer_bytes)), salt
    )
    h, w = image.shape[:2]
    sample = SampleRecord(
        key=record.key,
        label=record.label,
        class_name=classes[record.label],
        png=png,
        width=w,
        height=h,
        orig_sha256=pixel_digest(image),
        payload=payload,
        commitment=commitment,
    )
    param = ParamRecord(
        key=record.key,
        label=record.label,
        shard=shard,
        placement=placement,
        salt=salt.hex(),
        commitment=commitment,
        success=bool(result.success),
        queries=int(result.queries),
        margin=float(result.margin),
        status=result.status,
        clean_correct=bool(clean_correct),
        logo_png=base64.b64encode(own_png).decode() if own_png is not None else None,
        layer=base64.b64encode(layer_bytes).decode() if layer_bytes is not None else None,
    )
    return sample, param


# -- the run -------------------------------------------------------------------


def pack(
    source: Source,
    dest: str,
    *,
    owner: Identity,
    secrets: str | os.PathLike[str],
    surrogates: Sequence[Classifier],
    logo: np.ndarray,
    config: PackConfig = PackConfig(),
    resume: bool = False,
    storage_options: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    now: datetime | None = None,
    test_seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    comm: Comm | None = None,
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

    Returns:
        A :class:`PackSummary` (aggregated over ranks on rank 0).

    Raises:
        FileExistsError: ``secrets`` holds a run and ``resume`` is false.
        ValueError: ``secrets`` and ``dest`` overlap.
    """
    t0 = time.perf_counter()
    secrets = Path(secrets)
    _check_dest(dest, secrets, storage_options)
    device = torch.device(device)
    comm = comm or Comm()
    progress = progress or (lambda done, fooled: None)

    settings = {
        "protection": config.protection.to_dict(),
        "shard_size": config.shard_size,
        "resize": config.resize,
        "prefix": config.prefix,
        "surrogates": [m.arch for m in surrogates],
        "source": str(source.root),
    }
    if comm.rank == 0 and not resume:
        new_run(secrets, owner, created=created_time(now), settings=settings, test_seed=test_seed)
    _share_file(comm, secrets / RUN_FILE)
    run = OwnerSecrets.load(secrets, owner)
    if run.info["settings"] != json.loads(json.dumps(settings)):
        raise ValueError(f"{secrets}: --resume with different settings than the interrupted run; use the same options")
    protection = replace(config.protection, seed=run.search_seed)
    config = replace(config, protection=protection)

    for m in surrogates:
        m.to(device).eval()

    # The logo: fixed, or learned once (rank 0), then read back by every rank.
    if comm.rank == 0 and not run.logo_path.exists():
        if protection.universal.learned:
            logo = _learn(source, logo, surrogates, config, run, device)
        run.save_logo(logo)
    _share_file(comm, run.logo_path)
    logo = run.load_logo()
    logo_sha256 = sha256_digest(run.logo_path.read_bytes())

    if resume and comm.rank == 0:
        _remove_partial_files(dest, storage_options)
    comm.barrier()
    records = source.records
    n_shards = (len(records) + config.shard_size - 1) // config.shard_size
    summary = PackSummary(dataset_id=run.dataset_id, dest=dest, secrets=str(secrets), total=len(records))
    mine = range(comm.rank, n_shards, comm.world_size)
    masked = source.masks is not None

    def part_of(i: int) -> Sequence[Record]:
        return records[i * config.shard_size : (i + 1) * config.shard_size]

    def done_file(i: int) -> Path:
        return run.progress_dir / f"shard-{i:06d}.json"

    def write(i: int, samples: list[SampleRecord], params: list[ParamRecord], rejects: list[dict]) -> None:
        info = write_shard(
            dest, i, samples, dataset_id=run.dataset_id, prefix=config.prefix, storage_options=storage_options
        ) if samples else None
        _checkpoint(done_file(i), info, params, rejects, part_of(i))

    todo = []
    for i in mine:
        if done_file(i).exists():
            progress(len(part_of(i)), json.loads(done_file(i).read_text())["fooled"])
        else:
            todo.append(i)
    # Consecutive shards are searched together until they hold a full search batch.
    per_group = max(1, -(-config.batch_size // config.shard_size))
    groups = [todo[g : g + per_group] for g in range(0, len(todo), per_group)]

    def submit(group: Sequence[int]) -> list:
        return [(i, part_of(i), _submit_loads(readers, part_of(i), config.resize, masked)) for i in group]

    # A pipeline: while group g is searched, group g+1 is read and decoded by the pool and
    # group g-1 is written by the writer thread; each sample is encoded and sealed in the
    # pool as soon as its chunk's search ends. The output does not depend on the timing.
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, config.workers)))
        writer = stack.enter_context(ThreadPoolExecutor(1))
        readers: Executor = pool
        if config.read_processes > 0 and todo:
            # forkserver: a clean process to fork readers from (this one may hold CUDA and threads).
            readers = stack.enter_context(ProcessPoolExecutor(
                config.read_processes, mp_context=multiprocessing.get_context("forkserver")))
        parts = submit(groups[0]) if groups else []
        writing: list[Future[None]] = []
        for g in range(len(groups)):
            current = parts
            if g + 1 < len(groups):
                parts = submit(groups[g + 1])
            done = _protect_shards(
                current, run=run, surrogates=surrogates, logo=logo, logo_sha256=logo_sha256,
                classes=source.classes, config=config, device=device, pool=pool,
                on_batch=progress, summary=summary,
            )
            with _timed(summary, "wait_write"):
                for w in writing:
                    w.result()  # one group in flight at a time; errors surface here
            writing = [writer.submit(write, i, samples, params, list(summary.rejects)) for i, samples, params in done]
        with _timed(summary, "wait_write"):
            for w in writing:
                w.result()

    # Rank 0 assembles every rank's checkpoints (secrets folders need not be shared).
    states = {i: (run.progress_dir / f"shard-{i:06d}.json").read_text() for i in mine}
    everything = comm.all_gather(states)
    if comm.rank != 0:
        summary.seconds = time.perf_counter() - t0
        return summary
    infos, params, rejects = [], [], []
    merged = {i: text for part in everything for i, text in part.items()}
    for i in range(n_shards):
        state = json.loads(merged[i])
        if state["shard"] is not None:
            infos.append(ShardInfo.from_dict(state["shard"]))
        params += state["params"]
        rejects += state["rejects"]
    write_jsonl(secrets / PARAMS_FILE, sorted(params, key=lambda r: r["key"]))
    write_jsonl(secrets / REJECTS_FILE, rejects)
    _summarise(summary, params, rejects)
    summary.shards = len(infos)
    summary.manifest_digest = write_manifest(
        dest,
        owner,
        dataset_id=run.dataset_id,
        shards=infos,
        classes=source.classes,
        logo_sha256=logo_sha256,
        created=run.created,
        storage_options=storage_options,
        insecure_test_seed=test_seed is not None,
    )
    summary.seconds = time.perf_counter() - t0
    return summary


def _remove_partial_files(dest: str, storage_options: dict[str, Any] | None) -> None:
    """Delete the temporary files an interrupted local run left behind."""
    fs, path = url_to_fs(dest, storage_options)
    if is_local(fs) and fs.exists(path):
        for tmp in fs.glob(path.rstrip("/") + "/.*.tmp"):
            fs.rm(tmp)


def _share_file(comm: Comm, path: Path) -> None:
    """Copy rank 0's file to every rank that lacks it (ranks may not share a disk)."""
    if not comm.distributed:
        return
    data = comm.broadcast(path.read_bytes() if comm.rank == 0 else None)
    if comm.rank != 0 and (not path.exists() or path.read_bytes() != data):
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "progress").mkdir(exist_ok=True)
        path.write_bytes(data)


def _checkpoint(path: Path, info: ShardInfo | None, params: list[ParamRecord], rejects: list[dict], part) -> None:
    keys = {r.key for r in part}
    state = {
        "shard": info.to_dict() if info else None,
        "params": [p.to_dict() for p in params],
        "rejects": [r for r in rejects if r["key"] in keys],
        "fooled": sum(p.success for p in params),
    }
    atomic_write(path, json.dumps(state, sort_keys=True))


def _summarise(summary: PackSummary, params: list[dict], rejects: list[dict]) -> None:
    """Totals from the checkpoints, so resumed and distributed runs report everything."""
    summary.protected = len(params)
    summary.fooled = sum(p["success"] for p in params)
    summary.protected_correct = summary.protected - summary.fooled
    summary.clean_correct = sum(p["clean_correct"] for p in params)
    summary.queries = [p["queries"] for p in params]
    summary.rejects = rejects


def _learn(source: Source, logo, surrogates, config: PackConfig, run: OwnerSecrets, device) -> np.ndarray:
    """Learn the logo's colours once on the first ``protection.universal.images`` images of the source."""
    picks = []
    for rec in source.records[: config.protection.universal.images]:
        try:
            picks.append((rec, *_load(rec, config.resize, source.masks is not None)))
        except BadInputError:
            continue
    size = picks[0][1].shape[:2]
    picks = [p for p in picks if p[1].shape[:2] == size]
    images = np.stack([p[1] for p in picks])
    labels = [p[0].label for p in picks]
    boxes = [p[2] or [] for p in picks]
    gen = torch.Generator().manual_seed(run.search_seed)
    return learn_logo(images, labels, boxes, surrogates, logo=logo, config=config.protection, generator=gen)
