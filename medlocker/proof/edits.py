"""The edits a re-poster makes to a leaked image, as one pure function.

Ownership proofs are calibrated against this edit model (``benchmarks/proof.py``):
rotate about the centre (black corners, as image editors do), crop a fraction of
each side, rescale, and re-encode as JPEG. Tests and benchmarks build their leaks
with :func:`repost` so that the model is written down once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Repost", "repost"]


@dataclass(frozen=True)
class Repost:
    """One re-poster's edit, applied in this order by :func:`repost`.

    Attributes:
        angle: rotation in degrees, counter-clockwise, about the image centre.
        crop: fractions cut from (left, top, right, bottom), each in ``[0, 0.5)``.
        scale: resize factor applied after the crop (bicubic up, area-averaging down).
        quality: JPEG quality of the re-encode; ``None`` keeps the pixels lossless.
    """

    angle: float = 0.0
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    scale: float = 1.0
    quality: int | None = None

    def __post_init__(self) -> None:
        if len(self.crop) != 4 or not all(0 <= c < 0.5 for c in self.crop):
            raise ValueError(f"crop must be 4 fractions in [0, 0.5), got {self.crop}")
        if not 0.05 <= self.scale <= 20:
            raise ValueError(f"scale must be in [0.05, 20], got {self.scale}")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")


def repost(image: np.ndarray, edit: Repost) -> np.ndarray:
    """Apply ``edit`` to a uint8 ``[H, W, 3]`` image; returns the edited uint8 image."""
    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if edit.angle:
        im = im.rotate(edit.angle, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    w, h = im.size
    left, top, right, bottom = edit.crop
    box = (round(left * w), round(top * h), w - round(right * w), h - round(bottom * h))
    im = im.crop(box)
    if edit.scale != 1.0:
        size = (max(1, round(im.size[0] * edit.scale)), max(1, round(im.size[1] * edit.scale)))
        im = im.resize(size, Image.BICUBIC if edit.scale > 1 else Image.BOX)
    if edit.quality is not None:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=edit.quality)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(im)
