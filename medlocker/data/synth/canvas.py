"""Pixel grids and drawing primitives shared by the painters.

Geometry is in normalised units: the image spans [-1, 1] on both axes, so a
length of 0.02 is 1 % of the image side at every resolution, and the same
``(seed, index)`` gives the same picture at any size.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Canvas"]

_T = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)  # blob outline vertices
_COS, _SIN = np.cos(_T), np.sin(_T)
_HARMONICS = np.arange(2, 5)[:, None]


class Canvas:
    """The pixel grid of one ``size`` x ``size`` image and drawing helpers on it."""

    def __init__(self, size: int) -> None:
        self.s = size
        self.half = size / 2.0
        c = (np.arange(size, dtype=np.float32) + 0.5) / self.half - 1.0
        self.u = c[None, :]  # x, columns
        self.v = c[:, None]  # y, rows

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Normalised coordinates -> pixel coordinates (PIL convention)."""
        return ((x + 1.0) * self.half, (y + 1.0) * self.half)

    def pixel(self, x: float, y: float) -> tuple[int, int]:
        """The (row, column) index of the pixel holding (x, y), clamped into the image."""
        px, py = self.px(x, y)
        return (min(self.s - 1, max(0, int(py))), min(self.s - 1, max(0, int(px))))

    def window(self, x: float, y: float, r: float) -> tuple[slice, slice]:
        """Row and column slices of the square of half-side ``r`` around (x, y)."""
        h = self.half
        x0, x1 = max(0, math.floor((x - r + 1.0) * h)), min(self.s, math.ceil((x + r + 1.0) * h))
        y0, y1 = max(0, math.floor((y - r + 1.0) * h)), min(self.s, math.ceil((y + r + 1.0) * h))
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """An empty 8-bit drawing layer."""
        img = Image.new("L", (self.s, self.s), 0)
        return img, ImageDraw.Draw(img)

    def polygon(self, draw: ImageDraw.ImageDraw, xs: np.ndarray, ys: np.ndarray, fill: int = 255) -> None:
        """A filled polygon (vertices in normalised units); never vanishes at tiny sizes."""
        h = self.half
        pts = list(zip(((xs + 1.0) * h).tolist(), ((ys + 1.0) * h).tolist()))
        draw.polygon(pts, fill=fill)
        draw.point(self.px(float(xs.mean()), float(ys.mean())), fill=fill)

    def blob(
        self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float,
        a: float, b: float, angle: float, rough: float, fill: int = 255,
    ) -> None:
        """A rotated ellipse with semi-axes ``a``, ``b`` whose outline is roughened
        by a few random low harmonics (relative amplitude ``rough``)."""
        amp = rough * rng.standard_normal((3, 1)) / _HARMONICS
        radius = 1.0 + (amp * np.cos(_HARMONICS * _T + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0)
        ex, ey = a * radius * _COS, b * radius * _SIN
        ca, sa = math.cos(angle), math.sin(angle)
        self.polygon(draw, x + ex * ca - ey * sa, y + ex * sa + ey * ca, fill)

    def polyline(self, draw: ImageDraw.ImageDraw, path: np.ndarray, fill: int = 255, width_scale: float = 1.0) -> None:
        """Rasterise a path ``[n, 3]`` of (x, y, width): runs of equal pixel width are
        drawn as one polyline; sub-pixel widths are drawn 1 px wide and fainter."""
        pts = (path[:, :2] + 1.0) * self.half
        wf = path[1:, 2] * self.half * width_scale
        wpx = np.maximum(1, np.rint(wf)).astype(int)
        fills = (np.rint(np.clip(wf, 0.35, 1.0) * 4.0) / 4.0 * fill).astype(int)  # 4 levels: fewer, longer runs
        key = wpx * 256 + fills
        start = 0
        for k in range(1, len(key) + 1):
            if k == len(key) or key[k] != key[start]:
                w = int(wpx[start])
                seg = [tuple(p) for p in pts[start : k + 1].tolist()]
                draw.line(seg, fill=int(fills[start]), width=w, joint="curve" if w >= 3 else None)
                start = k

    def alpha(self, img: Image.Image, blur: float) -> np.ndarray:
        """Layer -> float alpha in [0, 1], Gaussian-blurred by ``blur`` normalised units.

        Only the drawn part is blurred: most lesion layers are nearly empty.
        """
        out = np.zeros((self.s, self.s), np.float32)
        box = img.getbbox()
        if box is None:
            return out
        radius = blur * self.half
        if radius > 0.4:  # below that a Gaussian hardly changes a pixel
            pad = math.ceil(3.0 * radius) + 2
            box = (max(0, box[0] - pad), max(0, box[1] - pad), min(self.s, box[2] + pad), min(self.s, box[3] + pad))
            img = img.crop(box).filter(ImageFilter.GaussianBlur(radius))
        else:
            img = img.crop(box)
        out[box[1] : box[3], box[0] : box[2]] = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
        return out

    def field(self, rng: np.random.Generator, grid: int, beta: float = 0.0) -> np.ndarray:
        """Smooth zero-mean noise of unit standard deviation, drawn on a ``grid`` x ``grid``
        lattice (so it does not depend on the image size) and resized bicubically.

        ``beta > 0`` shapes the lattice noise to a ``1/f**beta`` power spectrum
        (fractal texture); ``beta = 0`` is plain smooth noise.
        """
        small = rng.standard_normal((grid, grid)).astype(np.float32)
        if beta > 0:
            fy = np.fft.fftfreq(grid)[:, None]
            fx = np.fft.rfftfreq(grid)[None, :]
            f = np.sqrt(fx * fx + fy * fy)
            f[0, 0] = 1.0
            small = np.fft.irfft2(np.fft.rfft2(small) * f ** (-beta / 2.0), s=(grid, grid)).astype(np.float32)
        small -= small.mean()
        small /= small.std() + 1e-8
        return np.asarray(Image.fromarray(small).resize((self.s, self.s), Image.BICUBIC), dtype=np.float32)
