"""The attacker suite (medlocker.report.attacks): each attack on a tiny case, with its real effect asserted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlocker.data import generate_fundus
from medlocker.report.attacks import SUITE, Attacker, attack, worst_case_names
from medlocker.report.attacks.inpaint import dilate, inpaint_mask
from medlocker.report.attacks.invert import estimate_opacity, invert_blend
from medlocker.report.attacks.learned import (
    Remover,
    RemoverConfig,
    _crop_batch,
    paste_logo,
    remove_learned,
    remover_loss,
    train_remover,
)
from medlocker.report.attacks.locate import box_iou, locate_logo, logo_layer, warp_logo
from medlocker.report.attacks.preprocess import circular_crop, clahe, fov_circle, graham
from medlocker.report.attacks.purify import bit_depth, jpeg
from medlocker.report.metrics import psnr
from medlocker.watermark import Placement, default_logo, logo_size, render_exact

LOGO = default_logo()


@pytest.fixture(scope="module")
def fundus() -> np.ndarray:
    return generate_fundus(0, 3, 128).image


def _paste(img: np.ndarray, size: tuple[int, int], angle: float, x: int, y: int, opacity: float) -> tuple:
    tpl = warp_logo(LOGO, size, angle).astype(np.float64)
    th, tw = tpl.shape[:2]
    a = tpl[..., 3:] / 255.0 * opacity
    out = img.astype(np.float64)
    out[y : y + th, x : x + tw] = (1 - a) * out[y : y + th, x : x + tw] + a * tpl[..., :3]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), (x, y, x + tw, y + th)


# ----------------------------------------------------------------------------- location


@pytest.mark.parametrize("angle", [0.0, 30.0, -75.0])
def test_template_matching_finds_a_rotated_scaled_logo(fundus: np.ndarray, angle: float) -> None:
    size = logo_size(LOGO, fundus.shape[:2], scale=0.05)
    pasted, true_box = _paste(fundus, size, angle, 30, 40, opacity=0.6)
    found = locate_logo(pasted, LOGO)
    assert box_iou(found.box, true_box) >= 0.5
    assert abs((found.angle - angle + 180) % 360 - 180) <= 10
    alpha, colour = logo_layer(LOGO, found, pasted.shape)
    assert alpha.shape == pasted.shape[:2] and colour.shape == pasted.shape and 0 < alpha.max() <= 1


def test_box_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


# ----------------------------------------------------------------------------- removal


def test_inpainting_changes_only_the_mask(fundus: np.ndarray) -> None:
    pasted, (x0, y0, x1, y1) = _paste(fundus, (40, 32), 0.0, 40, 40, opacity=1.0)
    mask = np.zeros(fundus.shape[:2], bool)
    mask[y0:y1, x0:x1] = True
    for method in ("telea", "ns"):
        out = inpaint_mask(pasted, mask, method=method)
        assert np.array_equal(out[~mask], pasted[~mask])
        assert (out[mask] != pasted[mask]).any()
        assert psnr(out, fundus, mask) > psnr(pasted, fundus, mask) + 3  # the logo is really gone
    assert dilate(mask, 2).sum() == (y1 - y0 + 4) * (x1 - x0 + 4)
    with pytest.raises(ValueError, match="telea, ns"):
        inpaint_mask(pasted, mask, method="fmm")


def test_inverse_blend_at_the_found_logo_recovers_the_image(fundus: np.ndarray) -> None:
    w, h = logo_size(LOGO, fundus.shape[:2], scale=0.05)
    placement = Placement(x=34, y=30, w=w, h=h, opacity=140)
    published = render_exact(fundus, LOGO, placement)
    found = locate_logo(published, LOGO)
    assert box_iou(found.box, placement.box) >= 0.8
    alpha, colour = logo_layer(LOGO, found, published.shape)
    opacity = estimate_opacity(published, alpha, colour)
    assert abs(opacity - 140) <= 16
    out = invert_blend(published, alpha, colour, opacity)
    box = np.zeros(fundus.shape[:2], bool)
    box[placement.y : placement.y + h, placement.x : placement.x + w] = True
    assert psnr(out, fundus, box) > psnr(published, fundus, box) + 6
    assert np.array_equal(out[alpha == 0], published[alpha == 0])


def test_oracle_inpaints_the_true_box_only(fundus: np.ndarray) -> None:
    pasted, box = _paste(fundus, (30, 24), 0.0, 50, 50, opacity=0.8)
    out = attack("oracle_inpaint", pasted, Attacker(logo=LOGO), true_box=box)
    grown = np.zeros(fundus.shape[:2], bool)
    grown[box[1] - 2 : box[3] + 2, box[0] - 2 : box[2] + 2] = True
    assert np.array_equal(out[~grown], pasted[~grown]) and (out[grown] != pasted[grown]).any()
    assert np.array_equal(attack("oracle_inpaint", pasted, Attacker(logo=LOGO), true_box=None), pasted)
    assert "oracle_inpaint" not in worst_case_names(list(SUITE))


def test_learned_remover_trains_and_runs(fundus: np.ndarray) -> None:
    torch.manual_seed(0)
    model = Remover(width=8)
    rng = np.random.default_rng(0)
    x, y, m = _crop_batch(fundus[None], LOGO, rng, 2, 32)
    assert x.shape == y.shape == (2, 3, 32, 32) and m.shape == (2, 1, 32, 32) and m.sum() > 0
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):  # a fixed batch: the loss must go down
        loss = remover_loss(model, x, y, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    trained, history = train_remover(fundus[None], LOGO, config=RemoverConfig(steps=2, batch_size=2, crop=40, width=8))
    assert len(history) == 2 and not trained.training
    out = remove_learned(trained, fundus[:100, :90])  # not a multiple of 8: padded and cropped back
    assert out.shape == (100, 90, 3) and out.dtype == np.uint8
    pasted, mask, box = paste_logo(fundus, LOGO, np.random.default_rng(1))
    assert mask.any() and (pasted != fundus).any() and np.array_equal(pasted[~mask], fundus[~mask])


# ----------------------------------------------------------------------------- preprocessing and purification


def test_graham_and_clahe(fundus: np.ndarray) -> None:
    cx, cy, r = fov_circle(fundus)
    assert abs(cx - 63.5) < 4 and abs(cy - 63.5) < 4 and 50 < r <= 64
    g = graham(fundus)
    assert g.shape == fundus.shape and g.dtype == np.uint8
    assert (g[0, 0] == 128).all()  # outside 90 % of the radius: grey
    flat = np.full((64, 64, 3), 90, np.uint8)
    assert (graham(flat)[32, 32] == 128).all()  # no local contrast: 4 I - 4 blur(I) + 128 = 128
    c = clahe(fundus)
    assert c.shape == fundus.shape and c.dtype == np.uint8 and (c[0, 0] == 0).all()
    inside = circular_crop(fundus, 0.9)
    assert (inside[int(cy), int(cx)] == fundus[int(cy), int(cx)]).all()
    yy, xx = np.mgrid[:128, :128]
    rim = (xx - cx) ** 2 + (yy - cy) ** 2 > (0.9 * r) ** 2
    assert (inside[rim] == 0).all()


def test_purification_kernels() -> None:
    img = np.array([[[0, 8, 9], [128, 254, 255]]], np.uint8)
    assert bit_depth(img, 4).tolist() == [[[0, 0, 17], [136, 255, 255]]]
    assert np.array_equal(bit_depth(img, 8), img)
    with pytest.raises(ValueError):
        bit_depth(img, 0)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for name in ("jpeg50", "jpeg30", "blur", "bits4"):
        out = attack(name, noisy, Attacker(logo=LOGO))
        assert out.shape == noisy.shape and out.dtype == np.uint8 and not np.array_equal(out, noisy)
    assert np.abs(jpeg(noisy, 30).astype(int) - noisy).mean() > np.abs(jpeg(noisy, 90).astype(int) - noisy).mean()


def test_unknown_attack_lists_the_suite(fundus: np.ndarray) -> None:
    with pytest.raises(ValueError, match="inpaint_telea"):
        attack("photoshop", fundus, Attacker(logo=LOGO))
    with pytest.raises(ValueError, match="remover"):
        attack("learned_remover", fundus, Attacker(logo=LOGO))
    assert np.array_equal(attack("published", fundus, Attacker(logo=LOGO)), fundus)
