#!/usr/bin/env python
"""Evaluate MedLocker end to end and write an HTML + JSON report.

For now the path is "from sources": synthesize fundus images, train (or reuse
cached) classifiers, protect a disjoint set under each search configuration,
measure everything and write ``OUT/report.html`` (plus one report per
configuration in ``OUT/<config>/``).

Examples:
    python tools/evaluate.py --quick --out runs/eval-quick
    python tools/evaluate.py --out runs/eval --archs resnet18,smallcnn,vgg16,densenet121 --size 128 --epochs 6
"""

from __future__ import annotations

import argparse
import logging
import sys

from medlocker.errors import MedLockerError
from medlocker.report.pipeline import CONFIG_NAMES, FULL, QUICK, run_from_sources, with_overrides

log = logging.getLogger("evaluate")


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Protect synthetic fundus images and report how well the models are fooled.")
    p.add_argument("--out", required=True, help="output folder (also caches training data and checkpoints)")
    p.add_argument("--quick", action="store_true",
                   help="small preset: 60 images at 64 px, 3 small archs, CPU (a few minutes)")
    p.add_argument("--n", type=int, help=f"images to protect and evaluate (default {FULL.n_images})")
    p.add_argument("--n-train", type=int, help=f"training images per model (default {FULL.n_train})")
    p.add_argument("--size", type=int, help=f"image side and model input size in px (default {FULL.size})")
    p.add_argument("--archs", type=_names, help=f"comma-separated architectures (default {','.join(FULL.archs)})")
    p.add_argument("--surrogates", type=_names,
                   help="comma-separated surrogates; the first is 'single', all are 'ensemble' "
                        f"(default {','.join(FULL.surrogates)})")
    p.add_argument("--epochs", type=int, help=f"training epochs (default {FULL.epochs})")
    p.add_argument("--configs", type=_names,
                   help=f"search configurations, from {','.join(CONFIG_NAMES)} (default {','.join(FULL.configs)})")
    p.add_argument("--optimizer", help=f"search optimizer (default {FULL.optimizer})")
    p.add_argument("--budget", type=int, help=f"model queries per image (default {FULL.budget})")
    p.add_argument("--transfer-sources", type=_names,
                   help="architectures to protect with alone, for a full transfer heat map")
    p.add_argument("--seed", type=int, help="data, training and search seed (default 0)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto; --quick: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace):
    base = QUICK if args.quick else FULL
    return with_overrides(
        base, n_images=args.n, n_train=args.n_train, size=args.size, archs=args.archs, surrogates=args.surrogates,
        epochs=args.epochs, configs=args.configs, optimizer=args.optimizer, budget=args.budget,
        transfer_sources=args.transfer_sources, seed=args.seed, device=args.device,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        result = run_from_sources(config, args.out, progress=not args.no_progress)
    except (MedLockerError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
