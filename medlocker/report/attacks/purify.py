"""Purification: generic filters that destroy small adversarial signal without finding the mark.

JPEG and Gaussian blur are the report's transform kernels
(:mod:`medlocker.report.robustness`: the real codec, not the torch stand-ins of
the search's EOT views); bit-depth reduction is the "feature squeezing" of
Xu, Evans and Qi (NDSS 2018): each channel rounded to ``2**bits`` levels.
"""

from __future__ import annotations

import numpy as np

from medlocker.report.metrics import check_image
from medlocker.report.robustness import gaussian_blur, jpeg

__all__ = ["bit_depth", "jpeg", "gaussian_blur"]


def bit_depth(img: np.ndarray, bits: int) -> np.ndarray:
    """Round every channel to ``2**bits`` evenly spaced levels of 0..255 (feature squeezing).

    ``v -> round(round(v / 255 * (2**bits - 1)) * 255 / (2**bits - 1))``: with 4 bits the
    levels are 0, 17, 34, ..., 255.
    """
    img = check_image(img)
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    levels = (1 << int(bits)) - 1
    q = np.rint(img.astype(np.float64) * levels / 255.0)
    return np.rint(q * 255.0 / levels).astype(np.uint8)
