"""One synthetic fundus photograph: anatomy, vessels, lesions, camera."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medlocker.data.synth.anatomy import draw_eye, paint_retina
from medlocker.data.synth.camera import field_of_view, photograph
from medlocker.data.synth.canvas import Canvas
from medlocker.data.synth.grades import NUM_GRADES
from medlocker.data.synth.lesions import paint_lesions
from medlocker.data.synth.vessels import grow_vessels, paint_vessels

__all__ = ["MIN_SIZE", "SynthSample", "generate_fundus", "synthetic_id", "synthetic_label"]

MIN_SIZE = 16
_ID_PREFIX = "synth_"


@dataclass(frozen=True)
class SynthSample:
    """One synthetic fundus image.

    Attributes:
        image: uint8 RGB, ``[size, size, 3]``.
        label: DR grade 0-4.
        masks: lesion code -> bool ``[size, size]`` mask; only the types present
            in the image (exactly ``GRADE_LESIONS[label]``), each non-empty.
    """

    image: np.ndarray
    label: int
    masks: dict[str, np.ndarray]


def synthetic_label(seed: int, index: int) -> int:
    """The grade of image ``index``: balanced within every block of five."""
    _check_seed_index(seed, index)
    order = np.random.default_rng([seed, index // NUM_GRADES, 0x5EED]).permutation(NUM_GRADES)
    return int(order[index % NUM_GRADES])


def synthetic_id(index: int) -> str:
    """Sample id of image ``index``, e.g. ``synth_000123`` (no dots)."""
    return f"{_ID_PREFIX}{index:06d}"


def generate_fundus(seed: int, index: int, size: int) -> SynthSample:
    """Render synthetic fundus image ``index`` of the dataset drawn from ``seed``.

    Args:
        seed: dataset seed (non-negative).
        index: image index (non-negative); the image depends only on ``(seed, index)``.
        size: side in pixels (square images), at least ``MIN_SIZE``.

    Returns:
        The image, its grade and its lesion masks.

    Raises:
        ValueError: negative seed or index, or a size below ``MIN_SIZE``.
    """
    _check_seed_index(seed, index)
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    cv = Canvas(int(size))
    label = synthetic_label(seed, index)
    rng = np.random.default_rng([seed, index])
    eye = draw_eye(rng)
    img = paint_retina(cv, rng, eye)
    tree = grow_vessels(rng, eye)
    paint_vessels(cv, rng, img, tree)
    inside = field_of_view(cv, eye) < 0.97
    masks = paint_lesions(cv, rng, img, eye, tree, label, inside)
    image = photograph(cv, rng, np.random.default_rng([seed, index, 0xCA4E7A]), img, eye)
    return SynthSample(image=image, label=label, masks=masks)


def _check_seed_index(seed: int, index: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
