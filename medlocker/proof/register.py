"""Register a suspect image against a published image (a similarity transform).

A re-poster crops (up to about 10 % per side), rotates (a few degrees), rescales
and re-encodes. Before anything is compared, the suspect is brought back into the
published image's frame:

1. **Coarse grid** (:func:`coarse_match`): the suspect is resampled, for each
   rotation and crop fraction on a small grid, into a template at a working
   resolution of :data:`WORK` px; its central part is located in the published
   image by normalised cross-correlation (``cv2.matchTemplate``, ``TM_CCOEFF_NORMED``)
   of *detail* images (grey minus its Gaussian blur), which carry the vessels and
   texture unique to an image rather than the fundus layout every image shares.
   The best peak gives a similarity transform and a cheap score that ranks
   candidate published images.
2. **Refinement** (:func:`register`): OpenCV's ECC maximisation
   (``cv2.findTransformECC``, Evangelidis & Psarakis, PAMI 2008) with an affine
   motion model, started from the coarse transform, coarse to fine.

Transforms are 2x3 float64 matrices mapping *published* pixel coordinates
``(x, y, 1)`` to *suspect* pixel coordinates (OpenCV's ``WARP_INVERSE_MAP``
convention), so ``cv2.warpAffine(suspect, M, (W, H), flags=WARP_INVERSE_MAP)``
is the suspect in the published frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["WORK", "Registration", "SuspectTemplates", "coarse_match", "plausible", "register", "to_gray"]

WORK = 96
"""Working resolution (px, longest side) of the coarse grid."""
_ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)  # degrees; ECC absorbs the 1.5 deg between grid points
_MAX_ANGLE = 8.0  # a refined transform outside the edit model (rotation, shear, aspect) is not kept
_MAX_ANISOTROPY = 1.04
_COVER = (0.8, 0.87, 0.94, 1.0)  # fraction of the published side the suspect covers (crop 0..10 % per side)
_CENTRE = 0.7  # the template is this central fraction of the suspect (off rotated black corners)
_ECC_LEVELS = (256, 768)  # ECC runs at these longest sides (capped by the published size)


def to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` (or grey ``[H, W]``) -> float32 grey in 0..255."""
    if img.ndim == 2:
        return img.astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(img, dtype=np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _detail(gray: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return gray - cv2.GaussianBlur(gray, (0, 0), sigma)


def _resize(gray: np.ndarray, factor: float) -> np.ndarray:
    h, w = gray.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def _scaling(f: float) -> np.ndarray:
    """3x3 map of pixel centres from a frame to the same frame resized by ``f``."""
    return np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1]], np.float64)


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Registration:
    """A similarity-like transform from the published frame to the suspect.

    Attributes:
        matrix: 2x3, published ``(x, y, 1)`` -> suspect ``(x', y')``.
        coarse: the coarse grid's normalised cross-correlation of detail (-1..1).
        ecc: the ECC correlation coefficient after refinement (0 if ECC did not converge).
    """

    matrix: np.ndarray
    coarse: float
    ecc: float

    @property
    def scale(self) -> float:
        """Suspect pixels per published pixel."""
        return math.sqrt(abs(float(np.linalg.det(self.matrix[:, :2]))))

    @property
    def angle(self) -> float:
        """Rotation of the suspect relative to the published image, degrees counter-clockwise."""
        return math.degrees(math.atan2(-self.matrix[1, 0], self.matrix[0, 0]))


