"""How much do SYNTHETIC fundus images look like real colour fundus photographs?

Compares generators against the two real photographs shipped with scikit-image:
``skimage.data.retina()`` (a full fundus photograph) and
``skimage.data.microaneurysms()`` (a crop with microaneurysms). They are
references to compare against, not a dataset. Statistics, all at ``--size``:

- ``w1_rgb``: per-channel 1-D Wasserstein distance between the colour of the
  pixels inside the field of view (luminance > 25) of ``--n`` synthetic images,
  pooled, and of ``retina()``;
- ``radial_mad``: mean absolute difference of the radial luminance profile
  (mean luminance in 20 bins of the radius normalised to the FOV radius);
- ``spectrum_slope``: slope of the log-log radially averaged power spectrum of
  the luminance of a central crop (side = FOV radius), mean over images; for
  the microaneurysm crop, the whole crop.

    python benchmarks/realism.py --generator new=medlocker.data.synth \
        --generator old=/tmp/synth_main.py --figure docs/figures/grades.jpg

A generator is a module name or a ``.py`` file exposing ``generate_fundus`` (for
the generator on main: ``git show main:medlocker/data/synth.py > /tmp/synth_main.py``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageDraw

_BINS = 20


def load_generator(spec: str) -> ModuleType:
    if spec.endswith(".py"):
        mod_spec = importlib.util.spec_from_file_location(f"_gen_{abs(hash(spec))}", spec)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module  # dataclasses look their module up there
        mod_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def luminance(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def fov_geometry(img: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Mask (luminance > 25), centre (row, col) and radius sqrt(area / pi) of the field of view."""
    mask = luminance(img) > 25
    ys, xs = np.nonzero(mask)
    return mask, float(ys.mean()), float(xs.mean()), float(np.sqrt(mask.sum() / np.pi))


def radial_profile(img: np.ndarray) -> np.ndarray:
    mask, cy, cx, r = fov_geometry(img)
    yy, xx = np.indices(mask.shape)
    rr = np.hypot(yy - cy, xx - cx) / r
    b = np.minimum((rr * _BINS).astype(int), _BINS)
    lum = luminance(img)
    sums = np.bincount(b[mask], lum[mask], minlength=_BINS + 1)[:_BINS]
    counts = np.bincount(b[mask], minlength=_BINS + 1)[:_BINS]
    return sums / np.maximum(counts, 1)


def spectrum_slope(lum: np.ndarray) -> float:
    """Slope of log power vs log frequency, radially averaged, frequencies 2 .. side/4."""
    side = min(lum.shape)
    x = lum[:side, :side] - lum[:side, :side].mean()
    w = np.hanning(side)
    p = np.abs(np.fft.fftshift(np.fft.fft2(x * np.outer(w, w)))) ** 2
    yy, xx = np.indices(p.shape)
    k = np.hypot(yy - side // 2, xx - side // 2).astype(int)
    radial = np.bincount(k.ravel(), p.ravel()) / np.maximum(np.bincount(k.ravel()), 1)
    ks = np.arange(2, side // 4)
    return float(np.polyfit(np.log(ks), np.log(radial[ks]), 1)[0])


def central_crop(img: np.ndarray) -> np.ndarray:
    _, cy, cx, r = fov_geometry(img)
    h = int(r / 2)
    cy, cx = int(cy), int(cx)
    return luminance(img)[max(0, cy - h) : cy + h, max(0, cx - h) : cx + h]


def resized(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))


def stats(images: list[np.ndarray], real: np.ndarray) -> dict:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    real_px = real[fov_geometry(real)[0]]
    pooled = np.concatenate([im[fov_geometry(im)[0]] for im in images])
    pooled = pooled[rng.choice(len(pooled), min(len(pooled), 400_000), replace=False)]
    w1 = [float(wasserstein_distance(pooled[:, c], real_px[:, c])) for c in range(3)]
    profile = np.mean([radial_profile(im) for im in images], axis=0)
    real_profile = radial_profile(real)
    return {
        "w1_rgb": [round(x, 2) for x in w1],
        "radial_mad": round(float(np.abs(profile - real_profile).mean()), 2),
        "radial_profile": [round(float(x), 1) for x in profile],
        "spectrum_slope": round(float(np.mean([spectrum_slope(central_crop(im)) for im in images])), 3),
        "mean_rgb_in_fov": [round(float(x), 1) for x in pooled.mean(0)],
    }


def speed(gen: ModuleType, n: int = 50, size: int = 256) -> float:
    gen.generate_fundus(0, 0, size)
    t0 = time.perf_counter()
    for i in range(n):
        gen.generate_fundus(0, i, size)
    return time.perf_counter() - t0


def figure(gen: ModuleType, path: Path, size: int = 256) -> None:
    """One SYNTHETIC image of each grade next to the two real references, labelled."""
    from skimage import data

    panels, labels, found, i = [], [], {}, 0
    while len(found) < 5:
        s = gen.generate_fundus(0, i, size)
        found.setdefault(s.label, s.image)
        i += 1
    for g in range(5):
        panels.append(found[g])
        labels.append(f"synthetic grade {g}")
    panels.append(resized(data.retina(), size))
    labels.append("real: skimage retina()")
    panels.append(np.asarray(Image.fromarray(data.microaneurysms()).convert("RGB").resize((size, size), Image.BICUBIC)))
    labels.append("real: microaneurysms() crop")
    pad = 22
    sheet = Image.new("RGB", (len(panels) * (size + 4), size + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (p, text) in enumerate(zip(panels, labels)):
        sheet.paste(Image.fromarray(p), (k * (size + 4), pad))
        draw.text((k * (size + 4) + 4, 5), text, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, **({"quality": 88} if path.suffix.lower() in (".jpg", ".jpeg") else {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", action="append", default=None, help="name=module-or-file.py (repeatable)")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-2026-12-02/realism.json"))
    ap.add_argument("--figure", type=Path, default=None, help="write the grades figure (first generator)")
    args = ap.parse_args()
    from skimage import data

    real = resized(data.retina(), args.size)
    ma = luminance(np.asarray(Image.fromarray(data.microaneurysms()).convert("RGB")))
    result: dict = {
        "synthetic_data": True,
        "data": "SYNTHETIC images vs the real skimage.data.retina() / microaneurysms()",
        "n": args.n, "size": args.size, "seed": args.seed,
        "real": {
            "spectrum_slope_retina": round(spectrum_slope(central_crop(real)), 3),
            "spectrum_slope_microaneurysms": round(spectrum_slope(ma), 3),
            "radial_profile": [round(float(x), 1) for x in radial_profile(real)],
            "mean_rgb_in_fov": [round(float(x), 1) for x in real[fov_geometry(real)[0]].mean(0)],
        },
        "generators": {},
    }
    specs = args.generator or ["new=medlocker.data.synth"]
    for spec in specs:
        name, _, target = spec.partition("=")
        gen = load_generator(target or name)
        images = [gen.generate_fundus(args.seed, i, args.size).image for i in range(args.n)]
        entry = stats(images, real)
        entry["seconds_50_at_256"] = round(speed(gen), 2)
        entry["generator"] = target or name
        result["generators"][name] = entry
        if args.figure is not None and spec == specs[0]:
            figure(gen, args.figure)
        print(name, json.dumps({k: v for k, v in entry.items() if k != "radial_profile"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("real", json.dumps(result["real"]))


if __name__ == "__main__":
    main()
