"""Write a synthetic dataset to disk: ``labels.csv``, ``images/`` and IDRiD-style ``masks/``."""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from medlocker.data.synth.grades import LESION_TYPES
from medlocker.data.synth.render import generate_fundus, synthetic_id
from medlocker.util import atomic_open

__all__ = ["write_synthetic_dataset"]


def write_synthetic_dataset(
    out: str | os.PathLike[str],
    *,
    n: int,
    size: int,
    seed: int,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write ``n`` synthetic images as a CSV + IDRiD-style mask folder.

    Layout::

        out/labels.csv                    columns image,label (image = sample id)
        out/images/<id>.png
        out/masks/<lesion type>/<id>.png  8-bit 0/255, only where the type is present

    ``labels.csv`` is written last, so its presence marks a complete dataset.

    Args:
        out: destination folder (created if needed; existing files are overwritten).
        n: number of images.
        size: side in pixels.
        seed: dataset seed.
        progress: show a tqdm progress bar.
        workers: processes that render and encode images (the output does not
            depend on it).

    Returns:
        The dataset folder.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    root = Path(out)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for code in LESION_TYPES:
        (root / "masks" / code).mkdir(parents=True, exist_ok=True)

    jobs = [(root, seed, i, size) for i in range(n)]
    with contextlib.ExitStack() as stack:
        if workers > 1 and n > 1:
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(ProcessPoolExecutor(min(workers, n)))
            done = pool.map(_write_one, jobs, chunksize=max(1, min(32, n // (4 * workers))))
        else:
            done = map(_write_one, jobs)
        if progress:
            from tqdm.auto import tqdm

            done = tqdm(done, total=n, desc="synthesizing", unit="img")
        rows = list(done)

    with atomic_open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    return root


def _write_one(job: tuple[Path, int, int, int]) -> tuple[str, int]:
    """Render image ``i`` and write it with its masks; returns its ``labels.csv`` row."""
    root, seed, i, size = job
    sample = generate_fundus(seed, i, size)
    sid = synthetic_id(i)
    Image.fromarray(sample.image).save(root / "images" / f"{sid}.png")
    for code, mask in sample.masks.items():
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / code / f"{sid}.png")
    return sid, sample.label


