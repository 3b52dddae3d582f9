"""Visible adversarial watermarks: placement search, exact rendering, lesion masks.

The maths lives in pure batched functions (:mod:`.render`, :mod:`.feasible`,
:mod:`.transforms`); :mod:`.optim` holds the thin optimizers and attacks (one per
file), :mod:`.config` the nested :class:`ProtectionConfig` and its presets, and
:mod:`.engine` the batched orchestrator :func:`protect`.
"""

from __future__ import annotations

from medlocker.watermark.config import (
    DEFAULT_PRESET,
    PRESETS,
    LayerConfig,
    PlacementConfig,
    ProtectionConfig,
    SearchConfig,
    TextureConfig,
    UniversalConfig,
    protection_preset,
)
from medlocker.watermark.engine import Result, image_generator, protect
from medlocker.watermark.feasible import (
    feasible_positions,
    field_of_view,
    forbidden_mask,
    project,
    sample_feasible,
)
from medlocker.watermark.logo import default_logo, load_logo, logo_size, resize_logo
from medlocker.watermark.optim.texture import refine_colors
from medlocker.watermark.optim.universal import learn_logo
from medlocker.watermark.params import Box, Placement
from medlocker.watermark.render import (
    crop_patch,
    render_batch,
    render_exact,
    render_soft,
    restore_exact,
)
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
    "ProtectionConfig",
    "PlacementConfig",
    "TextureConfig",
    "UniversalConfig",
    "LayerConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "protection_preset",
    "SearchConfig",
    "Result",
    "protect",
    "learn_logo",
    "refine_colors",
    "image_generator",
]
