"""``medlocker demo [DIR]``: the whole MedLocker flow on synthetic data (see :mod:`medlocker.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medlocker demo",
        description="Run the whole flow on synthetic data, a few minutes on a CPU: synthesize fundus images, "
        "train a surrogate, make an owner and a licensee key, pack, issue a licence, then read the dataset back "
        "as the licensee (exact originals) and as the public (watermarked images only). Every number it "
        "prints is measured on synthetic data. Exit 0 when every check held.",
    )
    p.add_argument("dir", nargs="?", default="medlocker-demo", metavar="DIR",
                   help="working folder (default ./%(default)s); DIR/dataset is the published dataset, DIR/keys the owner's and the licensee's keys")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from medlocker.demo import run_demo

    return run_demo(Path(args.dir))
