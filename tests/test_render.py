"""Rendering: the exact integer rule, its batched twins, and exact restoration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlocker.watermark.logo import default_logo, load_logo, logo_size, resize_logo
from medlocker.watermark.params import Placement
from medlocker.watermark.render import (
    crop_patch,
    logo_tensor,
    render_batch,
    render_exact,
    render_soft,
    restore_exact,
)
from medlocker.errors import BadInputError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_logo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    logo = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    logo[0, 0, 3] = 0  # fully transparent and fully opaque pixels are both covered
    logo[-1, -1, 3] = 255
    return logo


def float_reference(image: np.ndarray, logo: np.ndarray, p: Placement) -> np.ndarray:
    """The blending formula in plain float64, written independently of render.py."""
    out = image.astype(np.float64)
    a = logo[..., 3:4].astype(np.float64) / 255.0 * (p.opacity / 255.0)
    region = out[p.y:p.y + p.h, p.x:p.x + p.w]
    out[p.y:p.y + p.h, p.x:p.x + p.w] = (1.0 - a) * region + a * logo[..., :3].astype(np.float64)
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def test_placement_roundtrip_and_validation() -> None:
    p = Placement(3, 4, 10, 7, 200)
    assert p.box == (3, 4, 13, 11)
    assert Placement.from_dict(p.to_dict()) == p
    assert all(type(v) is int for v in p.to_dict().values())
    with pytest.raises(ValueError):
        Placement(0, 0, 5, 5, 0)
    with pytest.raises(TypeError):
        Placement(0.5, 0, 5, 5, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Placement.from_dict({"x": 1, "y": 2, "w": 3, "h": 4})


@pytest.mark.parametrize("seed", range(5))
def test_render_exact_matches_float_reference_within_one_lsb(seed: int) -> None:
    rng = np.random.default_rng(seed)
    H, W = int(rng.integers(9, 40)), int(rng.integers(9, 40))
    h, w = int(rng.integers(1, H)), int(rng.integers(1, W))
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    logo = random_logo(rng, h, w)
    p = Placement(int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1)), w, h, int(rng.integers(1, 256)))
    out = render_exact(image, logo, p)
    ref = float_reference(image, logo, p)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.abs(out.astype(np.float64) - ref).max() <= 1.0
    # Round-half-up of the exact rational: within half an LSB except at exact .5 ties.
    assert np.abs(out.astype(np.float64) - ref).max() <= 0.5 + 1e-9


def test_bytes_outside_the_box_are_unchanged(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (31, 27, 3), dtype=np.uint8)
    logo = random_logo(rng, 8, 6)
    p = Placement(21, 0, 6, 8, 255)  # touches the right and top borders
    out = render_exact(image, logo, p)
    outside = np.ones(image.shape[:2], dtype=bool)
    outside[p.y:p.y + p.h, p.x:p.x + p.w] = False
    assert np.array_equal(out[outside], image[outside])
    assert not np.array_equal(out[~outside], image[~outside])


def test_opacity_255_and_opaque_logo_gives_logo_colours(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    logo = random_logo(rng, 4, 5)
    logo[..., 3] = 255
    out = render_exact(image, logo, Placement(2, 3, 5, 4, 255))
    assert np.array_equal(out[3:7, 2:7], logo[..., :3])


@pytest.mark.parametrize("shape", [(17, 23), (1, 1), (5, 64)])
def test_restore_is_bit_exact_at_borders(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    H, W = 33, 29
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    h, w = shape
    w = min(w, W)
    logo = random_logo(rng, h, w)
    for x, y in [(0, 0), (W - w, H - h), (0, H - h), (W - w, 0), (min(W // 3, W - w), min(H // 4, H - h))]:
        p = Placement(x, y, w, h, 177)
        marked = render_exact(image, logo, p)
        assert np.array_equal(restore_exact(marked, crop_patch(image, p), p), image)


def test_render_exact_resizes_a_full_size_logo_like_resize_logo(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    logo = default_logo()
    w, h = logo_size(logo, (64, 64), scale=0.04)
    p = Placement(5, 6, w, h, 200)
    assert np.array_equal(render_exact(image, logo, p), render_exact(image, resize_logo(logo, w, h), p))


def test_render_batch_quantized_equals_render_exact(rng: np.random.Generator) -> None:
    B, K, H, W, h, w = 3, 4, 21, 26, 7, 9
    images = rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    logo = random_logo(rng, h, w)
    xy = torch.stack([torch.from_numpy(rng.integers(0, W - w + 1, (B, K))),
                      torch.from_numpy(rng.integers(0, H - h + 1, (B, K)))], dim=-1)
    op = torch.from_numpy(rng.integers(1, 256, (B, K)))
    out = render_batch(to_tensor(images), logo_tensor(logo), xy, op, quantize=True)
    soft_out = render_batch(to_tensor(images), logo_tensor(logo), xy, op, quantize=False)
    assert out.shape == (B, K, 3, H, W)
    for b in range(B):
        for k in range(K):
            p = Placement(int(xy[b, k, 0]), int(xy[b, k, 1]), w, h, int(op[b, k]))
            ref = render_exact(images[b], logo, p)
            got = torch.round(out[b, k] * 255).to(torch.uint8).permute(1, 2, 0).numpy()
            assert np.array_equal(got, ref)
            # unquantized: the same up to the final rounding
            assert (soft_out[b, k] * 255 - torch.from_numpy(ref).permute(2, 0, 1).float()).abs().max() <= 0.5 + 1e-3


def test_render_soft_matches_render_batch_at_integer_positions(rng: np.random.Generator) -> None:
    B, K, H, W, h, w = 2, 3, 20, 24, 6, 8
    images = to_tensor(rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8))
    logo = logo_tensor(random_logo(rng, h, w))
    xy = torch.tensor([[[0, 0], [W - w, H - h], [5, 7]], [[3, 1], [16, 14], [0, 14]]])
    op = torch.tensor([[255.0, 120.0, 30.0], [1.0, 200.0, 96.0]])
    hard = render_batch(images, logo, xy, op)
    soft = render_soft(images, logo, xy.float(), op)
    assert torch.allclose(hard, soft, atol=1e-5)


def test_render_soft_is_differentiable_in_position_and_opacity(rng: np.random.Generator) -> None:
    images = to_tensor(rng.integers(0, 256, (1, 20, 20, 3), dtype=np.uint8))
    logo = logo_tensor(random_logo(rng, 5, 5))
    xy = torch.tensor([[[6.3, 4.6]]], requires_grad=True)
    op = torch.tensor([[150.0]], requires_grad=True)
    target = torch.rand(1, 1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    loss = ((render_soft(images, logo, xy, op) - target) ** 2).sum()
    loss.backward()
    assert xy.grad is not None and op.grad is not None
    assert torch.all(xy.grad.abs() > 0) and op.grad.abs().item() > 0
    # finite-difference check on x
    eps = 1e-2
    with torch.no_grad():
        up = ((render_soft(images, logo, xy + torch.tensor([eps, 0.0]), op) - target) ** 2).sum()
        dn = ((render_soft(images, logo, xy - torch.tensor([eps, 0.0]), op) - target) ** 2).sum()
    assert torch.isclose((up - dn) / (2 * eps), xy.grad[0, 0, 0], rtol=0.05, atol=1e-3)


def test_logo_helpers(tmp_path, rng: np.random.Generator) -> None:
    logo = default_logo()
    assert logo.dtype == np.uint8 and logo.ndim == 3 and logo.shape[2] == 4
    assert 96 <= logo.shape[1] <= 160
    alpha = logo[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255 and ((alpha > 0) & (alpha < 255)).any()  # soft edge
    w, h = logo_size(logo, (224, 224), scale=0.04)
    assert w * h <= 0.04 * 224 * 224 and abs(w / h - logo.shape[1] / logo.shape[0]) < 0.05
    small = resize_logo(logo, w, h)
    assert small.shape == (h, w, 4)
    assert np.array_equal(small, resize_logo(logo, w, h))  # deterministic
    assert logo_size(small, (224, 224), scale=0.04) == (w, h)  # a sized logo keeps its size
    with pytest.raises(ValueError):
        logo_size(logo, (224, 224), scale=0.07)
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    rgb = load_logo(tmp_path / "rgb.png")
    assert rgb.shape == (9, 11, 4) and (rgb[..., 3] == 255).all()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadInputError, match="bad.png"):
        load_logo(tmp_path / "bad.png")
