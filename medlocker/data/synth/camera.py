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
    img *= illum[:, :, None]
    rim_w = rng.uniform(0.025, 0.05)
    rim = np.exp(-np.maximum(1.0 - rr, 0.0) / rim_w) * rng.uniform(0.3, 0.55)
    img *= 1.0 - rim[:, :, None] * np.array([0.55, 0.85, 0.8], np.float32)

    # Colour cast, exposure and camera response (a 12-bit lookup table: cheaper than a power).
    gains = np.array([rng.uniform(0.94, 1.06), rng.uniform(0.85, 1.15), rng.uniform(0.78, 1.25)], np.float32)
    img *= gains * rng.uniform(0.9, 1.08)
    lut = np.linspace(0.0, 1.0, 4096, dtype=np.float32) ** rng.uniform(0.85, 1.15) * 255.0
    np.clip(img, 0.0, 1.0, out=img)
    img = lut[(img * 4095.0 + 0.5).astype(np.int32)]

    # The field of view: an anti-aliased circle, sometimes with a notch at its edge.
    edge = 1.2 / cv.half / eye.fov_r
    fov = np.clip((1.0 - rr) / edge + 0.5, 0.0, 1.0)
    if rng.random() < 0.5:
        na = rng.choice((-0.5, 0.0, 0.5, 1.0)) * math.pi + rng.normal(0, 0.05)
        nx, ny = eye.fov_c[0] + eye.fov_r * math.cos(na), eye.fov_c[1] + eye.fov_r * math.sin(na)
        half = rng.uniform(0.02, 0.035)
        ys, xs = cv.window(nx, ny, half)
        fov[ys, xs] = 0.0
    img *= fov[:, :, None]

    out = Image.fromarray((img + 0.5).astype(np.uint8))
    blur = rng.uniform(0.0, 0.8) ** 2 * s / 256.0  # defocus: mostly slight
    if blur > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    quality = int(rng.integers(55, 93)) if rng.random() < 0.7 else 0
    sigma = rng.uniform(0.8, 2.5)
    grain = rng.uniform(0.8, 1.6) * s / 256.0  # fine retinal granularity, finer than the texture lattice
    arr = noise.standard_normal((s, s, 3), dtype=np.float32)
    arr *= sigma
    arr += (grain * noise.standard_normal((s, s), dtype=np.float32))[:, :, None] * np.array([3.0, 1.5, 1.0], np.float32)
    arr *= (0.25 + 0.75 * fov)[:, :, None]
    arr += np.asarray(out, dtype=np.float32)
    arr += 0.5
    image = np.clip(arr, 0, 255, out=arr).astype(np.uint8)
    if quality:  # the camera stores JPEG
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            decoded = np.asarray(im.convert("RGB"))
        # Chroma ringing stays inside; the border is stored black, as camera software masks it.
        outside = rr > 1.0 + 1.5 / cv.half / eye.fov_r
        image = np.where(outside[:, :, None], image, decoded)
    return image
