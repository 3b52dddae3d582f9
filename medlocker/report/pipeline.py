"""The reproducible end-to-end evaluation, from synthetic sources.

``run_from_sources`` synthesizes fundus images, trains (or reuses) one
classifier per architecture, protects a disjoint set of images with
:func:`medlocker.watermark.protect` under each search configuration, evaluates
every configuration with :func:`medlocker.report.evaluate.evaluate` and writes
the reports. Trained checkpoints and the training set are cached in the output
folder, so a second run only repeats the search and the evaluation.

Protection configurations (``RunConfig.configs``): each is a :class:`Configuration`,
a name, a :class:`~medlocker.watermark.ProtectionConfig` and which surrogates it uses
(the first or all). :func:`configurations` builds the named ones of :data:`CONFIG_NAMES`
from one base protection:

* ``single`` / ``ensemble``: the first surrogate alone / all of them, fixed logo,
  placement search only;
* ``*_eot``: the placement search under the JPEG q75 / resize x0.5 / median 3x3
  views the report measures;
* ``*_learned``: the logo's colours first learned against the configuration's
  surrogates (``universal.mode = "learned"``) on ``universal.images`` *training*
  images, never on the evaluated ones;
* ``*_colours``: then the base's per-image texture steps (``texture``), paid on top of
  the placement budget.

Every configuration is measured against the attacker suite
(:mod:`medlocker.report.attacks`): the run trains, besides the classifiers, a
copy of each held-out architecture on clean training images preprocessed by
each preprocessing attack (the attacker's own models) and the attacker's
learned remover on clean training images with the public logo pasted on them.

The models not named in a configuration's surrogates are its black-box
(held-out) models. The packed-dataset path (protected shards + owner secrets)
feeds :func:`~medlocker.report.evaluate.evaluate` the same arrays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from medlocker.report import figures as fig
from medlocker.report.attacks import SUITE, Attacker
from medlocker.report.attacks.learned import Remover, RemoverConfig, remover_psnr, train_remover
from medlocker.report.attacks.preprocess import PREPROCESSORS
from medlocker.report.evaluate import EvalOptions, evaluate
from medlocker.report.html import write_report
from medlocker.report.metrics import accuracy, predict
from medlocker.report.removal import ATTACKS
from medlocker.report.robustness import HEADLINE_TRANSFORMS, TRANSFORMS
from medlocker.watermark.config import (
    PlacementConfig,
    ProtectionConfig,
    TextureConfig,
    UniversalConfig,
)

__all__ = [
    "RunConfig", "Configuration", "configurations", "REPORT_PROTECTION", "QUICK", "FULL", "CPU", "GPU", "CONFIG_NAMES",
    "EOT_VIEWS", "run_from_sources", "with_overrides", "with_protection", "evaluation_images", "trained_models",
    "learned_logo", "recalibrate_batchnorm", "seeded",
]

log = logging.getLogger(__name__)

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
    remover: RemoverConfig = RemoverConfig()
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


def run_from_sources(
    config: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Synthesize, train (cached), protect, evaluate and write the reports.

    Writes ``out_dir/<config>/report.{json,html}`` per search configuration and
    ``out_dir/report.{json,html}``: the primary (last) configuration with a
    comparison of all of them and the transfer heat map.

    Args:
        config: what to run.
        out_dir: output folder (also holds the cache: ``train-data-*``, ``models/``).
        progress: tqdm bars for synthesis and training.
        on_stage: called with a short description as each stage starts.

    Returns:
        ``{"report": path of the primary report.html, "comparison": rows,
        "timings": stage -> seconds, "primary": the primary report dict}``.
    """
    from medlocker.models import resolve_device
    from medlocker.watermark import default_logo

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = on_stage or (lambda s: log.info("%s", s))
    timings: dict[str, float] = {}
    device = resolve_device(config.device)
    base_logo = default_logo()

    t = time.perf_counter()
    stage(f"synthesizing {config.n_images} evaluation images at {config.size} px")
    originals, labels, lesion_boxes = evaluation_images(config, out)
    timings["synthesize"] = time.perf_counter() - t

    t = time.perf_counter()
    models = trained_models(config, out, device, progress, stage)
    timings["train_or_load"] = time.perf_counter() - t
    t = time.perf_counter()
    attacker_models = _attacker_models(config, out, device, progress, stage)
    attacker = _attacker(config, out, base_logo, device, stage)
    timings["attacker_train_or_load"] = time.perf_counter() - t

    runs: dict[str, dict[str, Any]] = {}
    predictions: dict[tuple[str, str], np.ndarray] = {}  # clean passes are shared by the configurations
    learned: dict[tuple, np.ndarray] = {}  # learned logos by (surrogates, universal, placement): reused
    # The primary (last) configuration runs first: its report is on disk even if a long run is cut short.
    for conf in (config.configs[-1], *config.configs[:-1]):
        name, protection = conf.name, seeded(conf, config)
        surrogates = _surrogates_for(conf, config)
        logo = base_logo
        if protection.universal.learned:
            key = (surrogates, protection.universal, protection.placement)
            if key not in learned:
                stage(f"learning the logo's colours for {name} on {protection.universal.images} training images "
                      f"({protection.universal.steps} steps)")
                t = time.perf_counter()
                learned[key] = learned_logo(config, protection, [models[s] for s in surrogates], base_logo, device)
                timings[f"learn_logo_{name}"] = time.perf_counter() - t
            logo = learned[key]
        stage(f"protecting with {name} (surrogates: {', '.join(surrogates)})")
        t = time.perf_counter()
        protected, placements, queries = _protect(originals, labels, lesion_boxes, models, surrogates, protection,
                                                  config, logo, device)
        wall = time.perf_counter() - t
        timings[f"protect_{name}"] = wall
        stage(f"evaluating {name}")
        t = time.perf_counter()
        secondary = conf is not config.configs[-1]
        transforms = config.secondary_transforms if secondary and config.secondary_transforms is not None \
            else config.transforms
        attacks = config.secondary_attacks if secondary and config.secondary_attacks is not None else config.attacks
        place, tex = protection.placement, protection.texture
        options = EvalOptions(
            transforms=tuple(transforms), attacks=tuple(attacks), suite=config.suite,
            title=f"MedLocker evaluation -- {name} ({'+'.join(surrogates)})", prediction_cache=predictions,
            meta={"config": name, "surrogates": list(surrogates), "run": _plain_config(config),
                  "protection": protection.to_dict(), "queries_max": protection.queries(len(surrogates)),
                  "search": {"optimizer": place.optimizer, "budget": place.budget, "eot": list(place.eot),
                             "logo_mode": protection.universal.mode, "colour_steps": tex.steps,
                             "colour_eot": list(tex.views(place)) if tex.steps else [], "colour_cell": tex.cell,
                             "logo_scale": place.logo_scale, "opacity": list(place.opacity),
                             "min_logo_scale": place.min_logo_scale, "logo_shrink": place.logo_shrink}},
        )
        report, figures = evaluate(
            originals=originals, protected=protected, labels=labels, lesion_boxes=lesion_boxes,
            placements=placements, queries=queries, models=models, surrogates=set(surrogates), logo=logo,
            wall_time_s=wall, device=device, synthetic=True, options=options,
            attacker=attacker, attacker_models=attacker_models,
        )
        timings[f"evaluate_{name}"] = time.perf_counter() - t
        write_report(out / name, report, figures)
        Image.fromarray(logo, "RGBA").save(out / name / "logo.png")  # the logo this configuration stamped
        runs[name] = {"report": report, "figures": figures, "surrogates": surrogates}
        if len(runs) < len(config.configs):  # keep a combined report of what is done so far on disk
            _write_combined(out, config, runs, {}, timings)

    transfer: dict[str, dict[str, float]] = {}
    first = seeded(config.configs[0], config)
    lone = replace(first, texture=replace(first.texture, steps=0), universal=replace(first.universal, mode="fixed"))
    for src in config.transfer_sources:
        stage(f"transfer: protecting with {src} alone")
        protected, _, _ = _protect(originals, labels, lesion_boxes, models, (src,), lone, config, base_logo, device)
        transfer[f"{src} alone"] = {
            m: accuracy(predict(clf, protected, device=device), labels) for m, clf in models.items()
        }
    path, report = _write_combined(out, config, runs, transfer, timings)
    return {"report": path, "comparison": report["comparison"], "timings": timings, "primary": report}


