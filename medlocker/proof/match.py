"""Statistics that decide whether a registered suspect is a published sample.

All are correlations (-1..1) computed after :func:`~medlocker.proof.register.register`
has warped the suspect into the published frame, over the pixels the suspect covers:

* :func:`image_similarity` -- correlation of fine *detail* (grey minus its Gaussian
  blur) over the whole overlap, at a comparison resolution of at most
  :data:`COMPARE` px. Detail (vessels, texture, noise) is unique to an image; the
  fundus layout every image shares is removed by the blur and the field-of-view
  rim, where every fundus has the same strong edge, is left out.
* :func:`watermark_score` (owner; needs the original) -- inside the logo box, the
  partial correlation of the suspect with the logo residual ``published - original``
  given the original (per channel, both regressed on ``[1, original]``). A leaked
  *original* or an unrelated image scores near 0, a copy of the published image near 1.
* :func:`box_similarity` (anyone) -- inside the logo box, the correlation of the
  suspect's detail with the published image's, where the logo's edges are.

Where the suspect is smaller than the frame it is compared in, the references are
sent through the same down-and-up resize first, so the blur of the leak's resize is
not counted against the match.

The thresholds are calibrated in ``benchmarks/proof.py`` (results in
``benchmarks/results/cpu-2026-12-02/proof.json``): the lowest unrelated-image
maxima and the lowest leak minima are recorded there with the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .register import Registration, to_gray

__all__ = ["COMPARE", "THRESHOLDS", "Scores", "Thresholds", "score"]

COMPARE = 256
"""Longest side (px) of the frame in which whole-image detail is compared."""
_SIGMA = 1.5  # detail = grey - GaussianBlur(grey, sigma), in comparison-frame px
_MIN_BOX_COVER = 0.3  # below this fraction of the logo box inside the suspect (a crop cut it), the box is not scored


@dataclass(frozen=True)
class Thresholds:
    """A match needs every statistic at or above its threshold (see the module doc)."""

    image: float
    watermark: float
    box: float


# From benchmarks/results/cpu-2026-12-02/proof.json (synthetic, 256 px): over 240 leaks the lowest
# image / watermark / box values are 0.75 / 0.79 / 0.66; over 100 unrelated images the highest image
# and box values are 0.35 / 0.47, over leaked originals the highest watermark score is 0.05.
THRESHOLDS = Thresholds(image=0.55, watermark=0.45, box=0.55)


@dataclass(frozen=True)
class Scores:
    """The statistics of one suspect against one sample; ``None`` where not computable."""

    image: float
    box: float | None
    watermark: float | None = None
    box_cover: float = 0.0


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den > 1e-9 else 0.0


def _resize(img: np.ndarray, size: tuple[int, int], *, down: bool) -> np.ndarray:
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)


def _through(img: np.ndarray, factor: float) -> np.ndarray:
    """``img`` resized by ``factor`` < 1 and back: the detail a leak at that scale kept."""
    if factor >= 0.95:
        return img
    h, w = img.shape[:2]
    small = _resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), down=True)
    return _resize(small, (w, h), down=False)


def _scaling(f: float) -> np.ndarray:
    return np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1]], np.float64)


@dataclass(frozen=True)
class _Frame:
    suspect: np.ndarray  # float32, the suspect warped into the frame
    refs: tuple[np.ndarray, ...]  # float32 references, degraded to the suspect's resolution
    valid: np.ndarray  # bool, pixels the suspect covers
    res: float  # suspect px per frame px

    @property
    def sigma(self) -> float:
        """Detail scale: finer than the suspect's own pixels there is only interpolation, common to both."""
        return _SIGMA / min(1.0, self.res)


