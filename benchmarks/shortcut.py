"""Does the synthetic grade come from the lesions, not from shortcuts?

Trains the same ResNet-18 recipe (from scratch, :func:`medlocker.models.train_classifier`)
twice on SYNTHETIC fundus images: once on the images as generated, once on copies
whose lesions were removed (every lesion mask, dilated by 2 px, filled from its
surroundings with OpenCV's Telea inpainting). The first should learn the grade;
the second should stay near chance (20 % for five balanced grades), because
nothing but the lesions tells the grades apart.

    OMP_NUM_THREADS=2 python benchmarks/shortcut.py --n 750 --size 224 --epochs 5 \
        --out benchmarks/results/cpu-2026-12-02/shortcut.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medlocker.data import LESION_TYPES, open_source, write_synthetic_dataset
from medlocker.models import train_classifier


def remove_lesions(src: Path, dst: Path, dilate: int = 2) -> Path:
    """Copy the dataset at ``src`` to ``dst`` with every lesion inpainted from its surroundings."""
    import cv2

    (dst / "images").mkdir(parents=True, exist_ok=True)
    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
    for img_path in sorted((src / "images").glob("*.png")):
        image = np.asarray(Image.open(img_path).convert("RGB"))
        mask = np.zeros(image.shape[:2], np.uint8)
        for code in LESION_TYPES:
            m = src / "masks" / code / img_path.name
            if m.exists():
                mask |= (np.asarray(Image.open(m)) > 127).astype(np.uint8)
        if mask.any():
            mask = cv2.dilate(mask, kernel)
            image = cv2.inpaint(np.ascontiguousarray(image[:, :, ::-1]), mask * 255, 3, cv2.INPAINT_TELEA)[:, :, ::-1]
        Image.fromarray(np.ascontiguousarray(image)).save(dst / "images" / img_path.name)
    shutil.copy(src / "labels.csv", dst / "labels.csv")  # no masks: nothing left to point at
    return dst


def run(root: Path, *, size: int, epochs: int, seed: int) -> dict:
    t0 = time.perf_counter()
    _, hist = train_classifier(open_source(root), arch="resnet18", epochs=epochs, batch_size=32, lr=2e-3,
                               input_size=size, seed=seed, device="cpu", val_fraction=0.2, progress=False)
    return {
        "val_accuracy": hist["val_accuracy"][-1],
        "best_val_accuracy": max(hist["val_accuracy"]),
        "val_accuracy_per_epoch": hist["val_accuracy"],
        "train_accuracy_per_epoch": hist["train_accuracy"],
        "n_train": hist["n_train"],
        "n_val": hist["n_val"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=750)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medlocker-shortcut"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-2026-12-02/shortcut.json"))
    args = ap.parse_args()

    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    work = args.work / f"n{args.n}-s{args.size}-seed{args.seed}"
    clean = work / "clean"
    if not (clean / "labels.csv").exists():
        write_synthetic_dataset(clean, n=args.n, size=args.size, seed=args.seed, progress=False)
    removed = work / "lesions_removed"
    if not (removed / "labels.csv").exists():
        remove_lesions(clean, removed)
    result = {
        "synthetic_data": True,
        "data": "SYNTHETIC fundus images (medlocker.data.synth), 5 balanced grades: chance = 0.2",
        "arch": "resnet18 (from scratch)",
        "size": args.size,
        "epochs": args.epochs,
        "n_images": args.n,
        "threads": args.threads,
        "clean": run(clean, size=args.size, epochs=args.epochs, seed=args.seed),
    }
    print(json.dumps(result["clean"]), flush=True)
    result["lesions_removed"] = run(removed, size=args.size, epochs=args.epochs, seed=args.seed)
    print(json.dumps(result["lesions_removed"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