def _write_combined(
    out: Path,
    config: RunConfig,
    runs: Mapping[str, Mapping[str, Any]],
    extra_transfer: Mapping[str, Mapping[str, float]],
    timings: Mapping[str, float],
) -> tuple[Path, dict[str, Any]]:
    """``out/report.*``: the primary configuration's report, the comparison of the finished ones, the heat map."""
    names = [c.name for c in config.configs]
    done = [name for name in names if name in runs]
    primary = runs[names[-1]]
    transfer = {"clean": {m: r["clean_acc"] for m, r in primary["report"]["models"].items()}}
    for name in done:
        run = runs[name]
        transfer[f"{name} ({'+'.join(run['surrogates'])})"] = {
            m: r["protected_acc"] for m, r in run["report"]["models"].items()
        }
    transfer.update({k: dict(v) for k, v in extra_transfer.items()})
    comparison = [_comparison_row(name, runs[name]) for name in done]
    suite_table = {row["config"]: row["suite_held_out"] for row in comparison}
    report = {**primary["report"], "comparison": comparison, "suite_table": suite_table, "transfer": transfer,
              "timings_s": dict(timings)}
    if len(done) < len(names):
        report["incomplete"] = f"configurations still running: {', '.join(c for c in names if c not in runs)}"
    figures = {**primary["figures"], "transfer": fig.accuracy_heatmap(
        transfer, title="Accuracy (%): watermark source x target model")}
    if any(suite_table.values()):
        figures["suite_table"] = fig.accuracy_heatmap(
            suite_table, title="Held-out accuracy (%): configuration x attack (synthetic data)")
    return write_report(out, report, figures), report


def _surrogates_for(conf: Configuration, config: RunConfig) -> tuple[str, ...]:
    return config.surrogates[:1] if conf.surrogates == "first" else config.surrogates


def seeded(conf: Configuration, config: RunConfig) -> ProtectionConfig:
    """The configuration's protection with the run's seed."""
    return replace(conf.protection, seed=config.seed)


def evaluation_images(
    config: RunConfig, out: Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int, int, int]]]]:
    """The evaluation images (indices after the training ones), cached in ``out`` as ``.npz``."""
    from medlocker.data import generate_fundus
    from medlocker.watermark import boxes_from_masks

    first, last = config.n_train, config.n_train + config.n_images  # disjoint from the training indices
    cache = None if out is None else out / f"eval-data-seed{config.seed}-{first}-{last}-{config.size}px.npz"
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            flat, counts = z["boxes"], z["box_counts"]
            offsets = np.concatenate([[0], np.cumsum(counts)])
            boxes = [[tuple(int(v) for v in b) for b in flat[offsets[i]:offsets[i + 1]]] for i in range(len(counts))]
            return z["images"], z["labels"], boxes
    images, labels, boxes = [], [], []
    for i in range(first, last):
        s = generate_fundus(config.seed, i, config.size)
        images.append(s.image)
        labels.append(s.label)
        # min_area=1 as in the packer: every lesion pixel is inside a box the logo must avoid
        boxes.append([tuple(int(v) for v in b) for b in boxes_from_masks(list(s.masks.values()), min_area=1)])
    result = np.stack(images), np.asarray(labels, dtype=np.int64), boxes
    if cache is not None:
        flat = np.asarray([b for bs in boxes for b in bs], dtype=np.int64).reshape(-1, 4)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, images=result[0], labels=result[1], boxes=flat,
                 box_counts=np.asarray([len(b) for b in boxes], dtype=np.int64))
        tmp.replace(cache)
    return result


