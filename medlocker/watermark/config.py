"""How images are protected: one nested, frozen configuration, and named presets.

A protection has independent parts, each with its own settings and its own cost:

* :class:`PlacementConfig` -- where the logo goes and how opaque it is (the search of
  MedLocker / Adv-watermark), paid from ``placement.budget`` queries, final check included;
* :class:`TextureConfig` -- per-image logo colours at the found placement (an adversarial
  texture inside the logo's shape), ``steps`` forward+backward passes on top;
* :class:`UniversalConfig` -- the logo's colours learned once per dataset ("learned"
  mode) before any image is searched;
* :class:`ProtectionConfig` -- the three, the run seed and how forwards are batched.

:meth:`ProtectionConfig.queries` is the most queries one image costs; callers never
re-derive it. Presets are data (:data:`PRESETS`), looked up with
:func:`protection_preset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from medlocker.watermark.logo import MAX_LOGO_SCALE
from medlocker.watermark.optim import OPTIMIZERS
from medlocker.watermark.transforms import get_view

__all__ = [
    "PlacementConfig",
    "TextureConfig",
    "UniversalConfig",
    "LayerConfig",
    "ProtectionConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "protection_preset",
    "SearchConfig",
    "FLAT_NAMES",
    "MARK_MAX_CHANGE",
    "MARK_SSIM_MIN",
]

UNIVERSAL_MODES = ("fixed", "learned")


def _views(views: tuple[str, ...]) -> None:
    for view in views:
        get_view(view)


@dataclass(frozen=True)
class PlacementConfig:
    """The placement search: position, size and opacity of the logo.

    Attributes:
        optimizer: ``"bhe"`` | ``"gradient"`` | ``"blackbox"`` (:data:`~medlocker.watermark.optim.OPTIMIZERS`).
        budget: most model queries per image for the search, its final check included
            (one query = one image through one surrogate under one view; forward+backward = 1).
        logo_scale: logo area as a fraction of the image, ``<= 0.0625``.
        min_logo_scale: when set, an image with no room for the logo at ``logo_scale``
            (a lesion-dense fundus) retries with a smaller logo, down to this fraction,
            instead of getting no watermark. None: never shrink.
        logo_shrink: each retry multiplies the logo area by this factor (0 < f < 1).
        opacity: allowed opacity range on 0..255.
        margin: success needs ``true logit < max other logit - margin`` on every surrogate.
        lesion_margin: px kept between the logo box and any lesion box.
        eot: transform views added to the search objective (``"jpeg75"``, ``"resize0.5"``,
            ``"median3"``, ``"blur"``, ``"crop"``).
    """

    optimizer: str = "gradient"
    budget: int = 1000
    logo_scale: float = 0.04
    min_logo_scale: float | None = None
    logo_shrink: float = 0.5
    opacity: tuple[int, int] = (96, 224)
    margin: float = 0.0
    lesion_margin: int = 4
    eot: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1 query, got {self.budget}")
        if not 0.0 < self.logo_scale <= MAX_LOGO_SCALE:
            raise ValueError(f"logo_scale must be in (0, {MAX_LOGO_SCALE}], got {self.logo_scale}")
        if self.min_logo_scale is not None and not 0.0 < self.min_logo_scale <= self.logo_scale:
            raise ValueError(f"min_logo_scale must be in (0, logo_scale], got {self.min_logo_scale}")
        if not 0.0 < self.logo_shrink < 1.0:
            raise ValueError(f"logo_shrink must be in (0, 1), got {self.logo_shrink}")
        lo, hi = self.opacity
        if not 1 <= lo <= hi <= 255:
            raise ValueError(f"opacity range must satisfy 1 <= lo <= hi <= 255, got {self.opacity}")
        if self.margin < 0 or self.lesion_margin < 0:
            raise ValueError("margin and lesion_margin must be >= 0")
        _views(self.eot)

    @property
    def scales(self) -> tuple[float, ...]:
        """Logo area fractions to try: ``logo_scale``, then shrinking by ``logo_shrink`` down to ``min_logo_scale``."""
        out = [self.logo_scale]
        if self.min_logo_scale is not None:
            while out[-1] * self.logo_shrink >= self.min_logo_scale * (1 - 1e-9):
                out.append(out[-1] * self.logo_shrink)
        return tuple(out)


@dataclass(frozen=True)
class TextureConfig:
    """Per-image logo colours at the found placement (:mod:`medlocker.watermark.optim.texture`).

    The logo's alpha (its shape) and the placement's opacity are kept, so only pixels
    the logo already covers change; each sample then commits to its own logo.

    Attributes:
        steps: most Adam steps per image; 0 = off. An image stops early once every
            surrogate is past ``margin`` under every view.
        margin: how far below zero the steps push each surrogate's margin.
        cell: one colour offset per ``cell x cell`` px block, bilinearly upsampled over the
            logo: a low-frequency texture, which survives resizing and JPEG. 1 = per pixel.
        eot: the views of the steps; None = the placement search's views.
        lr: Adam learning rate on the colour offsets.
        max_change: when set, every channel of the textured logo stays within this many
            levels (0..255) of the logo's own colour (``base + max_change * tanh(offset)``), so
            the mark keeps its light and dark structure and stays readable as the owner's
            logo; None: any colour (``sigmoid(logit(base) + offset)``), which can turn the
            mark into coloured noise.
        diversity: each step sees the render shrunk by a factor in ``[1 - diversity, 1]`` and
            shifted (:func:`~medlocker.watermark.transforms.diverse`, one draw per step): input
            diversity, which makes the texture and the layer transfer to models that were not
            in the search, at no extra query. 0 = off.
    """

    steps: int = 0
    margin: float = 4.0
    cell: int = 1
    eot: tuple[str, ...] | None = None
    lr: float = 0.15
    max_change: int | None = None
    diversity: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.diversity < 1.0:
            raise ValueError(f"texture diversity must be in [0, 1), got {self.diversity}")
        if self.max_change is not None and not 1 <= self.max_change <= 255:
            raise ValueError(f"texture max_change must be in 1..255 or None, got {self.max_change}")
        if self.steps < 0 or self.margin < 0 or self.lr <= 0:
            raise ValueError("texture steps and margin must be >= 0 and lr > 0")
        if self.cell < 1:
            raise ValueError(f"texture cell must be >= 1 px, got {self.cell}")
        _views(self.eot or ())

    def views(self, placement: PlacementConfig) -> tuple[str, ...]:
        """The EOT views of the steps (``eot``, else the placement search's)."""
        return placement.eot if self.eot is None else tuple(self.eot)

    def queries(self, placement: PlacementConfig, n_surrogates: int) -> int:
        """Most queries the texture costs one image: every step (each surrogate under the identity and
        each view) plus one fp32 check of the textured render per surrogate. 0 when off."""
        if not self.steps:
            return 0
        views = ["identity"] + [v for v in self.views(placement) if v != "identity"]
        return (self.steps * len(views) + 1) * n_surrogates


@dataclass(frozen=True)
class LayerConfig:
    """The adversarial layer outside the mark (:mod:`medlocker.watermark.layer`), optimised jointly
    with the texture (it needs ``texture.steps > 0``).

    Off the logo box and the lesion boxes (with ``lesion_margin``), inside the field of view, each
    channel changes by at most ``amplitude`` levels, interpolated from one value per ``cell`` px:
    low-frequency, so it survives JPEG and resizing, and outside the box, so painting the logo
    over leaves it in place. Each texture step also evaluates the image with the logo box filled
    from its surroundings (a differentiable stand-in for inpainting, :func:`fill_box`), so
    the layer is pushed to work without the mark.

    Attributes:
        amplitude: most change per channel (0..255 scale); 0 = off.
        cell: px between grid nodes.
        lesion_margin: px kept off every lesion box; None = the placement's.
    """

    amplitude: int = 0
    cell: int = 8
    lesion_margin: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.amplitude <= 127 or self.cell < 1:
            raise ValueError(f"layer amplitude must be in 0..127 and cell >= 1, got {self.amplitude}, {self.cell}")
        if self.lesion_margin is not None and self.lesion_margin < 0:
            raise ValueError("layer lesion_margin must be >= 0")

    @property
    def on(self) -> bool:
        return self.amplitude > 0


@dataclass(frozen=True)
class UniversalConfig:
    """The logo's colours: as given (``"fixed"``) or learned once per dataset (``"learned"``).

    Learning (:mod:`medlocker.watermark.optim.universal`) minimises the ensemble margin in
    expectation over random training images and random feasible placements at the highest
    allowed opacity: a universal adversarial colouring. Its queries are paid once per
    dataset, not per image.

    Attributes:
        mode: ``"fixed"`` | ``"learned"``.
        steps: Adam steps; images: training images drawn from (the packer reads the first
            ``images`` records of the source); batch_size: images per step; placements:
            random placements per image and step; lr: learning rate on the colour logits;
            margin: each surrogate is pushed down to ``-margin`` (at least the placement's).
    """

    mode: str = "fixed"
    steps: int = 100
    images: int = 32
    batch_size: int = 16
    placements: int = 4
    lr: float = 0.1
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in UNIVERSAL_MODES:
            raise ValueError(f"universal mode must be one of {UNIVERSAL_MODES}, got {self.mode!r}")
        if min(self.steps, self.images, self.batch_size, self.placements) < 1 or self.lr <= 0 or self.margin < 0:
            raise ValueError("universal steps, images, batch_size and placements must be >= 1, lr > 0, margin >= 0")

    @property
    def learned(self) -> bool:
        return self.mode == "learned"


@dataclass(frozen=True)
class ProtectionConfig:
    """Everything that decides how an image is protected (see the module docstring).

    Attributes:
        placement, texture, universal: the parts.
        seed: mixed into every image's generator (the packer sets it from the run secret).
        amp: bf16 autocast for search forwards on CUDA (decisions re-checked in fp32).
        batch_size: most rows per forward (and images per texture batch).
    """

    placement: PlacementConfig = field(default_factory=PlacementConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    universal: UniversalConfig = field(default_factory=UniversalConfig)
    layer: LayerConfig = field(default_factory=LayerConfig)
    seed: int = 0
    amp: bool = True
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name, kind in (("placement", PlacementConfig), ("texture", TextureConfig), ("universal", UniversalConfig),
                           ("layer", LayerConfig)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"ProtectionConfig.{name} must be a {kind.__name__}, got "
                                f"{type(getattr(self, name)).__name__}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.layer.on and not self.texture.steps:
            raise ValueError("the layer is optimised with the texture: give texture.steps > 0")

    def queries(self, n_surrogates: int) -> int:
        """Most model queries :func:`~medlocker.watermark.protect` spends on one image with
        ``n_surrogates`` surrogates: the placement budget plus the texture's steps and check."""
        extra = n_surrogates * self.texture.steps if self.layer.on else 0  # the filled-box view of each step
        return self.placement.budget + self.texture.queries(self.placement, n_surrogates) + extra

    def override(self, **flat: Any) -> ProtectionConfig:
        """This configuration with parts' fields replaced by their flat names (the command-line
        spelling: ``budget``, ``logo_mode``, ``colour_steps``, ... see :data:`FLAT_NAMES`).
        None values are ignored; ``min_logo_scale=0`` means never shrink. A ``logo_scale`` below
        ``min_logo_scale`` lowers the latter."""
        unknown = sorted(set(flat) - set(FLAT_NAMES))
        if unknown:
            raise TypeError(f"unknown protection fields {unknown}; valid: {', '.join(FLAT_NAMES)}")
        parts: dict[str, dict[str, Any]] = {"placement": {}, "texture": {}, "universal": {}, "layer": {}, "": {}}
        for key, value in flat.items():
            if value is not None:
                part, name = FLAT_NAMES[key]
                if key == "min_logo_scale" and value == 0:
                    value = None  # 0 = never shrink
                parts[part][name] = tuple(value) if isinstance(value, list) else value
        place = parts["placement"]
        lo = place.get("min_logo_scale", self.placement.min_logo_scale)
        if "logo_scale" in place and lo is not None and lo > place["logo_scale"]:
            place["min_logo_scale"] = place["logo_scale"]
        return replace(self, placement=replace(self.placement, **place), texture=replace(self.texture, **parts["texture"]),
                       universal=replace(self.universal, **parts["universal"]),
                       layer=replace(self.layer, **parts["layer"]), **parts[""])

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): what the packer records in its settings."""

        def plain(obj: Any) -> Any:
            if hasattr(obj, "__dataclass_fields__"):
                return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
            return list(obj) if isinstance(obj, tuple) else obj

        return plain(self)


MARK_MAX_CHANGE = 64
"""The presets' bound on the texture (levels per channel around the logo's colours): keeps the
mark recognisable (see :data:`MARK_SSIM_MIN` and ``benchmarks/protection.py``)."""
MARK_SSIM_MIN = 0.5
"""Every preset's mark must keep at least this SSIM of its luminance against the public logo's
(``tests/test_presets.py``). Measured on synthetic data (``benchmarks/protection.py``): the
bounded texture's worst mark 0.60 (median 0.79), the unbounded one's 0.19 (median 0.66)."""

_PAPER = ProtectionConfig(placement=PlacementConfig(min_logo_scale=0.01))
_STANDARD = ProtectionConfig(
    placement=PlacementConfig(budget=40, logo_scale=0.0625, min_logo_scale=0.01, logo_shrink=0.7, opacity=(96, 255)),
    texture=TextureConfig(steps=38, cell=4, max_change=MARK_MAX_CHANGE),
    universal=UniversalConfig(mode="learned"),
    layer=LayerConfig(amplitude=3, cell=8),
)
_STRONG = replace(_STANDARD, texture=replace(_STANDARD.texture, steps=100, eot=("jpeg75", "resize0.5", "median3")))

PRESETS: Mapping[str, ProtectionConfig] = MappingProxyType({
    "paper": _PAPER,
    "standard": _STANDARD,
    "strong": _STRONG,
})
"""Named protections:

* ``paper`` -- the seed's method (MedLocker / MIAD-MARK): the fixed logo, searched over
  position and transparency only;
* ``standard`` -- the default: a learned universal logo, a larger logo that may shrink
  off the lesions, a short placement search, then up to 38 per-image steps that shape the
  logo's colours (a bounded texture on a 4 px grid) and an adversarial layer outside the
  logo and the lesions (+-3 levels, 8 px grid), each step also under the logo box filled
  from its surroundings: at most 194 queries per image with two surrogates;
* ``strong`` -- ``standard`` with 100 steps under JPEG / resize / median views.
"""

DEFAULT_PRESET = "standard"


def protection_preset(name: str) -> ProtectionConfig:
    """The preset named ``name``. Raises ``ValueError`` listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown protection preset {name!r}; valid: {', '.join(PRESETS)}") from None


# The flat spelling (the command line's, and the former ``SearchConfig``'s): field -> (part, field of the part).
FLAT_NAMES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "optimizer": ("placement", "optimizer"), "budget": ("placement", "budget"),
    "logo_scale": ("placement", "logo_scale"), "opacity": ("placement", "opacity"),
    "margin": ("placement", "margin"), "lesion_margin": ("placement", "lesion_margin"),
    "eot": ("placement", "eot"), "min_logo_scale": ("placement", "min_logo_scale"),
    "logo_shrink": ("placement", "logo_shrink"), "logo_mode": ("universal", "mode"),
    "learn_steps": ("universal", "steps"), "learn_images": ("universal", "images"),
    "colour_steps": ("texture", "steps"), "colour_margin": ("texture", "margin"),
    "colour_eot": ("texture", "eot"), "colour_cell": ("texture", "cell"),
    "colour_max_change": ("texture", "max_change"), "colour_diversity": ("texture", "diversity"),
    "layer_amplitude": ("layer", "amplitude"), "layer_cell": ("layer", "cell"),
    "seed": ("", "seed"), "amp": ("", "amp"), "batch_size": ("", "batch_size"),
})


def SearchConfig(**flat: Any) -> ProtectionConfig:
    """A :class:`ProtectionConfig` from the flat keyword arguments of the former ``SearchConfig``
    (the defaults of :class:`ProtectionConfig` for the rest).

    Kept so existing calls keep working; new code builds the nested parts. One
    difference: ``budget`` is now the placement search's alone, and the texture's steps
    (``colour_steps``) are paid on top of it (see :meth:`ProtectionConfig.queries`).
    """
    return ProtectionConfig().override(**flat)
