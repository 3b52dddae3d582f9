"""Synthetic diabetic-retinopathy fundus images with per-lesion ground truth.

No real fundus dataset can be downloaded here, so tests, the demo and the
benchmarks run on these images. Every number measured on them must be labelled
"synthetic".

Each image is a fundus-like photograph: a circular field of view on black, an
optic disc, a macula, a branching vessel tree, choroidal texture, random
illumination, vignetting, colour cast, blur and noise. The grade follows the
spirit of the international clinical DR scale:

====  ===========================================================
0     no lesions
1     a few microaneurysms (MA) only
2     MA, a few haemorrhages (HE) in one or two quadrants, hard exudates (EX)
3     MA, many HE in all four quadrants, EX, cotton-wool spots (SE)
4     grade-3 signs plus neovascularisation (NV): tufts of fine tortuous vessels
====  ===========================================================

Colour, brightness, illumination, vessel density and distractors (nerve-fibre
reflexes, pigment) are drawn independently of the grade, so global colour
statistics say little about it; the grade is in the lesions. Lesions are sized
in units of the image so they survive resizing to 64-128 px.

Image ``i`` depends only on ``(seed, i)`` (``np.random.default_rng([seed, i])``),
so any subset can be generated in any order or in parallel, at any size.
Labels are balanced: each block of five consecutive indices holds the five
grades in an order drawn from ``(seed, i // 5)``.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from medlocker.util import atomic_open

__all__ = [
    "LESION_TYPES",
    "GRADE_LESIONS",
    "NUM_GRADES",
    "SynthSample",
    "generate_fundus",
    "synthetic_label",
    "synthetic_id",
    "write_synthetic_dataset",
]

LESION_TYPES: tuple[str, ...] = ("MA", "HE", "EX", "SE", "NV")
"""IDRiD-style lesion codes: microaneurysms, haemorrhages, hard exudates,
soft exudates (cotton-wool spots), neovascularisation."""

GRADE_LESIONS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("MA",),
    2: ("MA", "HE", "EX"),
    3: ("MA", "HE", "EX", "SE"),
    4: ("MA", "HE", "EX", "SE", "NV"),
}
"""The lesion types present in an image of each grade (always all of them)."""

NUM_GRADES = 5
MIN_SIZE = 16

_ID_PREFIX = "synth_"
_CIRCLE_COS = np.cos(np.linspace(0.0, 2.0 * np.pi, 20, endpoint=False))  # ellipse polygon vertices
_CIRCLE_SIN = np.sin(np.linspace(0.0, 2.0 * np.pi, 20, endpoint=False))


@dataclass(frozen=True)
class SynthSample:
    """One synthetic fundus image.

    Attributes:
        image: uint8 RGB, ``[size, size, 3]``.
        label: DR grade 0-4.
        masks: lesion code -> bool ``[size, size]`` mask; only the types present
            in the image (exactly ``GRADE_LESIONS[label]``), each non-empty.
    """

    image: np.ndarray
    label: int
    masks: dict[str, np.ndarray]


def synthetic_label(seed: int, index: int) -> int:
    """The grade of image ``index``: balanced within every block of five."""
    _check_seed_index(seed, index)
    order = np.random.default_rng([seed, index // NUM_GRADES, 0x5EED]).permutation(NUM_GRADES)
    return int(order[index % NUM_GRADES])


def synthetic_id(index: int) -> str:
    """Sample id of image ``index``, e.g. ``synth_000123`` (no dots)."""
    return f"{_ID_PREFIX}{index:06d}"


def generate_fundus(seed: int, index: int, size: int) -> SynthSample:
    """Render synthetic fundus image ``index`` of the dataset drawn from ``seed``.

    Args:
        seed: dataset seed (non-negative).
        index: image index (non-negative); the image depends only on ``(seed, index)``.
        size: side in pixels (square images), at least 16.

    Returns:
        The image, its grade and its lesion masks.

    Raises:
        ValueError: negative seed or index, or a size below 16.
    """
    _check_seed_index(seed, index)
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    size = int(size)
    label = synthetic_label(seed, index)
    rng = np.random.default_rng([seed, index])
    return _Renderer(rng, size).render(label)


def write_synthetic_dataset(
    out: str | os.PathLike[str],
    *,
    n: int,
    size: int,
    seed: int,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write ``n`` synthetic images as a CSV + IDRiD-style mask folder.

    Layout::

        out/labels.csv                    columns image,label (image = sample id)
        out/images/<id>.png
        out/masks/<lesion type>/<id>.png  8-bit 0/255, only where the type is present

    ``labels.csv`` is written last, so its presence marks a complete dataset.

    Args:
        out: destination folder (created if needed; existing files are overwritten).
        n: number of images.
        size: side in pixels.
        seed: dataset seed.
        progress: show a tqdm progress bar.
        workers: processes that render and encode images (the output does not
            depend on it).

    Returns:
        The dataset folder.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    root = Path(out)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for code in LESION_TYPES:
        (root / "masks" / code).mkdir(parents=True, exist_ok=True)

    jobs = [(root, seed, i, size) for i in range(n)]
    with contextlib.ExitStack() as stack:
        if workers > 1 and n > 1:
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(ProcessPoolExecutor(min(workers, n)))
            done = pool.map(_write_one, jobs, chunksize=max(1, min(32, n // (4 * workers))))
        else:
            done = map(_write_one, jobs)
        if progress:
            from tqdm.auto import tqdm

            done = tqdm(done, total=n, desc="synthesizing", unit="img")
        rows = list(done)

    with atomic_open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    return root


def _write_one(job: tuple[Path, int, int, int]) -> tuple[str, int]:
    """Render image ``i`` and write it with its masks; returns its ``labels.csv`` row."""
    root, seed, i, size = job
    sample = generate_fundus(seed, i, size)
    sid = synthetic_id(i)
    Image.fromarray(sample.image).save(root / "images" / f"{sid}.png")
    for code, mask in sample.masks.items():
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / code / f"{sid}.png")
    return sid, sample.label


def _nonzero_box(alpha: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices bounding the non-zero part of ``alpha``."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _check_seed_index(seed: int, index: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")


# ---------------------------------------------------------------- rendering
#
# Geometry is in normalised units: the image spans [-1, 1] on both axes, so a
# length of 0.02 is 1 % of the image side at every resolution.


class _Renderer:
    """Draws one image; holds the per-image random state and pixel grids."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng = rng
        self.s = size
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        self.u = c[None, :]  # x, columns
        self.v = c[:, None]  # y, rows
        # Anatomy, set by render() and read by the lesion painters.
        self.fov_c = (0.0, 0.0)
        self.fov_r = 1.0
        self.disc = (0.0, 0.0)
        self.disc_r = 0.1
        self.mac = (0.0, 0.0)
        self.veins: list[np.ndarray] = []
        self.last_center = (0.0, 0.0)  # of the last lesion drawn: fallback mask pixel

    # -- helpers ----------------------------------------------------------

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Normalised coordinates -> PIL pixel coordinates."""
        return ((x + 1.0) * self.s / 2.0, (y + 1.0) * self.s / 2.0)

    def window(self, x: float, y: float, r: float) -> tuple[slice, slice]:
        """Row and column slices of the square of half-side ``r`` around (x, y)."""
        half = self.s / 2.0
        x0, x1 = (int(max(0, math.floor((x - r + 1.0) * half))), int(min(self.s, math.ceil((x + r + 1.0) * half))))
        y0, y1 = (int(max(0, math.floor((y - r + 1.0) * half))), int(min(self.s, math.ceil((y + r + 1.0) * half))))
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

    def canvas(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", (self.s, self.s), 0)
        return img, ImageDraw.Draw(img)

    def ellipse(self, draw: ImageDraw.ImageDraw, x: float, y: float, a: float, b: float, angle: float) -> None:
        """A filled, rotated ellipse (semi-axes a, b in normalised units)."""
        ca, sa = math.cos(angle), math.sin(angle)
        ex, ey = a * _CIRCLE_COS, b * _CIRCLE_SIN
        half = self.s / 2.0
        xs = (x + ex * ca - ey * sa + 1.0) * half
        ys = (y + ex * sa + ey * ca + 1.0) * half
        draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=255)
        cx, cy = self.px(x, y)
        draw.point((cx, cy), fill=255)  # never vanishes at tiny sizes

    def soft(self, img: Image.Image, blur: float) -> np.ndarray:
        """Canvas -> float alpha in [0, 1], blurred by ``blur`` normalised units."""
        radius = blur * self.s / 2.0
        out = np.zeros((self.s, self.s), np.float32)
        box = img.getbbox()
        if box is None:
            return out
        if radius > 0.05:  # blur only the drawn part: most lesion canvases are nearly empty
            pad = int(math.ceil(3.0 * radius)) + 2
            box = (max(0, box[0] - pad), max(0, box[1] - pad), min(self.s, box[2] + pad), min(self.s, box[3] + pad))
            img = img.crop(box).filter(ImageFilter.GaussianBlur(radius))
        else:
            img = img.crop(box)
        out[box[1] : box[3], box[0] : box[2]] = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
        return out

    def lowfreq(self, grid: int) -> np.ndarray:
        """Smooth zero-mean noise, unit-ish amplitude, from a ``grid``^2 lattice."""
        small = self.rng.standard_normal((grid, grid)).astype(np.float32)
        img = Image.fromarray(small).resize((self.s, self.s), Image.BICUBIC)
        return np.asarray(img, dtype=np.float32)

    def random_point(self, rmin: float, rmax: float, avoid: list[tuple[float, float, float]]) -> tuple[float, float]:
        """A point in the annulus rmin..rmax around the FOV centre, off the ``avoid`` discs."""
        rng = self.rng
        for _ in range(30):
            r = math.sqrt(rng.uniform(rmin**2, rmax**2)) * self.fov_r
            t = rng.uniform(0.0, 2.0 * math.pi)
            x, y = self.fov_c[0] + r * math.cos(t), self.fov_c[1] + r * math.sin(t)
            if all((x - ax) ** 2 + (y - ay) ** 2 > ar**2 for ax, ay, ar in avoid):
                return x, y
        return x, y

    def quadrant_point(self, q: int, rmin: float, rmax: float) -> tuple[float, float]:
        """A random point in quadrant ``q`` (0..3) of the field of view, off the disc."""
        rng = self.rng
        for _ in range(30):
            r = math.sqrt(rng.uniform(rmin**2, rmax**2)) * self.fov_r
            t = (q + rng.uniform(0.08, 0.92)) * (math.pi / 2.0)
            x, y = self.fov_c[0] + r * math.cos(t), self.fov_c[1] + r * math.sin(t)
            if (x - self.disc[0]) ** 2 + (y - self.disc[1]) ** 2 > (1.4 * self.disc_r) ** 2:
                return x, y
        return x, y

    def walk(
        self,
        x: float,
        y: float,
        angle: float,
        steps: int,
        step: float,
        turn: float,
        jitter: float,
        width: float,
        taper: float,
        branch_p: float,
        depth: int,
        out: list[np.ndarray],
    ) -> None:
        """A branching random-walk vessel.

        Appends one ``[n + 1, 3]`` array per vessel (x, y, width at each vertex)
        to ``out``; the walk stops after it leaves the field of view. Side
        branches start at random vertices, narrower and shorter.
        """
        if steps < 1:
            return
        rng = self.rng
        angles = angle + np.cumsum(turn + rng.normal(0.0, jitter, steps))
        xs = x + np.concatenate(([0.0], np.cumsum(step * np.cos(angles))))
        ys = y + np.concatenate(([0.0], np.cumsum(step * np.sin(angles))))
        outside = np.flatnonzero((xs[1:] - self.fov_c[0]) ** 2 + (ys[1:] - self.fov_c[1]) ** 2 > (1.02 * self.fov_r) ** 2)
        n = int(outside[0]) + 1 if outside.size else steps
        widths = width * taper ** np.arange(n + 1)
        out.append(np.stack([xs[: n + 1], ys[: n + 1], widths], axis=1))
        if depth <= 0 or branch_p <= 0:
            return
        draws = rng.random((n, 4))
        for k in range(n):
            left = steps - k - 1
            if left > 3 and draws[k, 0] < branch_p:
                side = 1.0 if draws[k, 1] < 0.5 else -1.0
                self.walk(
                    float(xs[k + 1]), float(ys[k + 1]), float(angles[k]) + side * (0.5 + 0.6 * draws[k, 2]),
                    int(left * (0.4 + 0.4 * draws[k, 3])), step, rng.normal(0.0, 0.03), jitter,
                    float(widths[k + 1]) * 0.7, taper, branch_p * 0.8, depth - 1, out,
                )

    def draw_segments(self, paths: list[np.ndarray], min_px: float) -> Image.Image:
        """Rasterise ``walk`` paths: runs of equal (rounded) pixel width are drawn as one polyline."""
        img, draw = self.canvas()
        half = self.s / 2.0
        for path in paths:
            pts = (path[:, :2] + 1.0) * half
            wpx = np.maximum(min_px, np.rint(path[1:, 2] * half)).astype(int)
            start = 0
            for k in range(1, len(wpx) + 1):
                if k == len(wpx) or wpx[k] != wpx[start]:
                    w = int(wpx[start])
                    draw.line([tuple(p) for p in pts[start : k + 1].tolist()], fill=255, width=w, joint="curve" if w >= 3 else None)
                    start = k
        return img

    # -- the image ---------------------------------------------------------

    def render(self, label: int) -> SynthSample:
        rng = self.rng
        s = self.s
        u, v = self.u, self.v

        # Field of view: a slightly off-centre circle.
        self.fov_c = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03))
        self.fov_r = rng.uniform(0.9, 0.98)
        du, dv = u - self.fov_c[0], v - self.fov_c[1]
        rr = np.sqrt(du * du + dv * dv) / self.fov_r  # 1 at the FOV edge
        edge_px = 1.2 / (s / 2.0)
        fov = np.clip((1.0 - rr) / (edge_px / self.fov_r) + 0.5, 0.0, 1.0)
        fov_mask = rr < 1.0

        # Background: orange-red retina, choroidal texture, pigment mottling.
        base_r = rng.uniform(0.6, 0.9)
        base = np.array([base_r, base_r * rng.uniform(0.3, 0.55), base_r * rng.uniform(0.08, 0.3)], np.float32)
        tex = 1.0 + rng.uniform(0.03, 0.09) * self.lowfreq(5) + rng.uniform(0.01, 0.05) * self.lowfreq(max(8, s // 10))
        img = base[None, None, :] * tex[:, :, None]
        if rng.random() < 0.4:  # tigroid fundus: visible choroidal stripes, any grade
            stripes = np.clip(self.lowfreq(max(8, s // 14)), 0.5, None) - 0.5
            img = img * (1.0 - rng.uniform(0.08, 0.25) * np.clip(stripes, 0, 1)[:, :, None] * np.array([0.6, 1.0, 1.0], np.float32))

        # Optic disc on the left or right, macula on the other side.
        side = rng.choice((-1.0, 1.0))
        self.disc = (self.fov_c[0] + side * rng.uniform(0.36, 0.48) * self.fov_r, self.fov_c[1] + rng.uniform(-0.08, 0.08))
        self.disc_r = rng.uniform(0.1, 0.14)
        mac = (self.disc[0] - side * rng.uniform(0.42, 0.52), self.disc[1] + rng.uniform(0.0, 0.06))
        self.mac = mac

        ys, xs = self.window(self.disc[0], self.disc[1], self.disc_r + 0.08)
        wu, wv = u[:, xs], v[ys, :]
        dd = np.sqrt(((wu - self.disc[0]) / 0.9) ** 2 + (wv - self.disc[1]) ** 2)
        disc_a = 1.0 / (1.0 + np.exp((dd - self.disc_r) / 0.012))
        cup_a = 1.0 / (1.0 + np.exp((dd - self.disc_r * rng.uniform(0.35, 0.6)) / 0.012))
        disc_col = np.array([1.0, rng.uniform(0.75, 0.9), rng.uniform(0.45, 0.65)], np.float32)
        win = img[ys, xs]
        win += (disc_col - win) * (rng.uniform(0.55, 0.8) * disc_a)[:, :, None]
        win += (np.float32(1.0) - win) * (rng.uniform(0.2, 0.45) * cup_a)[:, :, None]

        msig = rng.uniform(0.08, 0.13)
        ys, xs = self.window(mac[0], mac[1], 3.5 * msig)
        md2 = (u[:, xs] - mac[0]) ** 2 + (v[ys, :] - mac[1]) ** 2
        img[ys, xs] *= (1.0 - rng.uniform(0.15, 0.35) * np.exp(-md2 / (2 * msig * msig)))[:, :, None]

        # Nerve-fibre-layer reflex: pale sheen along the arcades (a grade-independent distractor).
        if rng.random() < 0.5:
            sheen = np.clip(self.lowfreq(6), 0.6, None) - 0.6
            ys, xs = self.window(self.disc[0], self.disc[1], 1.0)
            near = np.exp(-(((u[:, xs] - self.disc[0]) ** 2 + (v[ys, :] - self.disc[1]) ** 2) / 0.25))
            win = img[ys, xs]
            win += (np.float32(0.95) - win) * np.clip(rng.uniform(0.1, 0.3) * sheen[ys, xs] * near, 0, 0.5)[:, :, None]

        # Vessel tree: veins (dark, wide) and arteries (lighter, narrower).
        vessel_scale = rng.uniform(0.75, 1.3)  # vessel density/width varies with the eye, not the grade
        veins: list[np.ndarray] = []
        arteries: list[np.ndarray] = []
        self.veins = veins
        for out, width, dark in ((veins, 0.024, 0), (arteries, 0.017, 1)):
            for a0, turn in (
                (-math.pi / 2 - side * 0.5, -side * 0.065),
                (math.pi / 2 + side * 0.5, side * 0.065),
                (-math.pi / 2 + side * 0.6, side * 0.035),
                (math.pi / 2 - side * 0.6, -side * 0.035),
            ):
                a = a0 + rng.normal(0.0, 0.15) + (0.12 if dark else -0.12)
                x = self.disc[0] + math.cos(a) * self.disc_r * 0.3
                y = self.disc[1] + math.sin(a) * self.disc_r * 0.3
                steps = int(rng.integers(22, 30))
                self.walk(x, y, a, steps, 0.045, turn, 0.09, width * vessel_scale, 0.97, 0.22, 3, out)
        vein_a = self.soft(self.draw_segments(veins, 1.0), 0.004)
        art_a = self.soft(self.draw_segments(arteries, 1.0), 0.004)
        vein_m = np.array([rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.45), rng.uniform(0.4, 0.6)], np.float32)
        art_m = np.array([rng.uniform(0.7, 0.8), rng.uniform(0.55, 0.7), rng.uniform(0.6, 0.75)], np.float32)
        img *= 1.0 - vein_a[:, :, None] * (1.0 - vein_m)
        img *= 1.0 - art_a[:, :, None] * (1.0 - art_m)

        # Lesions.
        masks: dict[str, np.ndarray] = {}
        for code in GRADE_LESIONS[label]:
            hard, layers = getattr(self, f"_lesion_{code.lower()}")(label)
            for alpha, apply in layers:
                box = _nonzero_box(alpha)
                if box is not None:
                    ys, xs = box
                    img[ys, xs] = apply(img[ys, xs], alpha[ys, xs])
            m = (np.asarray(hard) > 127) & fov_mask
            if not m.any():  # tiny images: keep the ground truth honest
                m[self._last_center()] = True
            masks[code] = m

        # Acquisition: illumination, vignetting, colour cast, gamma, blur, noise.
        g = rng.uniform(0.0, 0.3)
        gt = rng.uniform(0, 2 * math.pi)
        illum = (
            1.0
            - rng.uniform(0.1, 0.5) * np.minimum(rr, 1.0) ** 2
            + g * (u * math.cos(gt) + v * math.sin(gt)) / 2.0
            + rng.uniform(0.02, 0.08) * self.lowfreq(4)
        )
        img *= np.clip(illum, 0.2, 1.6)[:, :, None]
        gains = np.array([rng.uniform(0.85, 1.15), rng.uniform(0.8, 1.2), rng.uniform(0.7, 1.35)], np.float32)
        img *= gains * rng.uniform(0.6, 1.15)
        # Camera response (gamma) through a 12-bit lookup table: cheaper than a power per pixel.
        lut = np.linspace(0.0, 1.0, 4096, dtype=np.float32) ** rng.uniform(0.8, 1.25) * 255.0
        np.clip(img, 0.0, 1.0, out=img)
        img = lut[(img * 4095.0 + 0.5).astype(np.int32)]
        img *= fov[:, :, None]

        out = Image.fromarray((img + 0.5).astype(np.uint8))
        blur = rng.uniform(0.0, 0.7) * s / 256.0
        if blur > 0.1:
            out = out.filter(ImageFilter.GaussianBlur(blur))
        arr = rng.standard_normal((s, s, 3), dtype=np.float32)
        arr *= rng.uniform(1.0, 5.0)
        arr += np.asarray(out, dtype=np.float32)
        arr += 0.5
        image = np.clip(arr, 0, 255, out=arr).astype(np.uint8)
        return SynthSample(image=image, label=label, masks=masks)

    def _last_center(self) -> tuple[int, int]:
        x, y = self.px(*self.last_center)
        return (min(self.s - 1, int(y)), min(self.s - 1, int(x)))

    # -- lesion painters: each returns (hard mask canvas, [(soft alpha, compositor), ...])

    @staticmethod
    def _darken(mult: np.ndarray):
        def apply(img: np.ndarray, a: np.ndarray) -> np.ndarray:
            return img * (1.0 - a[:, :, None] * (1.0 - mult))

        return apply

    @staticmethod
    def _tint(colour: np.ndarray, opacity: float):
        def apply(img: np.ndarray, a: np.ndarray) -> np.ndarray:
            return img + (colour - img) * (opacity * a)[:, :, None]

        return apply

    def _avoid_disc(self) -> list[tuple[float, float, float]]:
        return [(self.disc[0], self.disc[1], 1.4 * self.disc_r)]

    def _lesion_ma(self, label: int):
        rng = self.rng
        n = int(rng.integers(3, 8)) if label == 1 else int(rng.integers(5, 11)) if label == 2 else int(rng.integers(8, 15))
        img, draw = self.canvas()
        for _ in range(n):
            # Mostly at the posterior pole, around the macula.
            if rng.random() < 0.7:
                x, y = self.mac[0] + rng.normal(0, 0.22), self.mac[1] + rng.normal(0, 0.22)
                if (x - self.fov_c[0]) ** 2 + (y - self.fov_c[1]) ** 2 > (0.8 * self.fov_r) ** 2:
                    x, y = self.random_point(0.0, 0.8, self._avoid_disc())
            else:
                x, y = self.random_point(0.0, 0.8, self._avoid_disc())
            r = rng.uniform(0.015, 0.022)
            self.ellipse(draw, x, y, r, r * rng.uniform(0.85, 1.0), 0.0)
            self.last_center = (x, y)
        mult = np.array([rng.uniform(0.3, 0.45), rng.uniform(0.15, 0.3), rng.uniform(0.25, 0.4)], np.float32)
        return img, [(self.soft(img, 0.004), self._darken(mult))]

    def _lesion_he(self, label: int):
        rng = self.rng
        img, draw = self.canvas()
        if label == 2:
            quads = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
            places = [int(quads[k % len(quads)]) for k in range(int(rng.integers(2, 6)))]
        else:
            places = [q for q in range(4) for _ in range(int(rng.integers(3, 6)))]
        for q in places:
            x, y = self.quadrant_point(q, 0.15, 0.82)
            r = rng.uniform(0.025, 0.045)
            if rng.random() < 0.35:  # flame: elongated along the nerve fibres (radial from the disc)
                ang = math.atan2(y - self.disc[1], x - self.disc[0])
                self.ellipse(draw, x, y, r * 1.7, r * 0.55, ang + rng.normal(0, 0.2))
            else:  # dot-blot: a few overlapping ellipses
                for _ in range(int(rng.integers(1, 4))):
                    self.ellipse(
                        draw, x + rng.normal(0, r * 0.4), y + rng.normal(0, r * 0.4),
                        r * rng.uniform(0.6, 1.0), r * rng.uniform(0.5, 0.9), rng.uniform(0, math.pi),
                    )
            self.last_center = (x, y)
        mult = np.array([rng.uniform(0.35, 0.5), rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.35)], np.float32)
        return img, [(self.soft(img, 0.006), self._darken(mult))]

    def _lesion_ex(self, label: int):
        rng = self.rng
        img, draw = self.canvas()
        clusters = int(rng.integers(1, 3)) if label == 2 else int(rng.integers(2, 4))
        for _ in range(clusters):
            cx, cy = self.random_point(0.1, 0.7, self._avoid_disc())
            if rng.random() < 0.5:  # near the macula, where exudates matter most
                cx = 0.5 * (cx + self.mac[0])
                cy = 0.5 * (cy + self.mac[1])
            spread = rng.uniform(0.05, 0.09)
            ring = rng.random() < 0.4  # circinate ring
            for _ in range(int(rng.integers(5, 12))):
                if ring:
                    t = rng.uniform(0, 2 * math.pi)
                    x, y = cx + spread * math.cos(t), cy + spread * math.sin(t)
                else:
                    x, y = cx + rng.normal(0, spread * 0.6), cy + rng.normal(0, spread * 0.6)
                r = rng.uniform(0.011, 0.022)
                self.ellipse(draw, x, y, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi))
            self.last_center = (x, y)
        colour = np.array([1.0, rng.uniform(0.85, 0.95), rng.uniform(0.3, 0.5)], np.float32)
        return img, [(self.soft(img, 0.003), self._tint(colour, rng.uniform(0.75, 0.9)))]

    def _lesion_se(self, label: int):
        rng = self.rng
        img, draw = self.canvas()
        for _ in range(int(rng.integers(2, 6))):
            x, y = self.random_point(0.15, 0.65, self._avoid_disc())
            r = rng.uniform(0.035, 0.055)
            for _ in range(int(rng.integers(2, 4))):
                self.ellipse(
                    draw, x + rng.normal(0, r * 0.35), y + rng.normal(0, r * 0.35),
                    r * rng.uniform(0.6, 1.0), r * rng.uniform(0.45, 0.8), rng.uniform(0, math.pi),
                )
            self.last_center = (x, y)
        colour = np.array([0.97, rng.uniform(0.9, 0.96), rng.uniform(0.8, 0.9)], np.float32)
        return img, [(self.soft(img, 0.014), self._tint(colour, rng.uniform(0.6, 0.8)))]

    def _lesion_nv(self, label: int):
        rng = self.rng
        segs: list[np.ndarray] = []
        halo, halo_draw = self.canvas()
        for k in range(int(rng.integers(2, 4))):
            if k == 0 and rng.random() < 0.5:  # on the disc (NVD)
                cx = self.disc[0] + rng.normal(0, self.disc_r * 0.4)
                cy = self.disc[1] + rng.normal(0, self.disc_r * 0.4)
            else:  # elsewhere, along a vein (NVE)
                path = self.veins[int(rng.integers(len(self.veins)))]
                x0, y0, _ = path[int(rng.integers(len(path)))]
                if (x0 - self.fov_c[0]) ** 2 + (y0 - self.fov_c[1]) ** 2 > (0.75 * self.fov_r) ** 2:
                    x0, y0 = self.random_point(0.2, 0.7, [])
                cx, cy = x0, y0
            spread = rng.uniform(0.1, 0.14)
            # A "sea fan": many short, tortuous, looping vessels over a fibrous grey-white veil.
            self.ellipse(halo_draw, cx, cy, spread * 0.9, spread * rng.uniform(0.6, 0.9), rng.uniform(0, math.pi))
            for _ in range(int(rng.integers(26, 36))):
                x = cx + rng.normal(0, spread * 0.4)
                y = cy + rng.normal(0, spread * 0.4)
                self.walk(x, y, rng.uniform(0, 2 * math.pi), int(rng.integers(6, 12)), 0.016,
                          rng.choice((-0.6, 0.6)), 0.5, 0.013, 1.0, 0.0, 0, segs)
            self.last_center = (cx, cy)
        img = self.draw_segments(segs, 1.0)
        # New vessels are bright red (saturated, little darkening of R), unlike dark blot haemorrhages.
        veil = np.array([rng.uniform(0.85, 0.95), rng.uniform(0.78, 0.88), rng.uniform(0.7, 0.8)], np.float32)
        mult = np.array([rng.uniform(0.85, 1.0), rng.uniform(0.2, 0.3), rng.uniform(0.25, 0.35)], np.float32)
        return img, [
            (self.soft(halo, 0.03), self._tint(veil, rng.uniform(0.35, 0.5))),
            (self.soft(img, 0.003), self._darken(mult)),
        ]
