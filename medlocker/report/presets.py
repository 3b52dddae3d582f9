"""The report's presets and protection configurations, as data.

A :class:`RunConfig` says what one end-to-end report run does (images, architectures,
epochs, configurations, what is measured); :data:`QUICK`, :data:`CPU`, :data:`GPU` and
:data:`FULL` are the named presets of ``medlocker report``. Each protection
configuration of a run is a :class:`Configuration`: a name, a
:class:`~medlocker.watermark.ProtectionConfig` and which surrogates it uses (the first
or all). :func:`configurations` builds the named ones of :data:`CONFIG_NAMES` from one
base protection:

* ``single`` / ``ensemble``: the first surrogate alone / all of them, fixed logo,
  placement search only;
* ``*_eot``: the placement search under the JPEG q75 / resize x0.5 / median 3x3
  views the report measures;
* ``*_learned``: the logo's colours first learned against the configuration's
  surrogates (``universal.mode = "learned"``) on ``universal.images`` *training*
  images, never on the evaluated ones;
* ``*_colours``: then the base's per-image texture steps (``texture``), paid on top of
  the placement budget.

The models not named in a configuration's surrogates are its black-box (held-out)
models. Nothing here trains or runs anything: :mod:`medlocker.report.training` trains
the models a run needs and :mod:`medlocker.report.pipeline` runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from medlocker.report.attacks import SUITE
from medlocker.report.attacks.learned import RemoverConfig
from medlocker.report.removal import ATTACKS
from medlocker.report.robustness import HEADLINE_TRANSFORMS, TRANSFORMS
from medlocker.watermark.config import (
    PlacementConfig,
    ProtectionConfig,
    TextureConfig,
    UniversalConfig,
)

__all__ = [
    "CONFIG_NAMES", "CPU", "EOT_VIEWS", "FULL", "GPU", "QUICK", "REPORT_PROTECTION", "Configuration", "RunConfig",
    "configurations", "seeded", "with_overrides", "with_protection",
]

EOT_VIEWS = ("jpeg75", "resize0.5", "median3")
CONFIG_NAMES = (
    "single", "single_eot", "ensemble", "ensemble_eot", "single_learned", "ensemble_learned", "ensemble_eot_learned",
    "single_colours", "ensemble_colours", "ensemble_learned_colours", "ensemble_eot_learned_colours",
)


@dataclass(frozen=True)
class Configuration:
    """One protection configuration of a report.

    Attributes:
        name: its name in the report (e.g. ``"ensemble_learned_colours"``).
        protection: how its images are protected (the run's ``seed`` replaces its seed).
        surrogates: ``"first"`` (the run's first surrogate alone) or ``"all"``.
    """

    name: str
    protection: ProtectionConfig
    surrogates: str = "all"

    def __post_init__(self) -> None:
        if self.surrogates not in ("first", "all"):
            raise ValueError(f"Configuration.surrogates must be 'first' or 'all', got {self.surrogates!r}")


REPORT_PROTECTION = ProtectionConfig(
    placement=PlacementConfig(budget=1000, logo_scale=0.0625, opacity=(96, 255), min_logo_scale=0.01),
    texture=TextureConfig(steps=100),
    universal=UniversalConfig(steps=100, images=128),
)
"""The reports' base protection: the largest logo, solid pixels allowed (opacity 255: nothing to
invert), shrinking off the lesions down to 1 % of the image."""


def configurations(*names: str, base: ProtectionConfig = REPORT_PROTECTION) -> tuple[Configuration, ...]:
    """The named configurations of :data:`CONFIG_NAMES`, built from ``base`` (its texture for the
    ``*_colours`` ones, its universal logo learning for the ``*_learned`` ones)."""
    plain = replace(base, texture=replace(base.texture, steps=0), universal=replace(base.universal, mode="fixed"),
                    placement=replace(base.placement, eot=()))
    table: dict[str, Configuration] = {}
    for who in ("single", "ensemble"):
        for eot in ((), EOT_VIEWS):
            for learned in (False, True):
                for colours in (False, True):
                    name = who + ("_eot" if eot else "") + ("_learned" if learned else "") + ("_colours" if colours else "")
                    if name not in CONFIG_NAMES:
                        continue
                    protection = replace(
                        plain, placement=replace(plain.placement, eot=eot),
                        universal=replace(base.universal, mode="learned") if learned else plain.universal,
                        texture=base.texture if colours else plain.texture)
                    table[name] = Configuration(name, protection, "first" if who == "single" else "all")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown configs {unknown}; known: {', '.join(CONFIG_NAMES)}")
    return tuple(table[n] for n in names)


@dataclass(frozen=True)
class RunConfig:
    """One end-to-end evaluation run.

    Attributes:
        n_images: images protected and evaluated.
        n_train: images the classifiers are trained on (disjoint indices, same seed).
        size: image side in pixels (synthesis, watermark search and evaluation).
        model_size: the classifiers' input side (each :class:`Classifier` resizes
            its input, antialiased and differentiably); None = ``size``. A smaller
            input makes CPU runs affordable: the images stay at ``size`` px.
        archs: architectures to train and evaluate.
        surrogates: architectures used in the search; the first is the ``"first"``
            surrogate, all of them ``"all"``. Each must be in ``archs``.
        epochs: training epochs per architecture.
        configs: the protection configurations to run (see :func:`configurations`);
            the last one is the primary report.
        transfer_sources: architectures each protected as a lone surrogate (with the
            first configuration's protection), for a full source x target transfer heat map.
        transforms, attacks: what the report measures.
        secondary_transforms, secondary_attacks: what the non-primary
            configurations (all but the last) measure; None = the same as the
            primary. Their numbers only feed the comparison table, so a CPU run
            measures just the headline transforms there.
        suite: attacks of the attacker suite (:data:`medlocker.report.attacks.SUITE`).
        attacker_epochs: training epochs of the attacker's preprocessed copies
            (None = ``epochs``).
        attacker_archs: the held-out architectures the attacker trains
            preprocessed copies of (None = every held-out one); the others are
            measured on preprocessed images as they are (the report says which).
        remover: how the attacker trains the learned remover.
        remover_images: clean training images the remover is trained on.
        seed: data, training and search seed.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    """

    n_images: int = 500
    n_train: int = 2000
    size: int = 224
    model_size: int | None = None
    archs: tuple[str, ...] = (
        "resnet18", "smallcnn", "mobilenet_v3_large", "efficientnet_b0", "vgg16", "densenet121", "vit_tiny",
        "resnet50", "convnext_tiny",
    )
    surrogates: tuple[str, ...] = ("resnet18", "smallcnn")
    epochs: int = 10
    configs: tuple[Configuration, ...] = configurations("single", "ensemble_eot")
    transfer_sources: tuple[str, ...] = ()
    transforms: tuple[str, ...] = tuple(TRANSFORMS)
    attacks: tuple[str, ...] = ATTACKS
    secondary_transforms: tuple[str, ...] | None = None
    secondary_attacks: tuple[str, ...] | None = None
    suite: tuple[str, ...] = tuple(SUITE)
    attacker_epochs: int | None = None
    attacker_archs: tuple[str, ...] | None = None
    remover: RemoverConfig = field(default_factory=RemoverConfig)
    remover_images: int = 200
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.n_images < 1 or self.n_train < 10 or self.size < 32 or self.epochs < 1:
            raise ValueError("need n_images >= 1, n_train >= 10, size >= 32 and epochs >= 1")
        if self.model_size is not None and self.model_size < 32:
            raise ValueError("model_size must be >= 32")
        missing = [a for a in (*self.surrogates, *self.transfer_sources) if a not in self.archs]
        if missing or not self.surrogates:
            raise ValueError(f"surrogates and transfer sources must be among archs {self.archs}; missing {missing}")
        if not self.configs or not all(isinstance(c, Configuration) for c in self.configs):
            raise ValueError("configs must be a non-empty tuple of Configuration (see configurations())")
        names = [c.name for c in self.configs]
        if len(set(names)) != len(names):
            raise ValueError(f"configuration names must be unique, got {names}")
        unknown = [a for a in self.suite if a not in SUITE]
        if unknown:
            raise ValueError(f"unknown suite attacks {unknown}; the suite has: {', '.join(SUITE)}")

    def configuration(self, name: str) -> Configuration:
        """The configuration called ``name``."""
        for c in self.configs:
            if c.name == name:
                return c
        raise ValueError(f"no configuration {name!r}; this run has {', '.join(c.name for c in self.configs)}")

    def to_dict(self) -> dict[str, Any]:
        """The run as plain JSON values (nested configurations included), as the reports record it."""
        return _plain(self)


FULL = RunConfig(configs=configurations("single", "ensemble", "ensemble_eot", "ensemble_eot_learned"))
"""The benchmark: 500 images at 224 px, nine architectures (meant for a GPU)."""

QUICK = RunConfig(
    n_images=60, n_train=400, size=64, archs=("smallcnn", "vit_tiny", "resnet18"),
    surrogates=("smallcnn", "vit_tiny"), epochs=6, device="cpu",
    configs=configurations("single", "ensemble_eot", base=REPORT_PROTECTION.override(budget=100)),
    transforms=("jpeg75", "resize0.5", "median3", "blur", "crop", "rotate"),
)
"""A few minutes on CPU: 60 images at 64 px, three small architectures (resnet18 held out)."""

_CPU_PROTECTION = REPORT_PROTECTION.override(budget=40, colour_cell=4, logo_shrink=0.7)
CPU = RunConfig(
    n_images=500, n_train=600, size=224, model_size=64,
    archs=("smallcnn", "resnet18", "mobilenet_v3_large", "densenet121", "resnet50"),
    surrogates=("smallcnn", "resnet18"), epochs=5,
    configs=configurations("ensemble", "ensemble_learned", "ensemble_learned_colours", base=_CPU_PROTECTION),
    device="cpu", transforms=HEADLINE_TRANSFORMS,
    attacks=("inpaint_telea", "inpaint_telea_oracle", "inverse_blend", "inverse_blend_oracle"),
    secondary_transforms=HEADLINE_TRANSFORMS, secondary_attacks=(),
)
"""The issue-acceptance run sized for a shared 2-core CPU (about an hour): 500 synthetic
images at 224 px against five architectures (three held out). The images, the watermark
search and every transform/attack run at 224 px; the classifiers take a 64 px downsample
(``model_size``), which is what makes training five of them affordable. The placement budget
(40 queries) pays for about one gradient round of the two-model ensemble (a gradient and up
to 16 candidates, each costing one query per surrogate). The primary configuration is ``ensemble_learned_colours`` (learned logo, then
up to 100 per-image colour steps on top of the 40 queries, on a 4 px colour grid; a logo that
does not fit off the lesions shrinks x0.7 at a time); ``ensemble`` (the fixed logo) and
``ensemble_learned`` are the comparison. The EOT configurations (4 views: 4x the queries per candidate)
and the larger budget do not fit this CPU's hour -- add ``--configs
single,ensemble_eot,ensemble_eot_learned --budget 200`` on a faster machine, or use
``FULL`` on a GPU."""

GPU = replace(CPU, model_size=224, epochs=10, device="auto", configs=configurations(
    "ensemble", "ensemble_learned", "ensemble_learned_colours", base=_CPU_PROTECTION.override(colour_eot=EOT_VIEWS)))
"""The issue-acceptance run on one GPU (about 6 minutes on an H100): the ``CPU`` preset's images,
architectures and searches, but the classifiers see the full 224 px image and train 10 epochs;
the per-image colour steps run under the JPEG q75 / resize x0.5 / median 3x3 views
(``texture.eot``: 4x the queries per step, cheap there). ``benchmarks/report.py --gpu``."""


def seeded(conf: Configuration, config: RunConfig) -> ProtectionConfig:
    """The configuration's protection with the run's seed."""
    return replace(conf.protection, seed=config.seed)


def with_overrides(base: RunConfig, **overrides: Any) -> RunConfig:
    """``base`` with the given fields replaced (None values are ignored)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def with_protection(base: RunConfig, names: tuple[str, ...] | None = None, **flat: Any) -> RunConfig:
    """``base`` with its configurations renamed/rebuilt and their protections overridden.

    Args:
        names: rebuild the configurations from :data:`CONFIG_NAMES` (on the base protection of
            ``base``'s first configuration with its texture, universal and views reset by name);
            None keeps ``base``'s.
        flat: protection fields by their flat names (:meth:`ProtectionConfig.override`);
            None values are ignored. ``colour_steps`` changes only configurations whose texture is on.
    """
    configs = base.configs
    if names is not None:
        ref = next((c.protection for c in base.configs if c.protection.texture.steps), base.configs[-1].protection)
        uni = next((c.protection.universal for c in base.configs if c.protection.universal.learned),
                   REPORT_PROTECTION.universal)
        tex = ref.texture if ref.texture.steps else REPORT_PROTECTION.texture
        configs = configurations(*names, base=replace(ref, universal=uni, texture=tex))
    given = {k: v for k, v in flat.items() if v is not None}
    if not given:
        return replace(base, configs=configs)
    plain = {k: v for k, v in given.items() if k != "colour_steps"}
    out = []
    for c in configs:
        keys = given if c.protection.texture.steps else plain
        out.append(replace(c, protection=c.protection.override(**keys)))
    return replace(base, configs=tuple(out))


def _plain(obj: Any) -> Any:
    """A (nested) config dataclass as plain JSON values."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj
