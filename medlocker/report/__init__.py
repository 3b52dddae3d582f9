"""Evaluation: metrics, the attacker suite, robustness transforms, figures and the HTML report.

:func:`evaluate` turns arrays (originals, protected images, placements, query
counts) and models into a report dict plus PNG figures; :func:`write_report`
writes ``report.json`` and one self-contained ``report.html``. Where the arrays
come from -- the end-to-end run from synthetic sources
(:func:`medlocker.report.pipeline.run_from_sources`) or a packed dataset -- is
the caller's business.

The end-to-end run from synthetic sources has three modules: :mod:`~medlocker.report.presets`
(what a run does, as data: :class:`RunConfig`, the presets :data:`QUICK`, :data:`CPU`,
:data:`GPU`, :data:`FULL` and the protection configurations), :mod:`~medlocker.report.training`
(the images, classifiers and attacker models a run is measured on, trained once and
cached) and :mod:`~medlocker.report.pipeline` (:func:`run_from_sources`: protect, evaluate,
write).

matplotlib and OpenCV come with the ``report`` extra.
"""

from medlocker.report.attacks import SUITE, Attacker, attack
from medlocker.report.evaluate import PAPER, TARGETS, EvalOptions, evaluate
from medlocker.report.html import build_html, to_jsonable, write_report
from medlocker.report.metrics import (
    accuracy,
    attack_success_rate,
    lesion_pixels_changed,
    predict,
    psnr,
    ssim,
    summarize,
)
from medlocker.report.pipeline import learned_logo, run_from_sources
from medlocker.report.presets import (
    CONFIG_NAMES,
    CPU,
    EOT_VIEWS,
    FULL,
    GPU,
    QUICK,
    REPORT_PROTECTION,
    Configuration,
    RunConfig,
    configurations,
    seeded,
    with_overrides,
    with_protection,
)
from medlocker.report.removal import (
    ATTACKS,
    attacker_psnr,
    estimate_blend,
    estimate_logo_box,
    inverse_blend,
    remove,
)
from medlocker.report.robustness import TRANSFORMS, apply
from medlocker.report.training import (
    attacker_models,
    evaluation_images,
    trained_attacker,
    trained_models,
)

__all__ = [
    "ATTACKS",
    "CONFIG_NAMES",
    "CPU",
    "EOT_VIEWS",
    "FULL",
    "GPU",
    "PAPER",
    "QUICK",
    "REPORT_PROTECTION",
    "SUITE",
    "TARGETS",
    "TRANSFORMS",
    "Attacker",
    "Configuration",
    "EvalOptions",
    "RunConfig",
    "accuracy",
    "apply",
    "attack",
    "attack_success_rate",
    "attacker_models",
    "attacker_psnr",
    "build_html",
    "configurations",
    "estimate_blend",
    "estimate_logo_box",
    "evaluate",
    "evaluation_images",
    "inverse_blend",
    "learned_logo",
    "lesion_pixels_changed",
    "predict",
    "psnr",
    "remove",
    "run_from_sources",
    "seeded",
    "ssim",
    "summarize",
    "to_jsonable",
    "trained_attacker",
    "trained_models",
    "with_overrides",
    "with_protection",
    "write_report",
]
