"""Write a synthetic diabetic-retinopathy dataset (images, labels.csv, lesion masks).

Example:
    medlocker synth --out data/synth --n 1000 --size 224 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from medlocker.data.synth import write_synthetic_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlocker synth",
        description=(
            "Generate synthetic fundus images graded 0-4 (DR-like) with per-lesion masks. "
            "Writes OUT/labels.csv (image,label), OUT/images/<id>.png and "
            "OUT/masks/<MA|HE|EX|SE|NV>/<id>.png. Image i depends only on (seed, i)."
        )
    )
    parser.add_argument("--out", required=True, help="destination folder")
    parser.add_argument("--n", type=int, required=True, help="number of images (labels are balanced over 5 grades)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1; the output does not depend on it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        root = write_synthetic_dataset(args.out, n=args.n, size=args.size, seed=args.seed, progress=not args.no_progress,
                                       workers=args.workers)
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger("synth").info("wrote %d images to %s in %.1f s", args.n, root, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
