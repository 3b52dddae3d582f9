#!/usr/bin/env python3
"""Ownership proofs against re-posted leaks: match rates per edit, false matches.

Packs a small synthetic dataset (synthetic data: every figure is labelled so), then

* **leaks**: for each edit class (crop, rotation, rescale, JPEG q50, and
  combinations), ``--leaks`` published images are edited with
  :func:`medlocker.proof.repost` and traced with :func:`medlocker.proof.prove`
  (the owner, searching the whole dataset); each proof is then checked with
  :func:`medlocker.proof.check_proof` and the leaked file (anyone);
* **unrelated images** (must never match): synthetic fundus images that are not in
  the dataset, edited and not; published images of the same dataset claimed as
  *another* sample (``prove(..., key=other)``, the owner's statistic and the public
  check); and the two real photographs of scikit-image (``retina``,
  ``microaneurysms``) resized to the dataset's size, under several edits;
* **leaked originals** (the same image without its watermark): the owner's
  watermark statistic must not match them either.

The thresholds in ``medlocker.proof.THRESHOLDS`` are chosen from these figures; the
JSON records each statistic's lowest value over matches, highest over unrelated
images, and the margin to the threshold on both sides.

    python benchmarks/proof.py                      # 256 px, 24 images, 16 leaks per edit (~12 min, 1 core)
    python benchmarks/proof.py --size 128 --out runs/proof-128.json
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medlocker import Identity, PackConfig, SearchConfig, open_source
from medlocker.data import generate_fundus, write_synthetic_dataset
from medlocker.models import build_classifier
from medlocker.owner import OwnerSecrets
from medlocker.pack import pack
from medlocker.proof import THRESHOLDS, Repost, check_proof, prove, repost
from medlocker.watermark import default_logo

log = logging.getLogger("proof")
OUT = Path(__file__).resolve().parent / "results" / "cpu-2026-12-02" / "proof.json"


def edits(rng: np.random.Generator) -> dict[str, Callable[[], Repost]]:
    """Edit classes -> a generator of per-leak edits (random within the class)."""
    def crop(lo: float, hi: float) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in rng.uniform(lo, hi, 4))  # type: ignore[return-value]

    def angle(lo: float, hi: float) -> float:
        return float(rng.choice([-1, 1]) * rng.uniform(lo, hi))

    return {
        "none": lambda: Repost(),
        "crop_10pct": lambda: Repost(crop=(0.1, 0.1, 0.1, 0.1)),
        "crop_random_0-10pct": lambda: Repost(crop=crop(0, 0.1)),
        "rotate_3deg": lambda: Repost(angle=angle(3, 3)),
        "rotate_5deg": lambda: Repost(angle=angle(5, 5)),
        "rotate_random_0-5deg": lambda: Repost(angle=angle(0, 5)),
        "scale_0.5": lambda: Repost(scale=0.5),
        "scale_0.75": lambda: Repost(scale=0.75),
        "scale_1.5": lambda: Repost(scale=1.5),
        "scale_2": lambda: Repost(scale=2.0),
        "jpeg_q50": lambda: Repost(quality=50),
        "crop+rotate": lambda: Repost(crop=crop(0, 0.1), angle=angle(0, 5)),
        "rotate+scale0.5+jpeg50": lambda: Repost(angle=angle(0, 5), scale=0.5, quality=50),
        "crop10+rotate5+scale0.5+jpeg50": lambda: Repost(crop=(0.1,) * 4, angle=angle(5, 5), scale=0.5, quality=50),
        "all_random": lambda: Repost(crop=crop(0, 0.1), angle=angle(0, 5), scale=float(np.exp(rng.uniform(np.log(0.5), np.log(2)))),
                                     quality=50),
    }


def beyond(rng: np.random.Generator) -> dict[str, Callable[[], Repost]]:
    """Edits outside the calibrated model: where the proofs stop (reported, not required)."""
    return {
        "beyond:crop_15pct": lambda: Repost(crop=(0.15,) * 4),
        "beyond:rotate_8deg": lambda: Repost(angle=float(rng.choice([-8.0, 8.0]))),
        "beyond:scale_0.3": lambda: Repost(scale=0.3),
        "beyond:jpeg_q30": lambda: Repost(quality=30),
    }


def png_file(img: np.ndarray) -> bytes:
    """The leaked file (the edit's JPEG, if any, is in its pixels already); the proof digests it."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def build(tmp: Path, *, n: int, size: int, seed: int) -> dict:
    source = open_source(write_synthetic_dataset(tmp / "src", n=n, size=size, seed=seed, progress=False))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = build_classifier("smallcnn", source.classes, input_size=size).eval()
    owner = Identity.generate(name="owner")
    dest, secrets = tmp / "ds", tmp / "secrets"
    pack(source, str(dest), owner=owner, secrets=secrets, surrogates=[model], logo=default_logo(),
         config=PackConfig(search=SearchConfig(optimizer="blackbox", budget=8, logo_scale=0.03, lesion_margin=1),
                           shard_size=8))
    run = OwnerSecrets.load(secrets, owner)
    import webdataset as wds  # the public read path: what a re-poster has

    published = {}
    urls = sorted(str(p) for p in dest.glob("*.tar"))
    for x in wds.WebDataset(urls, shardshuffle=False):  # no .decode(): images only, no pickle
        published[x["__key__"]] = np.asarray(Image.open(io.BytesIO(x["png"])).convert("RGB"))
    originals = {f"synth_{i:06d}": generate_fundus(seed, i, size).image for i in range(n)}
    return {"dest": str(dest), "owner": owner, "run": run, "published": published, "originals": originals}


def trial(ds: dict, suspect: np.ndarray, *, key: str | None = None) -> dict:
    """prove + check_proof on one suspect (as the JPEG file a re-poster uploads)."""
    data = png_file(suspect)
    proof = prove(data, secrets=ds["run"], dest=ds["dest"], owner=ds["owner"].public, key=key)
    check = check_proof(proof.to_bytes(), dest=ds["dest"], owner=ds["owner"].public, suspect=data)
    row = {"key": proof.doc["key"], "owner_match": proof.matched, "public_match": check.matched,
           "image": proof.image_similarity, "watermark": proof.score, "box": check.box_similarity,
           "public_image": check.image_similarity, "angle": proof.doc["angle_mdeg"] / 1000,
           "scale": proof.doc["scale_milli"] / 1000}
    # How far each rule is from flipping: a match needs every statistic >= its threshold, so
    # slack = min over statistics of (value - threshold); > 0 matches, < 0 does not (None counts as -1).
    t = THRESHOLDS
    for rule, pairs in (("owner", (("image", t.image), ("watermark", t.watermark))),
                        ("public", (("public_image", t.image), ("box", t.box)))):
        row[f"{rule}_slack"] = min((row[f] if row[f] is not None else -1.0) - th for f, th in pairs)
    return row


def _summary(rows: list[dict]) -> dict:
    def low(field: str) -> float | None:
        vals = [r[field] for r in rows if r[field] is not None]
        return round(min(vals), 3) if vals else None

    def high(field: str) -> float | None:
        vals = [r[field] for r in rows if r[field] is not None]
        return round(max(vals), 3) if vals else None

    fields = ("image", "watermark", "box", "public_image", "owner_slack", "public_slack")
    return {"n": len(rows), "owner_matches": sum(r["owner_match"] for r in rows),
            "public_matches": sum(r["public_match"] for r in rows),
            "box_cut_off": sum(r["watermark"] is None for r in rows),
            "min": {f: low(f) for f in fields}, "max": {f: high(f) for f in fields}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=24, help="images in the packed dataset")
    ap.add_argument("--leaks", type=int, default=16, help="leaked images per edit class")
    ap.add_argument("--unrelated", type=int, default=40, help="synthetic images not in the dataset")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        ds = build(Path(tmp), n=args.n, size=args.size, seed=args.seed)
        keys = sorted(ds["published"])
        log.info("packed %d images at %d px in %.0f s", len(keys), args.size, time.time() - t0)
        leaks: dict[str, dict] = {}
        for name, make in {**edits(rng), **beyond(rng)}.items():
            rows = []
            for i in range(args.leaks):
                key = keys[i % len(keys)]
                row = trial(ds, repost(ds["published"][key], make()))
                row["traced"] = row["key"] == key
                rows.append(row)
            leaks[name] = {**_summary(rows), "traced": sum(r["traced"] for r in rows)}
            log.info("%-32s traced %2d/%d owner %2d public %2d  min image %.3f wm %s box %s", name,
                     leaks[name]["traced"], len(rows), leaks[name]["owner_matches"], leaks[name]["public_matches"],
                     leaks[name]["min"]["image"], leaks[name]["min"]["watermark"], leaks[name]["min"]["box"])
        neg: dict[str, list[dict]] = {"synthetic_not_in_dataset": [], "same_dataset_other_sample": [],
                                      "skimage_real_photos": [], "leaked_originals": []}
        mixed = list(edits(rng).values())
        for i in range(args.unrelated):
            img = generate_fundus(9000 + i, i % 5, args.size).image
            neg["synthetic_not_in_dataset"].append(trial(ds, img if i % 2 else repost(img, mixed[i % len(mixed)]())))
        for i in range(args.unrelated):
            a, b = keys[i % len(keys)], keys[(i * 7 + 3) % len(keys)]
            if a == b:
                b = keys[(i + 1) % len(keys)]
            img = ds["published"][b] if i % 2 else repost(ds["published"][b], mixed[i % len(mixed)]())
            neg["same_dataset_other_sample"].append(trial(ds, img, key=a))
        from skimage import data as skdata

        for photo in (skdata.retina(), skdata.microaneurysms()):
            rgb = photo if photo.ndim == 3 else np.repeat(photo[..., None], 3, axis=2)
            base = np.asarray(Image.fromarray(rgb).resize((args.size, args.size), Image.BICUBIC))
            for j in range(10):
                neg["skimage_real_photos"].append(trial(ds, base if j == 0 else repost(base, mixed[j % len(mixed)]())))
        for i in range(min(args.leaks, len(keys))):
            neg["leaked_originals"].append(trial(ds, ds["originals"][keys[i]], key=keys[i]))
    unrelated = [r for k, rows in neg.items() if k != "leaked_originals" for r in rows]
    summary = {k: _summary(v) for k, v in neg.items()}
    all_leaks = [s["min"] for name, s in leaks.items() if not name.startswith("beyond:")]

    def margin(field: str, threshold: float, negatives: list[dict]) -> dict:
        lo = min((m[field] for m in all_leaks if m[field] is not None), default=None)
        hi = max((round(r[field], 3) for r in negatives if r[field] is not None), default=None)
        return {"threshold": threshold, "lowest_leak": lo, "highest_negative": hi,
                "leak_margin": None if lo is None else round(lo - threshold, 3),
                "negative_margin": None if hi is None else round(threshold - hi, 3)}

    def rule_margin(rule: str) -> dict:
        lo = min(m[f"{rule}_slack"] for m in all_leaks)
        return {"leaks_lowest_slack": round(lo, 3),
                "unrelated_highest_slack": round(max(r[f"{rule}_slack"] for r in unrelated), 3)}

    result = {
        "synthetic_data": True,
        "what": "ownership proofs: leaks traced and matched per re-post edit; false matches on unrelated images",
        "config": {"size": args.size, "dataset_images": args.n, "leaks_per_edit": args.leaks, "seed": args.seed,
                   "leak_file": "PNG of the edited pixels (the proof digests the file)",
                   "thresholds": THRESHOLDS.__dict__},
        "leaks": {k: v for k, v in leaks.items() if not k.startswith("beyond:")},
        "beyond_the_model": {k.removeprefix("beyond:"): v for k, v in leaks.items() if k.startswith("beyond:")},
        "unrelated": {**summary, "total": len(unrelated),
                      "owner_false_matches": sum(r["owner_match"] for r in unrelated),
                      "public_false_matches": sum(r["public_match"] for r in unrelated)},
        "margins": {
            "note": "per statistic: lowest value over all leaks vs highest over the negatives named; the watermark "
                    "score separates published from original pixels of the same image, so its negatives are the "
                    "leaked originals (on unrelated images the image statistic already fails). Per rule: the "
                    "slack min_i(stat_i - threshold_i), > 0 on every leak and < 0 on every unrelated image.",
            "image_vs_unrelated": margin("image", THRESHOLDS.image, unrelated),
            "public_image_vs_unrelated": margin("public_image", THRESHOLDS.image, unrelated),
            "watermark_vs_leaked_originals": margin("watermark", THRESHOLDS.watermark, neg["leaked_originals"]),
            "watermark_vs_unrelated": margin("watermark", THRESHOLDS.watermark, unrelated),
            "box_vs_unrelated": margin("box", THRESHOLDS.box, unrelated),
            "box_vs_leaked_originals": margin("box", THRESHOLDS.box, neg["leaked_originals"]),
            "owner_rule": rule_margin("owner"), "public_rule": rule_margin("public"),
        },
        "seconds": round(time.time() - t0, 1),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("unrelated: %d images, owner false matches %d, public false matches %d; margins %s",
             len(unrelated), result["unrelated"]["owner_false_matches"], result["unrelated"]["public_false_matches"],
             json.dumps(result["margins"]))
    log.info("wrote %s (%.0f s)", args.out, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
