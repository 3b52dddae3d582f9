"""Pre-flight checks: what can be told wrong before the first image is searched.

A surrogate trained on other classes than the source's would fail deep in Grad-CAM
(``index 6 is out of bounds``) after work had started; an image too small to carry a
visible logo would be misreported as having no lesion-free place for it. Both are
caught here, with their real cause and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data import Source
from ..models import Classifier
from ..shards import layout
from ..watermark import PlacementConfig
from ..watermark.logo import logo_size
from .config import PackConfig

__all__ = ["MIN_LOGO_SIDE", "check_before_work", "logo_too_small", "model_labels"]

MIN_LOGO_SIDE = 4
"""Smallest logo side in pixels that still makes a visible mark (and leaves the search room)."""


def check_before_work(
    source: Source, surrogates: Sequence[Classifier], logo: np.ndarray, config: PackConfig
) -> tuple[int, ...]:
    """Every check that needs no image decoded: classes, a fixed ``resize``, the shard prefix.

    Returns:
        The surrogates' output index of each source class (:func:`model_labels`).

    Raises:
        ValueError: the surrogates' classes do not cover the source's, the images are
            resized below what the logo needs, or the shard prefix is too long.
    """
    labels = model_labels(source, surrogates)
    if config.resize:
        problem = logo_too_small((config.resize, config.resize), logo, config.protection.placement)
        if problem:
            raise ValueError(f"--resize {config.resize}: {problem}")
    try:
        layout.dataset_prefix(config.prefix, "")
    except ValueError:
        raise ValueError(
            f"shard prefix {config.prefix!r}: use 1-55 characters from [A-Za-z0-9_-] "
            "(the packer appends '-' and 8 hex digits of the dataset id)"
        ) from None
    return labels


def model_labels(source: Source, surrogates: Sequence[Classifier]) -> tuple[int, ...]:
    """The surrogates' output index of each source class, matched by class name.

    A source holding only some grades (a CSV without grade 0, say) numbers its classes
    from 0 again; the search must attack each image's class in the model's numbering.

    Raises:
        ValueError: no surrogate, surrogates with different classes, or a source class
            that no surrogate output stands for.
    """
    if not surrogates:
        raise ValueError("pack needs at least one surrogate model")
    classes = surrogates[0].classes
    for m in surrogates[1:]:
        if m.classes != classes:
            raise ValueError(
                f"the surrogates disagree on their classes ({surrogates[0].arch}: {list(classes)}, "
                f"{m.arch}: {list(m.classes)}): an ensemble needs models trained on the same classes"
            )
    missing = [c for c in source.classes if c not in classes]
    if missing:
        raise ValueError(
            f"the surrogate {surrogates[0].arch} has {len(classes)} classes {list(classes)}, but the source "
            f"{source.root} has {len(source.classes)} {list(source.classes)}, and {missing} are not among the "
            "model's: pass a model trained on this source's classes (tools/train.py)"
        )
    return tuple(classes.index(c) for c in source.classes)


def logo_too_small(image_hw: tuple[int, int], logo: np.ndarray, placement: PlacementConfig) -> str | None:
    """Why an image of ``image_hw`` cannot carry the logo, or None if it can."""
    H, W = int(image_hw[0]), int(image_hw[1])
    try:
        w, h = logo_size(logo, (H, W), scale=placement.logo_scale)
    except ValueError:
        w = h = 0
    if min(w, h) >= MIN_LOGO_SIDE:
        return None
    return (
        f"the image is {W}x{H} px, too small for the logo: at logo scale {placement.logo_scale} it would be "
        f"{w}x{h} px (at least {MIN_LOGO_SIDE}x{MIN_LOGO_SIDE} needed); use larger images, --resize, "
        "or a larger --logo-scale"
    )
