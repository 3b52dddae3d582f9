#!/usr/bin/env python
"""Benchmark: the protection presets side by side on synthetic data (small, CPU-sized).

Trains (or reuses, from ``--cache``) a few classifiers on synthetic fundus images, protects a
disjoint evaluation set with each ``--presets`` entry (surrogates: the first two
``--archs``; the rest are held out, never used in the search), and measures per preset:

* white-box accuracy (the surrogates) and held-out accuracy (mean over the others);
* held-out accuracy after JPEG q50, and after the oracle removal: OpenCV Telea inpainting
  of the true logo box (an upper bound for any remover that finds the box);
* quality: PSNR outside the logo box, SSIM of the mark's luminance against the plain
  logo's at the same placement (is it still the owner's logo?), lesion pixels changed;
* cost: median queries per image and images/s of the search on this CPU.

Every number is on synthetic data. Example (about 10 minutes on 2 shared cores)::

    python benchmarks/protection.py --cache /tmp/ml-bench --json benchmarks/results/cpu-2026-12-02/protection.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

from medlocker.data import generate_fundus, open_source, write_synthetic_dataset
from medlocker.models import load_checkpoint, save_checkpoint, train_classifier
from medlocker.report.metrics import predict
from medlocker.watermark import (
    PRESETS,
    boxes_from_masks,
    default_logo,
    learn_logo,
    protect,
    render_exact,
    resize_logo,
)
from medlocker.watermark.config import MARK_SSIM_MIN

LUMA = np.array([0.299, 0.587, 0.114])


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ LUMA


def mark_ssim(image: np.ndarray, own: np.ndarray, plain: np.ndarray, p: Any) -> float:
    """SSIM of the stored mark's luminance vs the plain logo's, both rendered on the same image and box."""
    x0, y0, x1, y1 = p.box
    a = luminance(render_exact(image, own, p)[y0:y1, x0:x1])
    b = luminance(render_exact(image, plain, p)[y0:y1, x0:x1])
    win = min(7, a.shape[0], a.shape[1])
    win -= win % 2 == 0  # odd, and no larger than the box
    return float(structural_similarity(a, b, data_range=255.0, win_size=win))


def psnr_outside(orig: np.ndarray, out: np.ndarray, box: tuple[int, int, int, int]) -> float:
    keep = np.ones(orig.shape[:2], bool)
    x0, y0, x1, y1 = box
    keep[y0:y1, x0:x1] = False
    d = (orig[keep].astype(np.float64) - out[keep]) ** 2
    return math.inf if d.mean() == 0 else 10 * math.log10(255 ** 2 / d.mean())


def jpeg(image: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


def inpaint_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    x0, y0, x1, y1 = box
    mask[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = 255
    return cv2.inpaint(image[..., ::-1].copy(), mask, 3, cv2.INPAINT_TELEA)[..., ::-1].copy()


def models_for(args: argparse.Namespace, device: torch.device) -> dict[str, torch.nn.Module]:
    cache = Path(args.cache)
    data = cache / f"train-{args.n_train}-{args.size}px"
    if not (data / "labels.csv").exists():
        write_synthetic_dataset(data, n=args.n_train, size=args.size, seed=args.seed, progress=False)
    source = open_source(data)
    out = {}
    for arch in args.archs:
        ckpt = cache / f"{arch}-{args.size}px-{args.epochs}ep-n{args.n_train}.pt"
        if not ckpt.exists():
            t = time.perf_counter()
            clf, hist = train_classifier(source, arch=arch, epochs=args.epochs, input_size=args.size, seed=args.seed,
                                         device=device, progress=False)
            save_checkpoint(clf, ckpt, meta={"val_accuracy": hist["val_accuracy"]})
            print(f"trained {arch} in {time.perf_counter() - t:.0f} s, val {hist['val_accuracy'][-1]:.3f}",
                  file=sys.stderr)
        out[arch] = load_checkpoint(ckpt, map_location=device).eval()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="folder for the training set and checkpoints (reused)")
    p.add_argument("--json", type=Path, required=True, help="where to write the results")
    p.add_argument("--presets", default="paper,standard,standard+unbounded",
                   help="comma-separated names of medlocker.watermark.PRESETS; NAME+unbounded: its texture "
                        "without the colour bound")
    p.add_argument("--archs", default="smallcnn,resnet18,mobilenet_v3_large,densenet121,vgg16",
                   help="the first two are the surrogates, the rest held out")
    p.add_argument("--n", type=int, default=60, help="evaluation images")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.archs = [a for a in args.archs.split(",") if a]
    device = torch.device("cpu")
    torch.set_num_threads(1)
    models = models_for(args, device)
    sur_names, held = args.archs[:2], args.archs[2:]
    surrogates = [models[a] for a in sur_names]
    samples = [generate_fundus(args.seed, args.n_train + i, args.size) for i in range(args.n)]
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples])
    masks = [np.any(np.stack(list(s.masks.values())), 0) if s.masks else np.zeros(images.shape[1:3], bool)
             for s in samples]
    boxes = [[tuple(int(v) for v in b) for b in boxes_from_masks(list(s.masks.values()), min_area=1)] for s in samples]
    train = [generate_fundus(args.seed, i, args.size) for i in range(64)]
    clean = {a: float((predict(m, images, device=device) == labels).mean()) for a, m in models.items()}
    rows = {}
    for name in [n for n in args.presets.split(",") if n]:
        base, _, variant = name.partition("+")
        cfg = PRESETS[base]
        if variant == "unbounded":  # the texture without its colour bound, for the SSIM threshold
            cfg = replace(cfg, texture=replace(cfg.texture, max_change=None))
        elif variant:
            raise SystemExit(f"unknown variant {variant!r} (known: unbounded)")
        logo = default_logo()
        t = time.perf_counter()
        cached = Path(args.cache) / f"logo-{hashlib.sha256(repr((cfg.universal, cfg.placement)).encode()).hexdigest()[:16]}.npy"
        if cfg.universal.learned and cached.exists():
            logo = np.load(cached)
        elif cfg.universal.learned:
            tr_boxes = [[tuple(int(v) for v in b) for b in boxes_from_masks(list(s.masks.values()), min_area=1)]
                        for s in train]
            logo = learn_logo(np.stack([s.image for s in train]), [s.label for s in train], tr_boxes, surrogates,
                              logo=logo, config=cfg, device=device, generator=torch.Generator().manual_seed(args.seed))
            np.save(cached, logo)
        learn_s = time.perf_counter() - t
        t = time.perf_counter()
        res = protect(images, labels.tolist(), boxes, surrogates, logo=logo, config=cfg, device=device,
                      seeds=list(range(args.n)))
        wall = time.perf_counter() - t
        out, ssim, psnr, lesion = [], [], [], 0
        for img, r, m in zip(images, res, masks):
            if r.placement is None:
                out.append(img.copy())
                continue
            plain = resize_logo(logo, r.placement.w, r.placement.h) if logo.shape[:2] != (r.placement.h, r.placement.w) \
                else logo
            own = plain if r.logo is None else r.logo
            stored = r.stored_image(img, logo)
            out.append(stored)
            ssim.append(mark_ssim(img, own, default_logo_at(r.placement), r.placement))
            psnr.append(psnr_outside(img, stored, r.placement.box))
            lesion += int(((stored != img).any(2) & m).sum())
        out = np.stack(out)
        variants = {
            "published": out,
            "jpeg50": np.stack([jpeg(x, 50) for x in out]),
            "oracle_inpaint": np.stack([inpaint_box(x, r.placement.box) if r.placement else x
                                        for x, r in zip(out, res)]),
        }
        acc = {v: {a: float((predict(models[a], x, device=device) == labels).mean()) for a in args.archs}
               for v, x in variants.items()}
        q = [r.queries for r in res]
        rows[name] = {
            "protection": cfg.to_dict(),
            "white_box_acc": float(np.mean([acc["published"][a] for a in sur_names])),
            "held_out_acc": float(np.mean([acc["published"][a] for a in held])),
            "held_out_acc_jpeg50": float(np.mean([acc["jpeg50"][a] for a in held])),
            "held_out_acc_oracle_inpaint": float(np.mean([acc["oracle_inpaint"][a] for a in held])),
            "accuracy": acc,
            "mark_luminance_ssim_vs_logo": {"median": float(np.median(ssim)), "min": float(np.min(ssim))},
            "psnr_outside_box_db": "inf" if all(math.isinf(v) for v in psnr) else
            {"mean": float(np.mean([v for v in psnr if math.isfinite(v)])), "min": float(np.min(psnr))},
            "with_layer": sum(r.layer is not None for r in res),
            "lesion_pixels_changed": lesion,
            "median_queries": float(np.median(q)), "max_queries_config": cfg.queries(len(surrogates)),
            "search_images_per_s_cpu": round(len(images) / wall, 3), "learn_logo_s": round(learn_s, 1),
            "no_feasible_position": sum(r.placement is None for r in res),
        }
        print(name, json.dumps({k: v for k, v in rows[name].items() if k not in ("protection", "accuracy")}),
              file=sys.stderr, flush=True)
    result = {"benchmark": "protection", "synthetic_data": True, "device": "cpu (2 shared cores)",
              "host": platform.node(), "torch": torch.__version__,
              "run": {"n": args.n, "n_train": args.n_train, "size": args.size, "epochs": args.epochs,
                      "surrogates": sur_names, "held_out": held, "mark_ssim_min": MARK_SSIM_MIN},
              "clean_acc": clean, "presets": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


_PLAIN: dict[tuple[int, int], np.ndarray] = {}


def default_logo_at(p: Any) -> np.ndarray:
    """The public default logo at the placement's size: what the mark should still look like."""
    key = (p.w, p.h)
    if key not in _PLAIN:
        _PLAIN[key] = resize_logo(default_logo(), p.w, p.h)
    return _PLAIN[key]


if __name__ == "__main__":
    sys.exit(main())
