"""Stage 2, read: decode source images and turn mask files into lesion boxes, in a pool.

Reads of the next shard group run while the current one is searched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data import Record, load_image, load_mask
from ..errors import BadInputError
from ..watermark import boxes_from_masks
from .preflight import logo_too_small
from .run import PackRun

__all__ = ["Box", "Loaded", "Part", "load_record", "loaded_records", "read_group"]

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Part:
    """One shard of a group under way: its records and their pending reads."""

    shard: int
    records: Sequence[Record]
    loads: Sequence[Future[tuple[np.ndarray, list[Box] | None]]]


@dataclass
class Loaded:
    """One record read: pixels, lesion boxes (None: find them with Grad-CAM), its shard."""

    record: Record
    image: np.ndarray
    boxes: list[Box] | None
    shard: int


def load_record(record: Record, resize: int | None, masked: bool = False) -> tuple[np.ndarray, list[Box] | None]:
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


def read_group(run: PackRun, group: Sequence[int], readers: Executor) -> list[Part]:
    """Start reading every record of the shards in ``group``."""
    return [
        Part(i, run.records(i), [readers.submit(load_record, r, run.config.resize, run.masked) for r in run.records(i)])
        for i in group
    ]


def loaded_records(run: PackRun, parts: Sequence[Part]) -> Iterator[Loaded]:
    """The records of ``parts`` as their reads finish, in order; unreadable ones are rejected."""
    for part in parts:
        for rec, fut in zip(part.records, part.loads):
            try:
                with run.summary.timed("wait_read"):
                    image, boxes = fut.result()
            except (BadInputError, OSError, ValueError) as e:
                run.summary.reject(rec.key, rec.path, str(e))
                log.warning("rejected %s: %s", rec.path, e)
                run.progress(0, 0)
                continue
            problem = logo_too_small(image.shape[:2], run.logo, run.config.protection.placement)
            if problem:
                run.summary.reject(rec.key, rec.path, problem)
                log.warning("rejected %s: %s", rec.path, problem)
                run.progress(0, 0)
                continue
            yield Loaded(rec, image, boxes, part.shard)
