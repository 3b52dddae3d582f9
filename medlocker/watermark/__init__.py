"""Visible adversarial watermarks: placement search, exact rendering, lesion masks.

The maths lives in pure batched functions (:mod:`.render`, :mod:`.feasible`,
:mod:`.transforms`); :mod:`.optim` holds the thin optimizers and
:mod:`.engine` the batched orchestrator :func:`protect`.
"""

from __future__ import annotations

from medlocker.watermark.engine import Result, SearchConfig, image_generator, learn_logo, protect, refine_colors
from medlocker.watermark.feasible import (
    feasible_positions,
    field_of_view,
    forbidden_mask,
    project,
    sample_feasible,
)
from medlocker.watermark.logo import default_logo, load_logo, logo_size, resize_logo
from medlocker.watermark.params import Box, Placement
from medlocker.watermark.render import crop_patch, render_batch, render_exact, render_soft, restore_exact
from medlocker.watermark.wsm import boxes_from_masks, gradcam_boxes

__all__ = [
    "Box",
    "Placement",
    "default_logo",
    "load_logo",
    "resize_logo",
    "logo_size",
    "render_exact",
    "render_batch",
    "render_soft",
    "restore_exact",
    "crop_patch",
    "field_of_view",
    "forbidden_mask",
    "feasible_positions",
    "project",
    "sample_feasible",
    "boxes_from_masks",
    "gradcam_boxes",
    "SearchConfig",
    "Result",
    "protect",
    "learn_logo",
    "refine_colors",
    "image_generator",
]
