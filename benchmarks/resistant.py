#!/usr/bin/env python
"""Benchmark: which images the surrogates still classify correctly, and what moves them.

The report's white-box figure is the surrogates' accuracy on the protected images. This
takes the first ``--n`` evaluation images of a report preset (the same images, models and
primary configuration ``ensemble_learned_colours`` as ``benchmarks/report.py``), protects
them, and for the images some surrogate still gets right records their grade, their logo's
area, and the largest logo the lesion boxes would allow with no safety margin and a finer
size ladder. Then it protects just those images again under each ``--variants`` entry
(overrides of the primary :class:`medlocker.watermark.ProtectionConfig`, by the flat names of
:data:`medlocker.watermark.config.FLAT_NAMES`) and counts how many stay correct.
All numbers are on synthetic data.

    python benchmarks/resistant.py --cpu --epochs 10 --n 100 --out runs/full-cpu   # after report.py --cpu --epochs 10 there
    python benchmarks/resistant.py --gpu --n 500 --out runs/r224 \\
        --variants "colour_steps=300;lesion_margin=0,logo_shrink=0.9"

A variant is ``field=value`` pairs joined by ``,``; tuples (``colour_eot``) join their items
with ``+``. The texture steps a variant adds are paid for on top of the placement budget
(:meth:`~medlocker.watermark.ProtectionConfig.queries`), as in the report.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medlocker.cli import view_list
from medlocker.models import resolve_device
from medlocker.report import (
    CPU,
    GPU,
    QUICK,
    evaluation_images,
    learned_logo,
    seeded,
    trained_models,
    with_overrides,
    with_protection,
)
from medlocker.report.metrics import predict
from medlocker.watermark import ProtectionConfig, default_logo, protect, render_exact
from medlocker.watermark.config import FLAT_NAMES
from medlocker.watermark.feasible import (
    feasible_positions,
    field_of_view,
    forbidden_mask,
)
from medlocker.watermark.logo import logo_size

PRIMARY = "ensemble_learned_colours"
DEFAULT_VARIANTS = "colour_steps=300;lesion_margin=0,logo_shrink=0.9;lesion_margin=0,logo_shrink=0.9,colour_steps=300"


def flat_value(config: ProtectionConfig, key: str) -> Any:
    """The value of the flat-named field ``key`` (e.g. ``colour_steps``) in ``config``."""
    part, name = FLAT_NAMES[key]
    return getattr(getattr(config, part) if part else config, name)


def parse_variant(text: str, base: ProtectionConfig) -> dict[str, Any]:
    """``"colour_steps=300,colour_eot=jpeg75+resize0.5"`` -> typed overrides (:meth:`ProtectionConfig.override`)."""
    names = set(FLAT_NAMES)
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"bad variant item {item!r}: want FIELD=VALUE with FIELD one of {sorted(names)}")
        current = flat_value(base, key)
        if isinstance(current, tuple) or current is None and key.endswith("eot"):
            out[key] = tuple(v for v in value.split("+") if v)
        elif isinstance(current, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, int):
            out[key] = int(value)
        elif isinstance(current, float) or current is None:
            out[key] = float(value)
        else:
            out[key] = value
    return out


def largest_area(logo: np.ndarray, image: torch.Tensor, boxes: list, *, margin: int, shrink: float,
                 scale: float, min_scale: float) -> float:
    """Largest logo area fraction on the ladder ``scale * shrink**k`` with a position off the boxes."""
    H, W = image.shape[-2:]
    fov = field_of_view(image[None])
    forbidden = forbidden_mask([boxes], fov, margin=margin)
    s = scale
    while s >= min_scale * (1 - 1e-9):
        w, h = logo_size(logo, (H, W), scale=s)
        if bool(feasible_positions(forbidden, w, h).any()):
            return w * h / (H * W)
        s *= shrink
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="the --quick report preset (64 px, minutes on CPU)")
    preset.add_argument("--cpu", action="store_true", help="the --cpu report preset (classifiers at 64 px input)")
    preset.add_argument("--gpu", action="store_true", help="the --gpu report preset (224 px input, default)")
    p.add_argument("--out", type=Path, required=True,
                   help="run folder: a report run's folder reuses its cached models and learned logo")
    p.add_argument("--n", type=int, default=100, help="first N evaluation images (default 100)")
    p.add_argument("--epochs", type=int, help="override the preset's training epochs")
    p.add_argument("--device", help="override the preset's device (cpu, cuda, auto)")
    p.add_argument("--colour-eot", type=view_list,
                   help="override the preset's colour-step views (comma list; 'none' for none)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"';'-separated protection overrides tried on the resistant images (default {DEFAULT_VARIANTS!r})")
    p.add_argument("--json", type=Path, help="where to write the results (default OUT/resistant-N.json)")
    args = p.parse_args(argv)

    base = QUICK if args.quick else CPU if args.cpu else GPU
    over: dict[str, Any] = {}
    if args.epochs:
        over["epochs"] = args.epochs
    if args.device:
        over["device"] = args.device
    over["archs"] = tuple(a for a in base.archs if a in base.surrogates)  # white-box: the surrogates only
    cfg = with_protection(with_overrides(base, **over), colour_eot=args.colour_eot)
    if args.n < 1 or args.n > cfg.n_images:
        p.error(f"--n must be in 1..{cfg.n_images}")
    device = resolve_device(cfg.device)
    args.out.mkdir(parents=True, exist_ok=True)

    def stage(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    images, labels, boxes = evaluation_images(cfg, args.out)
    images, labels, boxes = images[:args.n], labels[:args.n], boxes[:args.n]
    models = trained_models(cfg, args.out, device, True, stage)
    surrogates = [models[s] for s in cfg.surrogates]
    search = seeded(cfg.configuration(PRIMARY), cfg)
    logo_path = next((q for q in (args.out / PRIMARY / "logo.png", args.out / "ensemble_learned" / "logo.png")
                      if q.exists()), None)
    if logo_path is not None:
        stage(f"using the learned logo {logo_path}")
        logo = np.asarray(Image.open(logo_path).convert("RGBA"))
    else:
        stage(f"learning the logo's colours ({search.universal.steps} steps on {search.universal.images} images)")
        logo = learned_logo(cfg, search, surrogates, default_logo(), device)
    seeds = [cfg.n_train + i for i in range(args.n)]  # as in the report: the same placements

    def protect_and_score(idx: list[int], config: ProtectionConfig) -> dict[str, Any]:
        t = time.perf_counter()
        res = protect(images[idx], labels[idx].tolist(), [boxes[i] for i in idx], surrogates, logo=logo,
                      config=config, device=device, seeds=[seeds[i] for i in idx])
        wall = time.perf_counter() - t
        x = np.stack([render_exact(images[i], logo if r.logo is None else r.logo, r.placement)
                      if r.placement is not None else images[i] for i, r in zip(idx, res)])
        right = {s: (predict(models[s], x, device=device) == labels[idx]) for s in cfg.surrogates}
        area = [r.placement.w * r.placement.h / (images.shape[1] * images.shape[2]) if r.placement else 0.0
                for r in res]
        return {"right": right, "area": area, "queries": [r.queries for r in res], "wall_s": wall}

    stage(f"protecting {args.n} images with {PRIMARY} ({search.texture.steps} texture steps, "
          f"views {list(search.texture.views(search.placement))})")
    everything = list(range(args.n))
    first = protect_and_score(everything, search)
    clean = {s: predict(models[s], images, device=device) == labels for s in cfg.surrogates}
    resistant = sorted({i for s in cfg.surrogates for i in np.nonzero(first["right"][s])[0].tolist()})
    image_t = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    rows = []
    for i in resistant:
        place = search.placement
        loose = largest_area(logo, image_t[i], boxes[i], margin=0, shrink=0.9, scale=place.logo_scale,
                             min_scale=place.min_logo_scale or place.logo_scale)
        rows.append({"index": i, "grade": int(labels[i]), "right_on": [s for s in cfg.surrogates if first["right"][s][i]],
                     "clean_right_on": [s for s in cfg.surrogates if clean[s][i]],
                     "logo_area": round(first["area"][i], 4), "largest_area_margin0_ladder0.9": round(loose, 4),
                     "n_lesion_boxes": len(boxes[i])})
    others = sorted(set(everything) - set(resistant))
    summary = {
        "white_box_acc": {s: float(first["right"][s].mean()) for s in cfg.surrogates},
        "clean_acc": {s: float(clean[s].mean()) for s in cfg.surrogates},
        "queries_median": float(np.median(first["queries"])),
        "resistant": len(resistant),
        "resistant_by_grade": np.bincount(labels[resistant], minlength=5).tolist() if resistant else [0] * 5,
        "resistant_clean_wrong": sum(1 for r in rows if not r["clean_right_on"]),
        "logo_area_mean_resistant": float(np.mean([first["area"][i] for i in resistant])) if resistant else None,
        "logo_area_mean_others": float(np.mean([first["area"][i] for i in others])) if others else None,
        "wall_s": round(first["wall_s"], 1),
    }
    stage(f"{len(resistant)} of {args.n} images still right on some surrogate: grades {summary['resistant_by_grade']}")

    variants = []
    for text in filter(None, (v.strip() for v in args.variants.split(";"))):
        if not resistant:
            break
        overrides = parse_variant(text, search)
        config = search.override(**overrides)
        stage(f"variant {text} on the {len(resistant)} resistant images")
        r = protect_and_score(resistant, config)
        variants.append({"variant": text, "still_right": {s: int(r["right"][s].sum()) for s in cfg.surrogates},
                         "of": len(resistant), "logo_area_mean": round(float(np.mean(r["area"])), 4),
                         "queries_median": float(np.median(r["queries"])), "wall_s": round(r["wall_s"], 1)})
        stage(f"  -> still right: {variants[-1]['still_right']}")

    result = {
        "benchmark": "resistant", "synthetic_data": True,
        "preset": "quick" if args.quick else "cpu" if args.cpu else "gpu",
        "run": {"n": args.n, "size": cfg.size, "model_size": cfg.model_size or cfg.size, "epochs": cfg.epochs,
                "surrogates": list(cfg.surrogates), "config": PRIMARY,
                "protection": search.to_dict()},
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "host": platform.node(), "torch": torch.__version__,
        "summary": summary, "resistant_images": rows, "variants": variants,
    }
    path = args.json or args.out / f"resistant-{args.n}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({"summary": summary, "variants": variants}, indent=1))
    stage(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
