"""Evaluation: metrics, the attacker suite, robustness transforms, figures and the HTML report.

:func:`evaluate` turns arrays (originals, protected images, placements, query
counts) and models into a report dict plus PNG figures; :func:`write_report`
writes ``report.json`` and one self-contained ``report.html``. Where the arrays
come from -- the end-to-end run from synthetic sources
(:func:`medlocker.report.pipeline.run_from_sources`) or a packed dataset -- is
the caller's business.

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
from medlocker.report.removal import ATTACKS, attacker_psnr, estimate_blend, estimate_logo_box, inverse_blend, remove
from medlocker.report.robustness import TRANSFORMS, apply

__all__ = [
    "ATTACKS",
    "SUITE",
    "Attacker",
    "attack",
    "EvalOptions",
    "PAPER",
    "TARGETS",
    "TRANSFORMS",
    "accuracy",
    "apply",
    "attack_success_rate",
    "attacker_psnr",
    "build_html",
    "estimate_blend",
    "estimate_logo_box",
    "evaluate",
    "inverse_blend",
    "lesion_pixels_changed",
    "predict",
    "psnr",
    "remove",
    "ssim",
    "summarize",
    "to_jsonable",
    "write_report",
]