def _frame(suspect: np.ndarray, refs: tuple[np.ndarray, ...], reg: Registration, factor: float) -> _Frame:
    """The suspect and ``refs`` (published-frame images) in the published frame resized by ``factor``."""
    h, w = refs[0].shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = [r.astype(np.float32) if factor == 1 else _resize(r.astype(np.float32), size, down=True) for r in refs]
    res = reg.scale / factor  # suspect px per frame px
    src = suspect.astype(np.float32)
    g = 1.0
    if res > 1.5:  # shrink a much larger suspect first, so that warping does not alias
        g = 1.0 / res
        src = _resize(src, (max(1, round(suspect.shape[1] * g)), max(1, round(suspect.shape[0] * g))), down=True)
    m = (_scaling(g) @ np.vstack([reg.matrix, [0, 0, 1]]) @ np.linalg.inv(_scaling(factor)))[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(src, m, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    ones = np.ones(src.shape[:2], np.uint8)
    valid = cv2.warpAffine(ones, m, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # off the interpolated rim
    return _Frame(warped, tuple(_through(r, res) for r in out), valid, res)


def _detail(gray: np.ndarray, sigma: float) -> np.ndarray:
    return gray - cv2.GaussianBlur(gray, (0, 0), sigma)


def _rim(gray: np.ndarray) -> np.ndarray:
    """Pixels near the edge of the field of view (the dark background around a fundus)."""
    fov = (cv2.GaussianBlur(gray, (0, 0), 2.0) > 12).astype(np.uint8)
    k = np.ones((7, 7), np.uint8)
    return (cv2.dilate(fov, k) > 0) & ~(cv2.erode(fov, k) > 0)


def image_similarity(suspect: np.ndarray, published: np.ndarray, reg: Registration) -> float:
    """Correlation of detail over the overlap, at most :data:`COMPARE` px, off the FOV rim."""
    factor = min(1.0, COMPARE / max(published.shape[:2]))
    f = _frame(to_gray(suspect), (to_gray(published),), reg, factor)
    keep = f.valid & ~_rim(f.refs[0]) & ~_rim(f.suspect)
    if keep.sum() < 64:
        return 0.0
    return _corr(_detail(f.suspect, f.sigma)[keep], _detail(f.refs[0], f.sigma)[keep])


def watermark_score(box_suspect: np.ndarray, box_published: np.ndarray, box_original: np.ndarray) -> float:
    """Partial correlation of the suspect with ``published - original`` given ``original`` (``[N, 3]``)."""
    rs, rd = [], []
    for c in range(3):
        o = box_original[:, c].astype(np.float64)
        basis = np.stack([np.ones_like(o), o], axis=1)
        for target, out in ((box_suspect[:, c].astype(np.float64), rs), (box_published[:, c] - o, rd)):
            coef = np.linalg.lstsq(basis, target, rcond=None)[0]
            out.append(target - basis @ coef)
    return _corr(np.concatenate(rs), np.concatenate(rd))


def score(
    suspect: np.ndarray,
    published: np.ndarray,
    reg: Registration,
    box: tuple[int, int, int, int],
    original: np.ndarray | None = None,
) -> Scores:
    """All statistics of a registered suspect against one sample (uint8 RGB arrays).

    Args:
        box: the logo box ``(x0, y0, x1, y1)`` in the published frame.
        original: the sample's original pixels (owner only), for :func:`watermark_score`.
    """
    image = image_similarity(suspect, published, reg)
    refs = (published,) if original is None else (published, original)
    f = _frame(suspect, refs, reg, 1.0)
    x0, y0, x1, y1 = box
    inside = f.valid[y0:y1, x0:x1]
    cover = float(inside.mean()) if inside.size else 0.0
    if cover < _MIN_BOX_COVER or inside.sum() < 16:
        return Scores(image=image, box=None, watermark=None, box_cover=cover)
    s = f.suspect[y0:y1, x0:x1][inside]
    p = f.refs[0][y0:y1, x0:x1][inside]
    # Box detail: a margin around the box so the blur sees the logo's edges from both sides.
    mx0, my0 = max(0, x0 - 3), max(0, y0 - 3)
    gs, gp = to_gray(_u8(f.suspect)), to_gray(_u8(f.refs[0]))
    sl = (slice(my0, y1 + 3), slice(mx0, x1 + 3))
    keep = f.valid[sl]
    box_sim = _corr(_detail(gs, f.sigma)[sl][keep], _detail(gp, f.sigma)[sl][keep])
    wm = None if original is None else watermark_score(s, p, f.refs[1][y0:y1, x0:x1][inside])
    return Scores(image=image, box=box_sim, watermark=wm, box_cover=cover)


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