def trained_models(
    config: RunConfig, out: Path, device: torch.device, progress: bool, stage: Callable[[str], None]
) -> dict[str, nn.Module]:
    """One classifier per architecture of the run, trained on the synthetic training set (cached in ``out``)."""
    from medlocker.data import open_source, write_synthetic_dataset
    from medlocker.models import load_checkpoint, save_checkpoint, train_classifier

    data_dir = out / f"train-data-seed{config.seed}-n{config.n_train}-{config.size}px"
    models: dict[str, nn.Module] = {}
    source = None
    input_size = config.model_size or config.size
    tag = f"{config.size}px" if input_size == config.size else f"{config.size}px-in{input_size}"
    for arch in config.archs:
        ckpt = out / "models" / f"{arch}-{tag}-{config.epochs}ep-n{config.n_train}-seed{config.seed}.pt"
        if ckpt.exists():
            stage(f"loading cached {arch} ({ckpt.name})")
            models[arch] = load_checkpoint(ckpt, map_location=device)
            continue
        if source is None:
            if not (data_dir / "labels.csv").exists():  # written last: marks a complete dataset
                stage(f"synthesizing {config.n_train} training images")
                write_synthetic_dataset(data_dir, n=config.n_train, size=config.size, seed=config.seed,
                                        progress=progress)
            source = open_source(data_dir)
        stage(f"training {arch} for {config.epochs} epochs at {input_size} px input")
        clf, history = train_classifier(source, arch=arch, epochs=config.epochs, input_size=input_size,
                                        seed=config.seed, device=device, progress=progress)
        meta = {"val_accuracy": history["val_accuracy"], "epoch_seconds": history["epoch_seconds"]}
        recal = recalibrate_batchnorm(clf, source, val_keys=history["val_keys"], input_size=input_size,
                                      device=device)
        if recal is not None:
            stage(f"{arch}: BatchNorm statistics recalibrated, val accuracy {history['val_accuracy'][-1]:.3f} -> "
                  f"{recal:.3f}")
            meta["val_accuracy_bn_recalibrated"] = recal
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(clf, ckpt, meta=meta)
        models[arch] = clf
    return models


