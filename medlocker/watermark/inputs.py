"""Checking and converting what the protection entry points are given, and per-image seeds.

Shared by :func:`~medlocker.watermark.protect` and the attacks of
:mod:`medlocker.watermark.optim` that take whole image batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["as_batch", "check_models", "default_device", "image_generator", "content_seed", "to_float"]


def image_generator(seed: int, image_seed: int | str) -> torch.Generator:
    """A CPU generator for one image, from the run seed and the image's own seed."""
    digest = hashlib.sha256(f"medlocker.watermark:{int(seed)}:{image_seed}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return g


def content_seed(image: np.ndarray, label: int) -> str:
    """A seed from an image's bytes and label (when the caller gives none)."""
    h = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    h.update(f"|{image.shape}|{int(label)}".encode())
    return h.hexdigest()


def as_batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``uint8 [B, H, W, 3]`` from an array or a list of same-size images."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = images
    else:
        items = list(images)
        if not items:
            return np.zeros((0, 1, 1, 3), dtype=np.uint8)
        shapes = {np.asarray(i).shape for i in items}
        if len(shapes) != 1:
            raise ValueError(f"protect() needs same-size images in one batch, got shapes {sorted(shapes)}")
        batch = np.stack([np.asarray(i) for i in items])
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got {batch.dtype} {batch.shape}")
    return batch


def to_float(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """``uint8 [B, H, W, 3]`` -> float ``[B, 3, H, W]`` in ``[0, 1]`` on ``device`` (exactly ``k / 255``)."""
    return torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def default_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_models(surrogates: Sequence[nn.Module], labels: Sequence[int]) -> None:
    if not surrogates:
        raise ValueError("need at least one surrogate model")
    n = {getattr(m, "num_classes", None) for m in surrogates} - {None}
    if len(n) > 1:
        raise ValueError(f"surrogates disagree on the number of classes: {sorted(n)}")
    if n and labels and not all(0 <= int(l) < next(iter(n)) for l in labels):
        raise ValueError(f"labels must be in 0..{next(iter(n)) - 1}")
