"""The end-to-end report run from synthetic sources: protect, evaluate, write.

:func:`run_from_sources` takes a :class:`~medlocker.report.presets.RunConfig`, gets the
evaluation images, the classifiers and the attacker's models from
:mod:`medlocker.report.training` (trained once, cached in the output folder), protects
the evaluation images with :func:`medlocker.watermark.protect` under each protection
configuration of the run (learning the logo first where the configuration says so:
:func:`learned_logo`), evaluates every configuration with
:func:`medlocker.report.evaluate.evaluate` against the attacker suite
(:mod:`medlocker.report.attacks`) and writes one report per configuration plus the
combined one. A second run only repeats the search and the evaluation.

The packed-dataset path (protected shards + owner secrets, :mod:`medlocker.report.packed`)
feeds :func:`~medlocker.report.evaluate.evaluate` the same arrays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from medlocker.data import generate_fundus
from medlocker.models import resolve_device
from medlocker.report import figures as fig
from medlocker.report.evaluate import EvalOptions, evaluate
from medlocker.report.html import write_report
from medlocker.report.metrics import accuracy, predict
from medlocker.report.presets import Configuration, RunConfig, seeded
from medlocker.report.training import (
    attacker_models,
    evaluation_images,
    trained_attacker,
    trained_models,
)
from medlocker.watermark import (
    boxes_from_masks,
    default_logo,
    learn_logo,
    protect,
)
from medlocker.watermark.config import ProtectionConfig

__all__ = ["learned_logo", "run_from_sources"]

log = logging.getLogger(__name__)


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
    own_models = attacker_models(config, out, device, progress, stage)
    attacker = trained_attacker(config, out, base_logo, device, stage)
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
            meta={"config": name, "surrogates": list(surrogates), "run": config.to_dict(),
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
            attacker=attacker, attacker_models=own_models,
        )
        timings[f"evaluate_{name}"] = time.perf_counter() - t
        write_report(out / name, report, figures)
        Image.fromarray(logo, "RGBA").save(out / name / "logo.png")  # the logo this configuration stamped
        runs[name] = {"report": report, "figures": figures, "surrogates": surrogates}
        if len(runs) < len(config.configs):  # keep a combined report of what is done so far on disk
            _write_combined(out, config, runs, {}, timings)

    transfer: dict[str, dict[str, float]] = {}
    first = seeded(config.configs[0], config)
    # The transfer map measures the placement search alone: no texture, no layer (which needs the
    # texture), the fixed logo.
    lone = replace(first, texture=replace(first.texture, steps=0), universal=replace(first.universal, mode="fixed"),
                   layer=replace(first.layer, amplitude=0))
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
            suite_table, title="Held-out accuracy (%): configuration x attack (synthetic data)",
            row_label="protection configuration", col_label="attack (on the public image alone)")
    return write_report(out, report, figures), report


def _surrogates_for(conf: Configuration, config: RunConfig) -> tuple[str, ...]:
    return config.surrogates[:1] if conf.surrogates == "first" else config.surrogates


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
    results = protect(originals, labels.tolist(), lesion_boxes, [models[s] for s in surrogates], logo=logo,
                      config=protection, device=device,
                      seeds=list(range(config.n_train, config.n_train + len(labels))))
    placements = [r.placement for r in results]
    # The pixels the packer would publish: the layer, then the image's own logo (or the run's).
    protected = np.stack([r.stored_image(img, logo) for img, r in zip(originals, results)])
    return protected, placements, [int(r.queries) for r in results]


def learned_logo(
    config: RunConfig, protection: ProtectionConfig, surrogates: list[nn.Module], logo: np.ndarray,
    device: torch.device,
) -> np.ndarray:
    """The logo recoloured against ``surrogates`` on the first ``universal.images`` training images."""
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
