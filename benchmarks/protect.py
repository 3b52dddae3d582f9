"""Benchmark: watermark search on synthetic fundus images (issue acceptance).

From nothing: synthesize a training set and a disjoint evaluation set of
fundus images with lesion masks (:mod:`medlocker.data.synth`), train a ResNet-18
surrogate, then protect the evaluation images with every combination of
{fixed, learned} logo x {bhe, blackbox, gradient} at the same query budget, on
the same images. Lesion boxes come from the ground-truth masks. Prints one
table and writes JSON. All numbers are on SYNTHETIC data, white-box (the
surrogate that guided the search is the one evaluated).

Columns: clean accuracy and protected accuracy of the surrogate on the
evaluation set (protected = the stored, PNG round-tripped bytes, re-checked
here independently of ``protect``), attack success rate (clean-correct images
that become wrong), median and mean queries per image (final check included),
lesion pixels changed (ground-truth mask pixels whose bytes differ; must be 0),
mean logo box area in % of the image, whole-image PSNR averaged over the
watermarked images, wall time.

Usage::

    python benchmarks/protect.py --n 200 --size 224 --budget 200 --out runs/protect.json
    python benchmarks/protect.py --quick            # CPU smoke run, about a minute
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medlocker.data import generate_fundus, open_source, write_synthetic_dataset
from medlocker.models import load_checkpoint, save_checkpoint, train_classifier
from medlocker.watermark import (
    PlacementConfig,
    ProtectionConfig,
    UniversalConfig,
    boxes_from_masks,
    default_logo,
    learn_logo,
    logo_size,
    protect,
    render_exact,
)

log = logging.getLogger("benchmarks.protect")
OPTIMIZERS = ("bhe", "blackbox", "gradient")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Watermark search benchmark on synthetic fundus images.")
    p.add_argument("--n", type=int, default=None, help="images to protect (default 200; --quick 24)")
    p.add_argument("--n-train", type=int, default=None, help="surrogate training images (default 1000; --quick 200)")
    p.add_argument("--size", type=int, default=None, help="image side in px (default 224; --quick 96)")
    p.add_argument("--input-size", type=int, default=None, help="surrogate input side (default: --size)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 12; --quick 4)")
    p.add_argument("--budget", type=int, default=None, help="queries per image, the same for every optimizer (default 200; --quick 40)")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    p.add_argument("--logos", default="fixed,learned")
    p.add_argument("--learn-steps", type=int, default=None, help="learn_logo steps (default 60; --quick 10)")
    p.add_argument("--logo-scale", type=float, default=0.04)
    p.add_argument("--opacity", type=int, nargs=2, default=(96, 224))
    p.add_argument("--min-logo-scale", type=float, default=None,
                   help="shrink the logo down to this area fraction where the full size does not fit")
    p.add_argument("--margin", type=float, default=0.0, help="success margin (logits)")
    p.add_argument("--eot", default="", help="comma-separated EOT views, e.g. jpeg75,resize0.5")
    p.add_argument("--batch", type=int, default=64, help="images per protect() call")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="where the training set goes (default: a temp dir)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="reuse this surrogate if the file exists, else train one and save it there")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    args = p.parse_args(argv)
    defaults = dict(n=200, n_train=1000, size=224, epochs=12, budget=200, learn_steps=60)
    if args.quick:  # explicit flags still win
        defaults.update(n=24, n_train=200, size=96, epochs=4, budget=40, learn_steps=10, input_size=64)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.input_size = args.input_size or args.size
    return args


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def eval_set(n: int, size: int, seed: int) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """Held-out images (seed differs from the training set's), labels and union lesion masks."""
    images, labels, masks = [], [], []
    for i in range(n):
        s = generate_fundus(seed, i, size)
        images.append(s.image)
        labels.append(int(s.label))
        union = np.zeros(s.image.shape[:2], dtype=bool)
        for m in s.masks.values():
            union |= m
        masks.append(union)
    return np.stack(images), labels, masks


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def png_roundtrip(image: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@torch.no_grad()
def predict(clf: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 64) -> np.ndarray:
    out = []
    for s in range(0, len(images), batch):
        x = torch.from_numpy(images[s:s + batch]).to(device).permute(0, 3, 1, 2).float().div_(255)
        out.append(clf(x).argmax(1).cpu().numpy())
    return np.concatenate(out)


def train_or_load(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the surrogate on a fresh synthetic training set (or reuse ``--checkpoint``)."""
    if args.checkpoint is not None and args.checkpoint.exists():
        clf = load_checkpoint(args.checkpoint, map_location=device)
        meta = dict(getattr(clf, "meta", {}))
        log.info("loaded surrogate %s (validation accuracy %s)", args.checkpoint, meta.get("val_accuracy"))
        return clf, {"arch": clf.arch, "input_size": clf.input_size, "checkpoint": str(args.checkpoint), **meta}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp) / "train"
        if not (work / "labels.csv").exists():
            log.info("synthesizing %d training images at %d px", args.n_train, args.size)
            write_synthetic_dataset(work, n=args.n_train, size=args.size, seed=args.seed + 1, progress=False)
        source = open_source(work)
        log.info("training %s (input %d px, %d epochs) on %s", args.arch, args.input_size, args.epochs, device)
        t0 = time.perf_counter()
        clf, history = train_classifier(source, arch=args.arch, epochs=args.epochs, input_size=args.input_size,
                                        seed=args.seed, device=device, progress=False)
    meta = {"val_accuracy": history["val_accuracy"][-1], "n_train": history["n_train"], "n_val": history["n_val"],
            "epochs": args.epochs, "train_seconds": round(time.perf_counter() - t0, 1)}
    log.info("trained in %.0f s, validation accuracy %.3f", meta["train_seconds"], meta["val_accuracy"])
    if args.checkpoint is not None:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(clf, args.checkpoint, meta=meta)
    return clf.eval(), {"arch": args.arch, "input_size": args.input_size, **meta}


def run_row(name: str, logo_mode: str, logo: np.ndarray, clf: torch.nn.Module, images: np.ndarray,
            labels: list[int], boxes: list, masks: list[np.ndarray], clean_pred: np.ndarray,
            args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config = ProtectionConfig(
        placement=PlacementConfig(optimizer=name, budget=args.budget, logo_scale=args.logo_scale,
                                  opacity=tuple(args.opacity), eot=tuple(v for v in args.eot.split(",") if v),
                                  margin=args.margin, min_logo_scale=args.min_logo_scale),
        universal=UniversalConfig(mode=logo_mode), seed=args.seed)
    t0 = time.perf_counter()
    results = []
    for s in range(0, len(images), args.batch):
        results += protect(images[s:s + args.batch], labels[s:s + args.batch], boxes[s:s + args.batch], [clf],
                           logo=logo, config=config, device=device, seeds=list(range(s, min(s + args.batch, len(images)))))
    seconds = time.perf_counter() - t0
    stored = np.stack([png_roundtrip(render_exact(img, logo, r.placement)) if r.placement else img
                       for img, r in zip(images, results)])
    pred = predict(clf, stored, device)
    y = np.array(labels)
    clean_ok = clean_pred == y
    lesion_changed = int(sum(((st != img).any(2) & m).sum() for st, img, m in zip(stored, images, masks)))
    queries = np.array([r.queries for r in results])
    H, W = images.shape[1:3]
    placed = [r.placement for r in results if r.placement is not None]
    protected_ok = pred == y
    agree = sum(r.success == (p != yy) for r, p, yy in zip(results, pred, y))  # protect's own flag vs this re-check
    return {
        "logo": logo_mode,
        "optimizer": name,
        "budget": args.budget,
        "clean_accuracy": float(clean_ok.mean()),
        "protected_accuracy": float(protected_ok.mean()),
        "attack_success_rate": float((clean_ok & (pred != y)).sum() / max(1, clean_ok.sum())),
        "fooled_rate": float(np.mean([r.success for r in results])),
        "median_queries": float(np.median(queries)),
        "mean_queries": float(queries.mean()),
        "max_queries": int(queries.max()),
        "lesion_pixels_changed": lesion_changed,
        "logo_area_percent": float(np.mean([p.w * p.h / (H * W) * 100 for p in placed])) if placed else 0.0,
        "mean_opacity": float(np.mean([p.opacity for p in placed])) if placed else 0.0,
        "psnr_db": float(np.mean([v for v in (psnr(a, b) for a, b in zip(stored, images)) if math.isfinite(v)] or [math.inf])),
        "no_feasible": sum(r.status == "no_feasible_position" for r in results),
        "success_flag_agrees": int(agree),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(images) / seconds, 2),
        "per_image": [{"status": r.status, "queries": r.queries, "margin": round(r.margin, 4),
                       "placement": r.placement.to_dict() if r.placement else None,
                       "clean_correct": bool(c), "protected_correct": bool(p)}
                      for r, c, p in zip(results, clean_ok, protected_ok)],
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = [("logo", "logo", "{}"), ("optimizer", "optimizer", "{}"), ("clean_accuracy", "clean acc", "{:.1%}"),
            ("protected_accuracy", "prot acc", "{:.1%}"), ("attack_success_rate", "ASR", "{:.1%}"),
            ("median_queries", "med q", "{:.0f}"), ("mean_queries", "mean q", "{:.1f}"),
            ("lesion_pixels_changed", "lesion px", "{}"), ("logo_area_percent", "logo %", "{:.2f}"),
            ("psnr_db", "PSNR dB", "{:.2f}"), ("seconds", "time s", "{:.0f}")]
    cells = [[h for _, h, _ in cols]] + [[f.format(r[k]) for k, _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = device_of(args.device)
    torch.set_grad_enabled(True)
    t_all = time.perf_counter()

    clf, surrogate = train_or_load(args, device)

    images, labels, masks = eval_set(args.n, args.size, seed=args.seed + 2)
    boxes = [boxes_from_masks([m], min_area=1) for m in masks]  # min_area=1: every lesion pixel is boxed
    clean_pred = predict(clf, images, device)
    log.info("evaluation set: %d images, clean accuracy %.3f", args.n, float((clean_pred == np.array(labels)).mean()))

    logos = {"fixed": default_logo()}
    learn_seconds = None
    if "learned" in args.logos.split(","):
        t0 = time.perf_counter()
        cfg = ProtectionConfig(
            placement=PlacementConfig(logo_scale=args.logo_scale, opacity=tuple(args.opacity),
                                      eot=tuple(v for v in args.eot.split(",") if v)),
            universal=UniversalConfig(mode="learned", steps=args.learn_steps, batch_size=8, placements=2),
            seed=args.seed)
        logos["learned"] = learn_logo(images, labels, boxes, [clf], logo=default_logo(), config=cfg, device=device,
                                      generator=torch.Generator().manual_seed(args.seed))
        learn_seconds = time.perf_counter() - t0
        log.info("learned the logo colours in %.0f s", learn_seconds)

    rows = []
    for mode in args.logos.split(","):
        for name in args.optimizers.split(","):
            row = run_row(name, mode, logos[mode], clf, images, labels, boxes, masks, clean_pred, args, device)
            log.info("%s/%s: %s", mode, name, {k: v for k, v in row.items() if k != "per_image"})
            rows.append(row)

    w, h = logo_size(default_logo(), (args.size, args.size), scale=args.logo_scale)
    report = {
        "data": "SYNTHETIC fundus images (medlocker.data.synth); white-box: the evaluated model guided the search",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "host": platform.node(),
        "torch": torch.__version__,
        "surrogate": surrogate,
        "logo_px": [w, h],
        "learn_logo_seconds": learn_seconds,
        "rows": rows,
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    print()
    val = surrogate.get("val_accuracy")
    print(f"SYNTHETIC data, white-box, {args.n} images at {args.size} px, surrogate {surrogate['arch']}@"
          f"{surrogate['input_size']} (val acc {'n/a' if val is None else f'{val:.1%}'}), "
          f"budget {args.budget} queries/image, device {report['device']}")
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