class SuspectTemplates:
    """The suspect's coarse-grid templates, built once and matched against every candidate.

    Args:
        suspect: uint8 RGB suspect image.
        published_hw: ``(H, W)`` of the published images it is matched against.
    """

    def __init__(self, suspect: np.ndarray, published_hw: tuple[int, int]) -> None:
        self.gray = to_gray(suspect)
        self.published_hw = (int(published_hw[0]), int(published_hw[1]))
        h, w = self.gray.shape
        big_h, big_w = self.published_hw
        self.r = WORK / max(big_h, big_w)  # published px -> working px
        area_scale = math.sqrt(h * w / (big_h * big_w))
        self.templates: list[tuple[np.ndarray, np.ndarray]] = []  # (detail template, 3x3 template -> suspect)
        cs = np.array([(w - 1) / 2, (h - 1) / 2])
        for cover in _COVER:
            s = area_scale / cover  # suspect px per published px, for this crop guess
            k = s / self.r  # suspect px per working px
            tw = max(8, round(w / k * _CENTRE))
            th = max(8, round(h / k * _CENTRE))
            if tw >= round(big_w * self.r) or th >= round(big_h * self.r):
                continue
            ct = np.array([(tw - 1) / 2, (th - 1) / 2])
            for angle in _ANGLES:
                a = math.radians(angle)
                rot = k * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
                m = np.hstack([rot, (cs - rot @ ct)[:, None]])  # template px -> suspect px
                sub = self.gray if k < 1.5 else _resize(self.gray, 1 / k)  # anti-alias before sampling
                m_sub = m if sub is self.gray else _scaling(sub.shape[1] / w)[:2] @ _h(m)
                t = cv2.warpAffine(sub, m_sub, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT)
                self.templates.append((_detail(t), _h(m)))


def coarse_match(templates: SuspectTemplates, published: np.ndarray) -> tuple[float, np.ndarray]:
    """Best coarse-grid match of the suspect in ``published`` (uint8 RGB or grey).

    Returns:
        ``(ncc, matrix)``: the peak normalised cross-correlation of detail (-1..1) and
        the 2x3 published -> suspect transform it implies.
    """
    ref = _detail(_resize(to_gray(published), templates.r))
    best = (-2.0, None)
    for tmpl, t2s in templates.templates:
        if tmpl.shape[0] > ref.shape[0] or tmpl.shape[1] > ref.shape[1]:
            continue
        res = cv2.matchTemplate(ref, tmpl, cv2.TM_CCOEFF_NORMED)
        _, peak, _, (ox, oy) = cv2.minMaxLoc(res)
        if peak > best[0]:
            work_to_tmpl = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], np.float64)
            pub_to_work = _scaling(ref.shape[1] / published.shape[1])
            best = (float(peak), (t2s @ work_to_tmpl @ pub_to_work)[:2])
    if best[1] is None:  # the suspect is larger than any grid guess allows
        s = templates.gray.shape[1] / published.shape[1]
        return -1.0, np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5]], np.float64)
    return best  # type: ignore[return-value]


def plausible(matrix: np.ndarray) -> bool:
    """Whether a published -> suspect transform is a re-poster's edit: a near-similarity, small rotation."""
    a = matrix[:, :2]
    sv = np.linalg.svd(a, compute_uv=False)
    if not np.all(np.isfinite(sv)) or sv[1] <= 1e-6 or np.linalg.det(a) <= 0:
        return False
    angle = math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
    return sv[0] / sv[1] <= _MAX_ANISOTROPY and abs(angle) <= _MAX_ANGLE and 0.2 <= math.sqrt(sv[0] * sv[1]) <= 5


def register(templates: SuspectTemplates, published: np.ndarray) -> Registration:
    """Register the suspect against ``published``: coarse grid, then ECC coarse to fine."""
    coarse, m = coarse_match(templates, published)
    pub = to_gray(published)
    big = max(pub.shape)
    ecc = 0.0
    for level in _ECC_LEVELS:
        f = min(1.0, level / big)  # published px -> level px
        ref = _resize(pub, f) if f < 1 else pub
        s = math.sqrt(abs(np.linalg.det(m[:, :2]))) / f  # suspect px per level px
        g = 1.0 / s if s > 1.5 else 1.0  # shrink a much larger suspect to the level's scale first
        sus = _resize(templates.gray, g) if g < 1 else templates.gray
        # level px -> published px -> suspect px -> shrunk suspect px
        lvl = (_scaling(g) @ _h(m) @ np.linalg.inv(_scaling(f)))[:2].astype(np.float32)
        try:
            e, lvl = cv2.findTransformECC(ref, sus, lvl, cv2.MOTION_AFFINE,
                                          (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5), None, 5)
        except cv2.error:  # did not converge: keep the previous level's transform
            break
        refined = (np.linalg.inv(_scaling(g)) @ _h(lvl.astype(np.float64)) @ _scaling(f))[:2]
        if not plausible(refined):  # ECC wandered off a re-poster's edit (it does on unrelated images)
            break
        m, ecc = refined, float(e)
        if f == 1.0:
            break
    return Registration(matrix=m, coarse=coarse, ecc=float(ecc))
