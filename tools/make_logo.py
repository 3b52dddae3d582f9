"""Generate the default MedLocker logo (``medlocker/assets/logo.png``).

Run once; the PNG is committed. The mark is a shield with a medical cross and a
keyhole above the word "MedLocker". It is drawn at 4x and downsampled with
LANCZOS so that the alpha edge is soft (anti-aliased), which keeps the
watermark's outline free of hard steps.

Usage: ``python tools/make_logo.py [--out medlocker/assets/logo.png]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SS = 4  # supersampling factor
WIDTH, HEIGHT = 128, 104
TEAL = (0, 122, 140, 255)
WHITE = (255, 255, 255, 255)
INK = (20, 30, 40, 255)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def make_logo() -> Image.Image:
    W, H = WIDTH * SS, HEIGHT * SS
    im = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    cx = W // 2
    # Shield: flat top with rounded shoulders, pointed bottom.
    top, mid, bottom, half = 4 * SS, 44 * SS, 70 * SS, 27 * SS
    shield = [(cx - half, top), (cx + half, top), (cx + half, mid - 14 * SS), (cx, bottom), (cx - half, mid - 14 * SS)]
    d.polygon(shield, fill=INK)
    inner = [(x + (3 * SS if x < cx else -3 * SS if x > cx else 0), y + (3 * SS if y < bottom else -5 * SS)) for x, y in shield]
    d.polygon(inner, fill=TEAL)
    # Medical cross.
    arm, th, cy = 14 * SS, 5 * SS, 26 * SS
    d.rectangle([cx - th, cy - arm, cx + th, cy + arm], fill=WHITE)
    d.rectangle([cx - arm, cy - th, cx + arm, cy + th], fill=WHITE)
    # Keyhole in the centre of the cross.
    d.ellipse([cx - 3 * SS, cy - 4 * SS, cx + 3 * SS, cy + 2 * SS], fill=INK)
    d.polygon([(cx - 2 * SS, cy), (cx + 2 * SS, cy), (cx + 3 * SS, cy + 8 * SS), (cx - 3 * SS, cy + 8 * SS)], fill=INK)
    # Word mark, white with a dark outline: readable on bright and dark fundus.
    font = _font(19 * SS)
    text = "MedLocker"
    box = d.textbbox((0, 0), text, font=font, stroke_width=2 * SS)
    tw, th_ = box[2] - box[0], box[3] - box[1]
    d.text(((W - tw) // 2 - box[0], 76 * SS - box[1] + (26 * SS - th_) // 2), text, font=font,
           fill=WHITE, stroke_width=2 * SS, stroke_fill=INK)
    # Downsample in premultiplied space so the soft edge keeps its colour.
    return im.convert("RGBa").resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS).convert("RGBA")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "medlocker" / "assets" / "logo.png")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_logo().save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