def recalibrate_batchnorm(
    clf: nn.Module, source: Any, *, val_keys: Any, input_size: int, device: torch.device, batch_size: int = 64
) -> float | None:
    """Re-estimate slow BatchNorm running statistics on the training split; return the new val accuracy.

    Some torchvision backbones (MobileNetV3, EfficientNet-B5..B7) use BatchNorm
    momentum 0.01, tuned for long ImageNet schedules: after the few hundred steps of a
    short run their running statistics are still mostly the initial (0, 1) and the model
    predicts one class in eval mode although it has learned. This recomputes them as the
    exact average over the training split (momentum None, no gradient; weights unchanged),
    the standard BN recalibration. Models whose BatchNorm momentum is >= 0.1 are left
    alone (None is returned). ``val_keys`` are the validation keys ``train_classifier``
    held out (its ``history["val_keys"]``): the rest is the training split.
    """
    from medlocker.data import load_image
    from medlocker.models import evaluate_accuracy
    from medlocker.models.train import resize_uint8

    bns = [m for m in clf.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or all(m.momentum is None or m.momentum >= 0.1 for m in bns):
        return None
    records = list(source.records)
    labels = np.asarray([r.label for r in records], dtype=np.int64)
    held = set(val_keys or ())
    train_idx = np.asarray([i for i, r in enumerate(records) if r.key not in held], dtype=np.int64)
    val_idx = np.asarray([i for i, r in enumerate(records) if r.key in held], dtype=np.int64)

    def images(idx: np.ndarray) -> torch.Tensor:
        return torch.stack([resize_uint8(torch.from_numpy(load_image(records[i].path)).permute(2, 0, 1), input_size)
                            for i in idx])

    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    clf.train()
    with torch.no_grad():
        for i in range(0, len(train_idx), batch_size):
            clf(images(train_idx[i : i + batch_size]).float().div(255).to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    clf.eval()
    if len(val_idx) == 0:
        return float("nan")
    return float(evaluate_accuracy(clf, images(val_idx), torch.from_numpy(labels[val_idx]), device=device))


def _protect(
    originals: np.ndarray,
    labels: np.ndarray,
    lesion_boxes: list[list[tuple[int, int, int, int]]],
    models: Mapping[str, nn.Module],
    surrogates: tuple[str, ...],
    protection: ProtectionConfig,
    config: RunConfig,
    logo: np.ndarray,
    device: torch.device,
) -> tuple[np.ndarray, list[Any], list[int]]:
    from medlocker.watermark import protect, render_exact

    results = protect(originals, labels.tolist(), lesion_boxes, [models[s] for s in surrogates], logo=logo,
                      config=protection, device=device,
                      seeds=list(range(config.n_train, config.n_train + len(labels))))
    placements = [r.placement for r in results]
    protected = np.stack([  # each image with its own logo where the search gave it one (texture steps)
        render_exact(img, logo if r.logo is None else r.logo, r.placement) if r.placement is not None else img.copy()
        for img, r in zip(originals, results)
    ])
    return protected, placements, [int(r.queries) for r in results]


def learned_logo(
    config: RunConfig, protection: ProtectionConfig, surrogates: list[nn.Module], logo: np.ndarray,
    device: torch.device,
) -> np.ndarray:
    """The logo recoloured against ``surrogates`` on the first ``universal.images`` training images."""
    from medlocker.data import generate_fundus
    from medlocker.watermark import boxes_from_masks, learn_logo

    n = min(protection.universal.images, config.n_train)
    samples = [generate_fundus(config.seed, i, config.size) for i in range(n)]
    images = np.stack([s.image for s in samples])
    boxes = [[tuple(int(v) for v in b) for b in boxes_from_masks(list(s.masks.values()), min_area=1)] for s in samples]
    generator = torch.Generator().manual_seed(config.seed)
    return learn_logo(images, [s.label for s in samples], boxes, surrogates, logo=logo, config=protection,
                      generator=generator, device=device)


def _comparison_row(name: str, run: Mapping[str, Any]) -> dict[str, Any]:
    r = run["report"]
    h = r["headline"]
    return {
        "config": name,
        "surrogates": list(run["surrogates"]),
        "white_box_acc": h["white_box_acc"],
        "black_box_acc": h["black_box_acc"],
        "robust_acc": h["robust_acc"],
        "queries_median": h["queries_median"],
        "wall_time_per_image_s": r["cost"]["wall_time_per_image_s"],
        "lesion_pixels_changed": h["lesion_pixels_changed"],
        "worst_case_acc": h.get("worst_case_acc"),
        "worst_case_attack": h.get("worst_case_attack"),
        "oracle_acc": h.get("oracle_acc"),
        "box_found_rate": h.get("box_found_rate"),
        "suite_held_out": dict(r.get("suite", {}).get("held_out", {})),
    }


def _plain_config(config: RunConfig) -> dict[str, Any]:
    return _plain(config)


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


def _held_out_archs(config: RunConfig) -> list[str]:
    """Architectures never used as a surrogate by any configuration of the run."""
    return [a for a in config.archs if a not in config.surrogates]


def _attacker_models(
    config: RunConfig, out: Path, device: torch.device, progress: bool, stage: Callable[[str], None]
) -> dict[str, dict[str, nn.Module]]:
    """Per preprocessing attack of the suite, the attacker's copy of each held-out architecture.

    Each copy is trained (same recipe and seed as the plain model) on the run's
    clean training images preprocessed by that attack, written once as their
    own source folder, and cached in ``out/models``.
    """
    from medlocker.data import load_image, open_source
    from medlocker.models import load_checkpoint, save_checkpoint, train_classifier

    pre = [a for a in config.suite if a in PREPROCESSORS]
    held = [a for a in _held_out_archs(config) if config.attacker_archs is None or a in config.attacker_archs]
    if not pre or not held:
        return {}
    plain_dir = out / f"train-data-seed{config.seed}-n{config.n_train}-{config.size}px"
    input_size = config.model_size or config.size
    epochs = config.attacker_epochs or config.epochs
    result: dict[str, dict[str, nn.Module]] = {}
    for p in pre:
        data_dir = plain_dir.with_name(plain_dir.name + f"-{p}")
        result[p] = {}
        for arch in held:
            ckpt = out / "models" / f"{arch}-{p}-{config.size}px-in{input_size}-{epochs}ep-n{config.n_train}-seed{config.seed}.pt"
            if ckpt.exists():
                stage(f"loading cached attacker model {arch} on {p} images ({ckpt.name})")
                result[p][arch] = load_checkpoint(ckpt, map_location=device)
                continue
            if not (data_dir / "labels.csv").exists():
                stage(f"writing the training images preprocessed by {p}")
                plain = open_source(plain_dir)
                (data_dir / "images").mkdir(parents=True, exist_ok=True)
                for r in plain.records:
                    Image.fromarray(PREPROCESSORS[p](load_image(r.path))).save(data_dir / "images" / Path(r.path).name)
                (data_dir / "labels.csv").write_text((plain_dir / "labels.csv").read_text())  # last: marks it complete
            stage(f"training the attacker's {arch} on {p}-preprocessed images ({epochs} epochs)")
            clf, history = train_classifier(open_source(data_dir), arch=arch, epochs=epochs, input_size=input_size,
                                            seed=config.seed, device=device, progress=progress)
            meta = {"val_accuracy": history["val_accuracy"], "preprocessing": p}
            recal = recalibrate_batchnorm(clf, open_source(data_dir), val_keys=history["val_keys"],
                                          input_size=input_size, device=device)
            if recal is not None:
                meta["val_accuracy_bn_recalibrated"] = recal
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(clf, ckpt, meta=meta)
            result[p][arch] = clf
    return result


def _attacker(config: RunConfig, out: Path, logo: np.ndarray, device: torch.device,
              stage: Callable[[str], None]) -> Attacker:
    """The attacker's public logo and learned remover (trained on clean training images, cached)."""
    from medlocker.data import generate_fundus

    if "learned_remover" not in config.suite:
        return Attacker(logo=logo)
    rc = config.remover
    n_fit = max(1, min(config.remover_images, config.n_train - 16))
    ckpt = out / "models" / (f"remover-{config.size}px-w{rc.width}-c{rc.crop}-{rc.steps}st-b{rc.batch_size}-"
                             f"n{n_fit}-seed{rc.seed}-{config.seed}.pt")
    # the attacker's own clean images: training indices, never evaluated; the last 16 check the remover
    clean = np.stack([generate_fundus(config.seed, i, config.size).image for i in range(n_fit)])
    check = [generate_fundus(config.seed, i, config.size).image for i in range(n_fit, min(n_fit + 16, config.n_train))]
    t = time.perf_counter()
    if ckpt.exists():
        stage(f"loading the cached learned remover ({ckpt.name})")
        model = Remover(rc.width)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        model.eval()
        losses: list[float] = []
    else:
        stage(f"training the attacker's learned remover ({rc.steps} steps on {n_fit} clean images + pasted logos)")
        model, losses = train_remover(clean, logo, config=rc, device=device)
        model = model.cpu()
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), ckpt)
    info = {"config": _plain(rc), "n_train_images": n_fit, "train_seconds": time.perf_counter() - t,
            "loss_first": float(np.mean(losses[:10])) if losses else None,
            "loss_last": float(np.mean(losses[-10:])) if losses else None,
            "held_out_pasted": remover_psnr(model, check, logo, seed=rc.seed + 1) if check else None}
    return Attacker(logo=logo, remover=model, remover_info=info)


def _plain(obj: Any) -> Any:
    """A (nested) config dataclass as plain JSON values."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj
