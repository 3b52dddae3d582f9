"""protect() end to end: stored bytes are what is checked, batch-invariance, learned logos, textures."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from test_optim import (  # shared toy world
    Counting,
    clean_margins,
    toy_images,
    toy_logo,
    toy_model,
)

from medlocker.watermark import (
    PlacementConfig,
    ProtectionConfig,
    TextureConfig,
    UniversalConfig,
    learn_logo,
    logo_size,
    protect,
    render_exact,
    resize_logo,
)
from medlocker.watermark.feasible import sample_feasible
from medlocker.watermark.objective import Objective, margins
from medlocker.watermark.render import logo_tensor, render_candidates


def P(texture: TextureConfig | None = None, **placement) -> ProtectionConfig:
    """A protection with these placement settings (and optionally a texture)."""
    return ProtectionConfig(placement=PlacementConfig(**placement), texture=texture or TextureConfig())


def png_roundtrip(image: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def recheck(models, image: np.ndarray, label: int) -> float:
    x = torch.from_numpy(png_roundtrip(image)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return max(float(margins(m(x), torch.tensor([label]))[0]) for m in models)


@pytest.mark.parametrize("name", ["gradient", "blackbox"])
def test_success_flag_equals_an_independent_recheck_of_the_stored_bytes(name: str) -> None:
    models = [toy_model(0), toy_model(1)]
    images, labels = toy_images(8, seed=11)
    boxes = [[(20, 20, 28, 28)], [], [(0, 0, 48, 10)], [], [(5, 30, 12, 40), (30, 5, 40, 12)], [], [], [(10, 10, 38, 38)]]
    config = P(optimizer=name, budget=80, logo_scale=0.0625, eot=("blur",), opacity=(64, 170), lesion_margin=2)
    logo = toy_logo()
    res = protect(images, labels, boxes, models, logo=logo, config=config, device="cpu")
    w, h = logo_size(logo, (48, 48), scale=0.0625)
    assert 0 < sum(r.success for r in res)
    for img, y, r, bx in zip(images, labels, res, boxes):
        if r.placement is None:
            assert r.status == "no_feasible_position"
            continue
        p = r.placement
        assert (p.w, p.h) == (w, h) and 64 <= p.opacity <= 170
        stored = render_exact(img, logo, p)
        m = recheck(models, stored, y)
        assert r.success == (m < 0) and abs(m - r.margin) < 1e-4
        assert r.status == ("fooled" if r.success else "not_fooled")
        changed = (stored != img).any(2)
        for x0, y0, x1, y1 in bx:  # zero lesion pixels changed
            assert not changed[y0:y1, x0:x1].any()
    assert res[7].status == "no_feasible_position" or res[7].placement is not None


@pytest.mark.parametrize("name", ["blackbox", "bhe", "gradient"])
def test_placement_of_an_image_does_not_depend_on_its_batch(name: str) -> None:
    model = toy_model()
    images, labels = toy_images(6, seed=12)
    config = replace(P(optimizer=name, budget=40, logo_scale=0.0625, opacity=(64, 170)), seed=3)
    run = lambda idx: protect(images[idx], [labels[i] for i in idx], [[] for _ in idx], [model],
                              logo=toy_logo(), config=config, device="cpu")
    together = run([0, 1, 2, 3, 4, 5])
    alone = run([4])
    shuffled = run([5, 4, 3])
    assert alone[0].placement == together[4].placement == shuffled[1].placement
    assert alone[0].queries == together[4].queries
    # per-image seeds given by the caller work the same way
    a = protect(images[:3], labels[:3], [[]] * 3, [model], logo=toy_logo(), config=config, device="cpu", seeds=[7, 8, 9])
    b = protect(images[2:3], labels[2:3], [[]], [model], logo=toy_logo(), config=config, device="cpu", seeds=[9])
    assert a[2].placement == b[0].placement


def test_list_input_and_validation() -> None:
    model = toy_model()
    images, labels = toy_images(2, seed=13)
    config = P(optimizer="blackbox", budget=10, logo_scale=0.0625)
    res = protect(list(images), labels, [[], []], [model], logo=toy_logo(), config=config, device="cpu")
    assert len(res) == 2 and all(r.queries <= 10 for r in res)
    assert protect(np.zeros((0, 8, 8, 3), np.uint8), [], [], [model], logo=toy_logo(), config=config) == []
    with pytest.raises(ValueError, match="same-size"):
        protect([images[0], images[1][:40]], labels, [[], []], [model], logo=toy_logo(), config=config)
    with pytest.raises(ValueError, match="labels"):
        protect(images, [0], [[], []], [model], logo=toy_logo(), config=config)
    with pytest.raises(ValueError, match="final check"):
        protect(images, labels, [[], []], [model, model], logo=toy_logo(), config=P(budget=1))
    with pytest.raises(ValueError, match="jpeg75"):
        PlacementConfig(eot=("jpeg",))
    with pytest.raises(ValueError):
        PlacementConfig(logo_scale=0.1)


def test_budget_too_small_for_a_search_still_places_every_logo() -> None:
    model = Counting(toy_model())
    images, labels = toy_images(3, seed=14)
    res = protect(images, labels, [[]] * 3, [model], logo=toy_logo(), device="cpu",
                  config=P(optimizer="gradient", budget=1, logo_scale=0.0625))
    assert all(r.placement is not None and r.queries == 1 for r in res) and model.rows == 3


def test_jpeg_eot_view_runs_and_is_counted() -> None:
    model = Counting(toy_model())
    images, labels = toy_images(2, seed=15)
    res = protect(images, labels, [[]] * 2, [model], logo=toy_logo(), device="cpu",
                  config=P(optimizer="gradient", budget=30, logo_scale=0.0625, eot=("jpeg75", "median3")))
    assert sum(r.queries for r in res) == model.rows and all(r.queries <= 30 for r in res)


def test_learned_logo_keeps_alpha_and_lowers_the_loss() -> None:
    model = toy_model()
    images, labels = toy_images(16, seed=16)
    logo = toy_logo()
    config = replace(P(logo_scale=0.0625, opacity=(64, 170)), universal=UniversalConfig(mode="learned", steps=30))
    learned = learn_logo(images, labels, [[]] * 16, [model], logo=logo, config=config, device="cpu",
                         generator=torch.Generator().manual_seed(0))
    w, h = logo_size(logo, (48, 48), scale=0.0625)
    fixed = resize_logo(logo, w, h)
    assert learned.dtype == np.uint8 and learned.shape == (h, w, 4)
    assert np.array_equal(learned[..., 3], fixed[..., 3]) and not np.array_equal(learned, fixed)
    assert logo_size(learned, (48, 48), scale=0.0625) == (w, h)  # protect will not resample it

    # mean loss over the same random placements, fixed vs learned colours
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    feas = torch.ones(16, 48 - h + 1, 48 - w + 1, dtype=torch.bool)
    xy = sample_feasible(feas, 4, torch.Generator().manual_seed(5)).reshape(-1, 2)
    index = torch.arange(16).repeat_interleave(4)
    y = torch.tensor(labels)[index]
    obj = Objective([model])
    op = torch.full((64,), 170.0)
    loss = {name: obj.evaluate(render_candidates(x, logo_tensor(lg), index, xy, op, quantize=True), y).loss.mean()
            for name, lg in (("fixed", fixed), ("learned", learned))}
    assert loss["learned"] < loss["fixed"]
    res = protect(images[:4], labels[:4], [[]] * 4, [model], logo=learned, config=config, device="cpu")
    assert all((r.placement.w, r.placement.h) == (w, h) for r in res)


def test_models_are_restored_after_protect() -> None:
    model = toy_model()
    model.train()
    try:
        images, labels = toy_images(2, seed=17)
        before = clean_margins([model.eval()], images, labels)
        model.train()
        protect(images, labels, [[]] * 2, [model], logo=toy_logo(), device="cpu",
                config=P(optimizer="gradient", budget=12, logo_scale=0.0625))
        assert model.training and all(p.requires_grad for p in model.parameters())
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(before, clean_margins([model.eval()], images, labels))
    finally:
        model.eval()


def test_refined_colours_keep_shape_and_placement_and_lower_the_margin() -> None:
    from medlocker.watermark import refine_colors

    models = [toy_model(0), toy_model(1)]
    images, labels = toy_images(6, seed=21)
    logo = toy_logo()
    config = P(optimizer="gradient", budget=30, logo_scale=0.0625, opacity=(64, 200))
    res = protect(images, labels, [[] for _ in labels], models, logo=logo, config=config, device="cpu")
    placements = [r.placement for r in res]
    placements[5] = None  # an image without a logo gets none
    refined = refine_colors(images, labels, placements, models, logo=logo, config=config, steps=15, target_margin=2.0,
                            device="cpu")
    assert refined[5] is None
    better = 0
    for img, y, p, lg in zip(images[:5], labels[:5], placements[:5], refined[:5]):
        sized = resize_logo(logo, p.w, p.h)
        assert lg.dtype == np.uint8 and lg.shape == sized.shape
        assert np.array_equal(lg[..., 3], sized[..., 3])  # the logo's shape is kept
        out = render_exact(img, lg, p)
        changed = (out != img).any(2)
        x0, y0, x1, y1 = p.box
        assert not changed[:y0].any() and not changed[y1:].any() and not changed[:, :x0].any() and not changed[:, x1:].any()
        better += recheck(models, out, y) <= recheck(models, render_exact(img, logo, p), y) + 1e-6
    assert better >= 4


def test_colour_steps_give_each_image_its_own_logo_and_the_flags_hold_on_the_stored_bytes() -> None:
    models = [toy_model(0), toy_model(1)]
    images, labels = toy_images(8, seed=31)
    logo = toy_logo()
    boxes = [[(20, 20, 28, 28)], [], [(0, 0, 48, 10)], [], [], [], [], []]
    plain_cfg = P(optimizer="gradient", budget=60, logo_scale=0.0625, opacity=(64, 200), lesion_margin=2)
    cfg = replace(plain_cfg, texture=TextureConfig(steps=10))
    plain = protect(images, labels, boxes, models, logo=logo, config=plain_cfg, device="cpu")
    res = protect(images, labels, boxes, models, logo=logo, config=cfg, device="cpu")
    # queries: the texture's steps (2 models x 10) and one more check come on top of the placement budget
    assert cfg.queries(2) == 60 + (10 + 1) * 2 and all(r.queries <= cfg.queries(2) for r in res)
    assert sum(r.success for r in res) >= sum(r.success for r in plain)  # never loses a success
    own = 0
    for img, y, r, bx in zip(images, labels, res, boxes):
        p = r.placement
        sized = resize_logo(logo, p.w, p.h)
        lg = sized if r.logo is None else r.logo
        own += r.logo is not None
        assert lg.shape == sized.shape and np.array_equal(lg[..., 3], sized[..., 3])  # shape kept
        stored = render_exact(img, lg, p)
        m = recheck(models, stored, y)
        assert r.success == (m < 0) and abs(m - r.margin) < 1e-4  # the flag is about these bytes
        changed = (stored != img).any(2)
        x0, y0, x1, y1 = p.box
        assert not changed[:y0].any() and not changed[y1:].any() and not changed[:, :x0].any() and not changed[:, x1:].any()
        for bx0, by0, bx1, by1 in bx:
            assert not changed[by0:by1, bx0:bx1].any()
    assert own >= 6


def test_colour_eot_views_are_counted_and_paid_for() -> None:
    model = Counting(toy_model())
    images, labels = toy_images(4, seed=33)
    texture = TextureConfig(steps=8, margin=50.0, eot=("median3", "resize0.5"))
    cfg = P(texture, optimizer="gradient", budget=20, logo_scale=0.0625)
    assert texture.views(cfg.placement) == ("median3", "resize0.5")
    assert TextureConfig().views(PlacementConfig(eot=("blur",))) == ("blur",)
    res = protect(images, labels, [[]] * 4, [model], logo=toy_logo(), config=cfg, device="cpu")
    # a margin of 50 is never reached: every image takes all 8 steps at 3 views (identity + 2) each
    assert cfg.queries(1) == 20 + 8 * 3 + 1
    assert sum(r.queries for r in res) == model.rows and all(r.queries <= cfg.queries(1) for r in res)
    assert all(r.queries >= 8 * 3 + 2 for r in res)
    with pytest.raises(ValueError, match="jpeg75"):
        TextureConfig(eot=("jpeg",))


def test_colour_cell_gives_a_low_frequency_texture() -> None:
    models = [toy_model(0), toy_model(1)]
    images, labels = toy_images(4, seed=34)
    logo = np.full((12, 12, 4), 128, dtype=np.uint8)  # one flat colour, fully opaque
    logo[..., 3] = 255
    base = P(TextureConfig(steps=10, margin=50.0), optimizer="gradient", budget=80, logo_scale=0.0625)
    per_pixel = protect(images, labels, [[]] * 4, models, logo=logo, config=base, device="cpu")
    one_cell = protect(images, labels, [[]] * 4, models, logo=logo, device="cpu",
                       config=replace(base, texture=replace(base.texture, cell=64)))
    for a, b in zip(per_pixel, one_cell):
        assert a.placement == b.placement  # the colour steps never move the logo
        assert a.logo is not None and b.logo is not None
        assert len(np.unique(a.logo[..., :3].reshape(-1, 3), axis=0)) > 1  # a texture
        assert len(np.unique(b.logo[..., :3].reshape(-1, 3), axis=0)) == 1  # one offset per channel: still flat
        assert not np.array_equal(b.logo[..., :3], logo[: b.logo.shape[0], : b.logo.shape[1], :3])  # but recoloured
    with pytest.raises(ValueError, match="cell"):
        TextureConfig(cell=0)


def test_input_diversity_keeps_textures_batch_invariant_and_the_flags_on_the_stored_bytes() -> None:
    models = [toy_model(0), toy_model(1)]
    images, labels = toy_images(5, seed=35)
    cfg = P(TextureConfig(steps=6, margin=50.0, diversity=0.2), optimizer="gradient", budget=20, logo_scale=0.0625)
    run = lambda idx: protect(images[idx], [labels[i] for i in idx], [[] for _ in idx], models,
                              logo=toy_logo(), config=cfg, device="cpu", seeds=[10 + i for i in idx])
    together, alone = run([0, 1, 2, 3, 4]), run([3])
    assert together[3].placement == alone[0].placement and together[3].queries == alone[0].queries
    assert np.array_equal(together[3].logo, alone[0].logo)  # the per-step draw does not depend on the batch
    plain = protect(images, labels, [[]] * 5, models, logo=toy_logo(), device="cpu", seeds=list(range(10, 15)),
                    config=replace(cfg, texture=replace(cfg.texture, diversity=0.0)))
    assert any(not np.array_equal(a.logo, b.logo) for a, b in zip(together, plain) if a.logo is not None)
    for img, y, r in zip(images, labels, together):
        m = recheck(models, r.stored_image(img, toy_logo()), y)
        assert r.success == (m < 0) and abs(m - r.margin) < 1e-4  # decided on the identity view of the bytes
    with pytest.raises(ValueError, match="diversity"):
        TextureConfig(diversity=1.0)
