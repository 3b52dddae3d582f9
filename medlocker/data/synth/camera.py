"""The fundus camera: it lights and records the retina.

Uneven illumination with vignetting, the dark red rim of the field of view,
the notch some cameras cut into its edge, colour cast and exposure, camera
gamma, defocus, sensor noise and JPEG compression. None of it depends on the
grade.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter

from medlocker.data.synth.anatomy import Eye
from medlocker.data.synth.canvas import Canvas

__all__ = ["field_of_view", "photograph"]


def field_of_view(cv: Canvas, eye: Eye) -> np.ndarray:
    """``r / fov_r`` at every pixel (1 on the FOV edge)."""
    du, dv = cv.u - eye.fov_c[0], cv.v - eye.fov_c[1]
    return np.sqrt(du * du + dv * dv) / eye.fov_r


def photograph(cv: Canvas, rng: np.random.Generator, noise: np.random.Generator, img: np.ndarray, eye: Eye) -> np.ndarray:
    """Reflectance ``[s, s, 3]`` float32 (consumed) -> the recorded uint8 RGB image.

    ``noise`` draws the per-pixel sensor noise, so that every other draw (and so
    the picture) is the same at every size.
    """
    s = cv.s
    rr = field_of_view(cv, eye)
    u, v = cv.u, cv.v

    # Illumination: a tilted, slightly uneven field, vignetting towards the edge and the
    # dark red rim where the light falls off over the last few per cent of the radius.
    tilt, ta = rng.uniform(0.0, 0.25), rng.uniform(0, 2 * math.pi)
    illum = 1.0 - rng.uniform(0.05, 0.2) * np.minimum(rr, 1.0) ** 3
    illum += tilt * (u * math.cos(ta) + v * math.sin(ta)) / 2.0 + rng.uniform(0.02, 0.06) * cv.field(rng, 4)
    rim_w = rng.uniform(0.025, 0.05)
    rim = np.exp(-np.maximum(1.0 - rr, 0.0) / rim_w) * rng.uniform(0.3, 0.55)
    rim_tint = (0.55, 0.85, 0.8)  # the rim is darker and redder
    gains = np.array([rng.uniform(0.94, 1.06), rng.uniform(0.85, 1.15), rng.uniform(0.78, 1.25)], np.float32)
    gains *= rng.uniform(0.9, 1.08)  # colour cast and exposure
    gamma = rng.uniform(0.85, 1.15)

    # The field of view: an anti-aliased circle, sometimes with a notch at its edge.
    edge = 1.2 / cv.half / eye.fov_r
    fov = np.clip((1.0 - rr) / edge + 0.5, 0.0, 1.0)
    if rng.random() < 0.5:
        na = rng.choice((-0.5, 0.0, 0.5, 1.0)) * math.pi + rng.normal(0, 0.05)
        nx, ny = eye.fov_c[0] + eye.fov_r * math.cos(na), eye.fov_c[1] + eye.fov_r * math.sin(na)
        half = rng.uniform(0.02, 0.035)
        ys, xs = cv.window(nx, ny, half)
        fov[ys, xs] = 0.0

    blur = rng.uniform(0.0, 0.8) ** 2 * s / 256.0  # defocus: mostly slight
    quality = int(rng.integers(55, 93)) if rng.random() < 0.7 else 0
    sigma = rng.uniform(0.8, 2.5)
    grain = rng.uniform(0.8, 1.6) * s / 256.0  # fine retinal granularity, finer than the texture lattice

    # Sensor: light, cast and noise per colour plane (2-D arrays are much faster than
    # broadcasting over the channel axis), then the camera response as a table.
    illum *= fov
    lit_rim = illum * rim
    grainy = noise.standard_normal((s, s), dtype=np.float32)
    grainy *= fov * (1.0 / 255.0)
    planes = []
    for c in range(3):
        plane = img[:, :, c] * (illum * gains[c] - lit_rim * (gains[c] * rim_tint[c]))
        plane += grainy * (sigma + grain * (3.0, 1.5, 1.0)[c])
        np.clip(plane, 0.0, 1.0, out=plane)
        plane *= 255.0
        plane += 0.5
        planes.append(Image.fromarray(plane.astype(np.uint8)))
    lut = (np.linspace(0.0, 1.0, 256) ** gamma * 255.0 + 0.5).astype(np.uint8).tolist()
    out = Image.merge("RGB", planes).point(lut * 3)
    if blur > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    if not quality:
        return np.asarray(out).copy()
    buf = io.BytesIO()  # the camera stores JPEG
    out.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        image = np.asarray(im.convert("RGB")).copy()
    # Chroma ringing stays inside; the border is stored black, as camera software masks it.
    image *= (rr <= 1.0 + 1.5 / cv.half / eye.fov_r)[:, :, None]
    return image
