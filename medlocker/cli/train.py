"""Train a classifier on a labelled image folder and save a MedLocker checkpoint.

Example:
    medlocker train --data data/synth --arch resnet18 --epochs 10 --out models/resnet18.pt
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from medlocker.data.readers import open_source
from medlocker.models.checkpoint import save_checkpoint
from medlocker.models.registry import ARCHITECTURES
from medlocker.models.train import train_classifier

log = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlocker train",
        description="Train a classifier from scratch (or from a local state dict) on a CSV / ImageFolder dataset."
    )
    parser.add_argument("--data", required=True, help="dataset folder or labels CSV")
    parser.add_argument("--arch", required=True, choices=ARCHITECTURES, metavar="NAME",
                        help=f"architecture: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--epochs", type=int, required=True, help="training epochs")
    parser.add_argument("--out", required=True, help="checkpoint file to write (e.g. model.pt)")
    parser.add_argument("--size", type=int, default=224, help="model input side in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for split, init, shuffling (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0, ...")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding (default 0)")
    parser.add_argument("--weights", default=None, help="local torchvision state dict to start from")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with logging_redirect_tqdm():  # log lines above the progress bars, not through them
        _, history = _train(args)  # errors: one line from medlocker.cli.common.guarded, exit 2
    val = history["val_accuracy"][-1]
    log.info("saved %s", args.out)
    print(f"final val accuracy: {val:.4f}" if val is not None else "final val accuracy: n/a (no validation split)")
    return 0


def _train(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    source = open_source(args.data)
    log.info("%d images, classes %s", len(source.records), ", ".join(source.classes))
    clf, history = train_classifier(
        source, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        input_size=args.size, seed=args.seed, device=args.device, val_fraction=args.val_fraction,
        num_workers=args.workers, weights=args.weights,
    )
    save_checkpoint(clf, args.out, meta={
        "data": str(args.data), "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
        "seed": args.seed, "history": {k: history[k] for k in ("train_loss", "train_accuracy", "val_accuracy")},
    })
    return clf, history


if __name__ == "__main__":
    sys.exit(main())
