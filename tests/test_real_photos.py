"""Issue 15: placement on real fundus photographs (rotated, resized, JPEG-noisy, off-centre).

Eight copies of ``skimage.data.retina()`` in an ImageFolder layout without masks, so the
Grad-CAM fallback places every logo. Each published logo must lie inside 90 % of its
image's field of view, computed here from the geometry applied to the photo.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from medlocker.crypto import Identity
from medlocker.data import open_source
from medlocker.models import build_classifier
from medlocker.owner import OwnerSecrets
from medlocker.pack import PackConfig, pack
from medlocker.watermark import default_logo, protection_preset

skimage_data = pytest.importorskip("skimage.data")
transform = pytest.importorskip("skimage.transform")

# (rotation degrees, (height, width), jpeg quality or None, (pad top, pad left) before the resize)
COPIES = [
    (0, (97, 131), None, (0, 0)),
    (45, (160, 160), None, (0, 0)),
    (90, (200, 150), None, (0, 0)),
    (135, (256, 256), 60, (0, 0)),
    (180, (131, 97), None, (0, 0)),
    (225, (160, 160), None, (500, 300)),
    (270, (150, 200), None, (0, 0)),
    (315, (127, 127), None, (0, 0)),
]


def _disc(rgb: np.ndarray) -> tuple[float, float, float]:
    """Centre (x, y) and radius of the original photo's disc: red channel above 10 % of its max."""
    m = rgb[..., 0] > 0.1 * rgb[..., 0].max()
    ys, xs = np.nonzero(m)
    return float(xs.mean()), float(ys.mean()), float(np.sqrt(m.sum() / np.pi))


def _copy(rgb: np.ndarray, rot: int, size: tuple[int, int], pad: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """The transformed photo and its FOV ellipse (cx, cy, rx, ry) from the known geometry."""
    H0, W0 = rgb.shape[:2]
    cx, cy, r = _disc(rgb)
    img = transform.rotate(rgb, rot, resize=False, preserve_range=True, order=1)  # about the image centre
    a = np.deg2rad(rot)
    ox, oy = (W0 - 1) / 2, (H0 - 1) / 2
    dx, dy = cx - ox, cy - oy  # skimage rotates counter-clockwise on screen (y down)
    cx, cy = ox + dx * np.cos(a) + dy * np.sin(a), oy - dx * np.sin(a) + dy * np.cos(a)
    pt, pl = pad
    img = np.pad(img, ((pt, 0), (pl, 0), (0, 0)))
    cx, cy = cx + pl, cy + pt
    h, w = size
    sy, sx = h / img.shape[0], w / img.shape[1]
    img = transform.resize(img, (h, w), preserve_range=True, anti_aliasing=True, order=1)
    fov = ((cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5, r * sx, r * sy)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), fov


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("real") / "src"
    rgb = skimage_data.retina()
    fovs = {}
    for i, (rot, size, quality, pad) in enumerate(COPIES):
        img, fov = _copy(rgb, rot, size, pad)
        if quality is not None:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=quality)
            img = np.asarray(Image.open(buf).convert("RGB"))
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"retina{i}.png")
        fovs[f"retina{i}"] = fov
    return root, fovs


def test_every_real_photo_is_packed_with_its_logo_inside_the_field_of_view(photos, tmp_path) -> None:
    root, fovs = photos
    source = open_source(root)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_classifier("smallcnn", source.classes, input_size=64).eval()
    owner = Identity.generate(name="owner")
    paper = protection_preset("paper")
    config = PackConfig(protection=replace(paper, placement=replace(paper.placement, optimizer="blackbox", budget=4)),
                        shard_size=8, batch_size=8)
    summary = pack(source, str(tmp_path / "ds"), owner=owner, secrets=tmp_path / "secrets", surrogates=[model],
                   logo=default_logo(), config=config)
    params = OwnerSecrets.load(tmp_path / "secrets", owner).params()
    placed = {rec.key: rec.placement for rec in params.values() if rec.placement is not None}
    assert summary.to_dict()["protected"] == len(COPIES) and len(placed) == len(COPIES), summary.to_dict()
    for rec in params.values():
        key = next(k for k in fovs if rec.key.endswith(k))
        cx, cy, rx, ry = fovs[key]
        p = rec.placement
        ys, xs = np.mgrid[p["y"]:p["y"] + p["h"], p["x"]:p["x"] + p["w"]]
        # every logo pixel, corners included (pixel centres +- 0.5)
        worst = max(float(np.max(np.hypot((xs + ox - cx) / rx, (ys + oy - cy) / ry)))
                    for ox in (-0.5, 0.5) for oy in (-0.5, 0.5))
        print(f"{key}: logo {p['w']}x{p['h']} at ({p['x']}, {p['y']}), max radius {worst:.3f} of the FOV")
        assert worst <= 0.9, (key, p, worst)
