#!/usr/bin/env python
"""The attacker suite against named protection configurations, in one command.

Runs the report pipeline (:func:`medlocker.report.pipeline.run_from_sources`) with
each protection preset of :data:`CONFIGS` held whole, and every attack of
:data:`medlocker.report.attacks.SUITE` (DR preprocessing with the attacker's own
preprocessed models, logo location + inpainting, the attacker's learned remover,
inverse blending, purification, the oracle box). Prints the table
configuration x attack (held-out mean accuracy), the worst case (oracle excluded)
and the oracle. All numbers are on synthetic data.

    python benchmarks/attack_suite.py --out runs/suite-cpu            # reduced CPU run (~45 min on 2 cores)
    python benchmarks/attack_suite.py --out runs/suite-cpu --json benchmarks/results/cpu-2026-12-02/report/suite.json
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from medlocker.report import CPU, Configuration, run_from_sources
from medlocker.report.attacks.learned import RemoverConfig
from medlocker.watermark.config import DEFAULT_PRESET, PRESETS

CONFIGS = (
    Configuration("paper", PRESETS["paper"]),  # the seed's method: fixed logo, position and transparency only
    Configuration(DEFAULT_PRESET, PRESETS[DEFAULT_PRESET]),  # what the packer uses without protection flags
)
"""The configurations measured (the packer's presets, held whole); the last is the primary report."""

SUITE_CPU = replace(
    CPU, n_images=50, n_train=600, model_size=128, epochs=6, configs=CONFIGS, attacker_epochs=3,
    archs=("smallcnn", "resnet18", "mobilenet_v3_large", "densenet121", "resnet50"),
    attacker_archs=("mobilenet_v3_large",),
    transforms=("jpeg75",), attacks=(), secondary_transforms=("jpeg75",), secondary_attacks=(),
    remover=RemoverConfig(steps=300, crop=96), remover_images=200,
)
"""The CPU preset cut to what two shared cores finish in about 45 minutes: 50 evaluation images at
224 px (10 per grade); classifiers at 128 px input (large enough for the haemorrhages, exudates and
new vessels that carry the grade) trained 6 epochs on 600 images; smallcnn + resnet18 the
surrogates, mobilenet_v3_large, densenet121 and resnet50 held out (never used in the search); the
attacker's graham- and clahe-trained copies of mobilenet_v3_large (3 epochs; the other held-out
models see the preprocessed images as they are, and the report says so); a 300-step learned
remover. Raise n_images, epochs and attacker_archs where the machine allows."""


def table(report: dict) -> str:
    """Configuration x attack, held-out mean accuracy, as plain text."""
    suite = report["suite_table"]
    attacks = list(next(iter(suite.values())))
    lines = [f"{'config':<10}" + "".join(f"{a[:13]:>14}" for a in attacks) + f"{'worst':>14}{'oracle':>9}"]
    rows = {r["config"]: r for r in report["comparison"]}
    for name, accs in suite.items():
        r = rows[name]
        lines.append(f"{name:<10}" + "".join(f"{100 * accs[a]:13.1f}%" for a in attacks)
                     + f"{100 * r['worst_case_acc']:9.1f}% ({r['worst_case_attack']})"
                     + ("" if r["oracle_acc"] is None or math.isnan(r["oracle_acc"]) else f" {100 * r['oracle_acc']:.1f}%"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder (caches data and models)")
    p.add_argument("--json", help="also copy the combined report.json here")
    p.add_argument("--n", type=int, help="images protected and evaluated")
    p.add_argument("--presets", help=f"comma-separated protection presets to compare (default paper,{DEFAULT_PRESET}; "
                                     f"valid: {', '.join(PRESETS)}); the last is the primary report")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config = SUITE_CPU if args.n is None else replace(SUITE_CPU, n_images=args.n)
    if args.presets:
        config = replace(config, configs=tuple(Configuration(n, PRESETS[n]) for n in args.presets.split(",") if n))
    t0 = time.perf_counter()
    result = run_from_sources(config, args.out, progress=False)
    report = result["primary"]
    print(table(report))
    print(f"total wall time {time.perf_counter() - t0:.0f} s; report: {result['report']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(Path(result["report"]).with_suffix(".json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
