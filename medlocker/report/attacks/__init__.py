"""The attacker suite: what a competent unlicensed user does to a published image.

DESIGN.md ("Threat model of the protection"): the attacker has the public
images, the public package (its default logo and rendering code) and their own
DR models, and may preprocess, find and remove the visible mark, or purify,
before inference. Each attack here is a pure array kernel over one public
image (one module per attack family):

==================  ==========  ===============================================================
name                kind        what
==================  ==========  ===============================================================
``published``       published   the image as published
``graham``          preprocess  Graham local colour subtraction + circular crop at 90 % of the FOV
``clahe``           preprocess  CLAHE on L*a*b* L + the same crop
``inpaint_telea``   removal     logo found by template matching (any scale, rotation), Telea
``inpaint_ns``      removal     the same with Navier-Stokes inpainting
``learned_remover`` removal     the attacker's own SLBR-style U-Net (:mod:`.learned`)
``inverse_blend``   removal     the blend inverted at the found logo, opacity estimated
``jpeg50``          purify      JPEG quality 50
``jpeg30``          purify      JPEG quality 30
``blur``            purify      Gaussian blur, sigma 1.5 px
``bits4``           purify      4 bits per channel (feature squeezing)
``oracle_inpaint``  oracle      Telea inpainting of the *true* logo box: an upper bound
==================  ==========  ===============================================================

Preprocessing attacks are measured on the attacker's models trained on clean
images preprocessed the same way (the caller provides them); the oracle is
reported separately and excluded from the worst case.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from medlocker.report.attacks.inpaint import dilate, inpaint_mask
from medlocker.report.attacks.invert import estimate_opacity, invert_blend
from medlocker.report.attacks.learned import Remover, remove_learned
from medlocker.report.attacks.locate import Located, box_iou, locate_logo, logo_layer
from medlocker.report.attacks.preprocess import PREPROCESSORS
from medlocker.report.attacks.purify import bit_depth, gaussian_blur, jpeg

__all__ = ["SUITE", "KINDS", "Attacker", "attack", "worst_case_names", "Located", "locate_logo", "box_iou"]

KINDS = ("published", "preprocess", "removal", "purify", "oracle")

SUITE: dict[str, str] = {
    "published": "published",
    "graham": "preprocess",
    "clahe": "preprocess",
    "inpaint_telea": "removal",
    "inpaint_ns": "removal",
    "learned_remover": "removal",
    "inverse_blend": "removal",
    "jpeg50": "purify",
    "jpeg30": "purify",
    "blur": "purify",
    "bits4": "purify",
    "oracle_inpaint": "oracle",
}
"""Every attack of the suite by name -> its kind (see the module docstring)."""

MASK_DILATION = 2
"""Pixels the removal masks are grown by around the located logo."""

_PURIFY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg50": partial(jpeg, quality=50),
    "jpeg30": partial(jpeg, quality=30),
    "blur": partial(gaussian_blur, sigma=1.5),
    "bits4": partial(bit_depth, bits=4),
}


@dataclass(frozen=True)
class Attacker:
    """What the attacker holds besides the public image.

    Attributes:
        logo: the public RGBA logo.
        remover: their trained :class:`~medlocker.report.attacks.learned.Remover`,
            or None (then ``learned_remover`` is not run and the report says so).
        remover_info: how the remover was trained and its PSNR on held-out pasted images.
    """

    logo: np.ndarray
    remover: Remover | None = None
    remover_info: Mapping[str, Any] = field(default_factory=dict)


def attack(
    name: str,
    img: np.ndarray,
    attacker: Attacker,
    *,
    located: Located | None = None,
    true_box: Sequence[int] | None = None,
) -> np.ndarray:
    """Apply the suite's attack ``name`` to one public uint8 ``[H, W, 3]`` image.

    Args:
        name: a key of :data:`SUITE`.
        img: the public image.
        attacker: the attacker's logo and remover.
        located: a precomputed :func:`locate_logo` result (shared by the removal
            attacks); computed here when a removal attack needs it.
        true_box: the true logo box, for ``oracle_inpaint`` only (None: no logo,
            the image is returned unchanged).

    Raises:
        ValueError: unknown ``name``, or ``learned_remover`` without a remover.
    """
    kind = SUITE.get(name)
    if kind is None:
        raise ValueError(f"unknown attack {name!r}; the suite has: {', '.join(SUITE)}")
    if kind == "published":
        return img.copy()
    if kind == "preprocess":
        return PREPROCESSORS[name](img)
    if kind == "purify":
        return _PURIFY[name](img)
    if kind == "oracle":
        if true_box is None:
            return img.copy()
        x0, y0, x1, y1 = (int(v) for v in true_box)
        mask = np.zeros(img.shape[:2], bool)
        mask[max(0, y0) : y1, max(0, x0) : x1] = True
        return inpaint_mask(img, dilate(mask, MASK_DILATION), method="telea")
    if name == "learned_remover":
        if attacker.remover is None:
            raise ValueError("learned_remover needs Attacker.remover (train one with train_remover)")
        return remove_learned(attacker.remover, img)
    where = located
    if where is None:
        try:
            where = locate_logo(img, attacker.logo)
        except ValueError:  # no logo size fits this (tiny) image: nothing to remove
            return img.copy()
    alpha, colour = logo_layer(attacker.logo, where, img.shape)
    if name == "inverse_blend":
        return invert_blend(img, alpha, colour, estimate_opacity(img, alpha, colour))
    return inpaint_mask(img, dilate(alpha > 0, MASK_DILATION), method=name.removeprefix("inpaint_"))


def worst_case_names(names: Sequence[str]) -> list[str]:
    """The attacks of ``names`` that count towards the worst case (all but the oracle)."""
    return [n for n in names if SUITE[n] != "oracle"]
