"""Feasibility: a placement the search may return never touches a lesion or leaves the fundus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlocker.models.classifier import Classifier
from medlocker.watermark import SearchConfig, protect
from medlocker.watermark.feasible import (
    feasible_positions,
    field_of_view,
    forbidden_mask,
    project,
    sample_feasible,
    sample_stratified,
)
from medlocker.watermark.params import Placement
from medlocker.watermark.render import render_exact


def fundus_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """Bright textured disc on black, with dark spots inside the disc."""
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 + rng.uniform(-2, 2, 2)
    r = size * rng.uniform(0.4, 0.48)
    disc = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r**2
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[disc] = rng.integers(60, 255, (int(disc.sum()), 3), dtype=np.uint8)
    for _ in range(3):  # dark "haemorrhages" inside the field of view
        y, x = (c + rng.uniform(-r / 2, r / 2, 2)).astype(int)
        img[y - 2:y + 2, x - 2:x + 2] = 5
    img[~disc] = rng.integers(0, 12, (int((~disc).sum()), 3), dtype=np.uint8)  # noisy black border
    return img


def random_boxes(rng: np.random.Generator, size: int, n: int) -> list[tuple[int, int, int, int]]:
    boxes = []
    for _ in range(n):
        x0, y0 = rng.integers(0, size - 4, 2)
        boxes.append((int(x0), int(y0), int(min(size, x0 + rng.integers(1, 12))), int(min(size, y0 + rng.integers(1, 12)))))
    return boxes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def test_field_of_view_fills_dark_lesions_and_ignores_non_fundus() -> None:
    rng = np.random.default_rng(0)
    fundus = fundus_like(rng, 48)
    noise = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    fov = field_of_view(to_tensor(np.stack([fundus, noise])))
    assert fov.shape == (2, 48, 48) and fov.dtype == torch.bool
    assert not fov[0, 0, 0] and not fov[0, -1, -1]  # corners are background
    assert fov[0, 24, 24]
    dark_inside = (fundus.max(2) < 20) & fov[0].numpy()
    assert dark_inside.any()  # dark lesions inside the disc are in view (filled)
    assert fov[1].all()  # not a fundus photo: everything is in view


def test_forbidden_mask_and_feasible_positions_by_brute_force() -> None:
    rng = np.random.default_rng(1)
    B, H, W, w, h, margin = 3, 30, 34, 7, 5, 2
    fov = torch.from_numpy(rng.random((B, H, W)) > 0.02)
    boxes = [random_boxes(rng, 30, int(rng.integers(0, 4))) for _ in range(B)]
    forb = forbidden_mask(boxes, fov, margin=margin)
    feas = feasible_positions(forb, w, h)
    assert feas.shape == (B, H - h + 1, W - w + 1)
    for b in range(B):
        ref = ~fov[b].numpy()
        for x0, y0, x1, y1 in boxes[b]:
            ref[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = True
        assert np.array_equal(forb[b].numpy(), ref)
        brute = np.array([[not ref[y:y + h, x:x + w].any() for x in range(W - w + 1)] for y in range(H - h + 1)])
        assert np.array_equal(feas[b].numpy(), brute)


@pytest.mark.parametrize("seed", range(4))
def test_invariant_sampled_and_projected_placements_stay_off_lesions_and_in_view(seed: int) -> None:
    rng = np.random.default_rng(seed)
    B, S, margin = 4, 64, 3
    images = np.stack([fundus_like(rng, S) for _ in range(B)])
    boxes = [random_boxes(rng, S, int(rng.integers(1, 6))) for _ in range(B)]
    w, h = int(rng.integers(4, 14)), int(rng.integers(4, 14))
    logo = rng.integers(1, 256, (h, w, 4), dtype=np.uint8)  # every logo pixel changes something
    x = to_tensor(images)
    fov = field_of_view(x)
    feas = feasible_positions(forbidden_mask(boxes, fov, margin=margin), w, h)
    gens = [torch.Generator().manual_seed(seed * 100 + b) for b in range(B)]
    cands = [
        (sample_feasible(feas, 16, gens), False),
        (project(torch.from_numpy(rng.uniform(-10, S + 10, (B, 16, 2))), feas), False),
        (sample_stratified(feas, (3, 3), gens), True),  # -1 also marks an empty cell
    ]
    for xy, may_skip in cands:
        for b in range(B):
            for x0, y0 in xy[b].tolist():
                if x0 < 0:
                    assert may_skip or not feas[b].any()  # -1 only when nothing is feasible
                    continue
                p = Placement(x0, y0, w, h, int(rng.integers(1, 256)))
                out = render_exact(images[b], logo, p)
                changed = (out != images[b]).any(2)
                inside = np.zeros_like(changed)
                inside[y0:y0 + h, x0:x0 + w] = True
                assert not (changed & ~inside).any()  # only the logo box changes
                assert fov[b].numpy()[inside].all()  # the box lies in the field of view
                for bx0, by0, bx1, by1 in boxes[b]:
                    assert not changed[by0:by1, bx0:bx1].any()  # no lesion pixel changes
                    # and the margin is kept
                    gap_x = max(bx0 - (x0 + w), x0 - bx1)
                    gap_y = max(by0 - (y0 + h), y0 - by1)
                    assert max(gap_x, gap_y) >= margin


def test_project_returns_nearest_feasible_point() -> None:
    feas = torch.zeros(1, 10, 10, dtype=torch.bool)
    feas[0, 2, 7] = True
    feas[0, 8, 1] = True
    xy = torch.tensor([[[6.6, 2.2], [0.0, 9.0], [7.0, 2.0]]])
    assert project(xy, feas).tolist() == [[[7, 2], [1, 8], [7, 2]]]
    none = project(xy, torch.zeros(1, 10, 10, dtype=torch.bool))
    assert (none == -1).all()


def test_sampling_is_reproducible_and_per_image() -> None:
    feas = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(0)) > 0.5
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6, 7)]  # noqa: E731
    a = sample_feasible(feas, 8, gens())
    b = sample_feasible(feas[1:2], 8, gens()[1:2])
    assert torch.equal(a[1:2], b)  # image 1's draws do not depend on the batch
    assert torch.equal(a, sample_feasible(feas, 8, gens()))
    assert feas[torch.arange(3)[:, None], a[..., 1], a[..., 0]].all()


def test_no_feasible_position_gives_status_and_no_placement() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    clf = Classifier(net, arch="tiny", classes=["a", "b"], input_size=16)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    boxes = [[(0, 0, 32, 32)], [(0, 0, 4, 4)]]  # image 0: the lesion covers everything
    res = protect(images, [0, 1], boxes, [clf], logo=rng.integers(0, 256, (8, 8, 4), dtype=np.uint8),
                  config=SearchConfig(optimizer="blackbox", budget=20), device="cpu")
    assert res[0].placement is None and res[0].status == "no_feasible_position" and res[0].queries == 1
    assert res[1].placement is not None and res[1].status in ("fooled", "not_fooled")


def test_min_logo_scale_shrinks_the_logo_where_the_full_size_does_not_fit() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    clf = Classifier(net, arch="tiny", classes=["a", "b"], input_size=16)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    logo = rng.integers(1, 256, (10, 10, 4), dtype=np.uint8)
    # image 0: a 14 px wide free corridor -- too narrow for the 16 px logo, wide enough for 11 px
    boxes = [[(0, 0, 25, 64), (39, 0, 64, 64)], []]
    config = SearchConfig(optimizer="blackbox", budget=20, logo_scale=0.0625, lesion_margin=0)
    plain = protect(images, [0, 1], boxes, [clf], logo=logo, config=config, device="cpu")
    assert plain[0].status == "no_feasible_position" and plain[1].placement.w == 16
    shrunk = protect(images, [0, 1], boxes, [clf], logo=logo, device="cpu",
                     config=SearchConfig(optimizer="blackbox", budget=20, logo_scale=0.0625, lesion_margin=0,
                                         min_logo_scale=0.01))
    p = shrunk[0].placement
    assert p is not None and (p.w, p.h) == (11, 11) and 25 <= p.x and p.x + p.w <= 39
    assert shrunk[1].placement == plain[1].placement  # images that fit are unaffected
    changed = (render_exact(images[0], logo, p) != images[0]).any(2)
    assert not changed[:, :25].any() and not changed[:, 39:].any()
    # a finer ladder (x0.8 per step) gives the corridor the largest logo that fits, not half the area
    finer = protect(images, [0, 1], boxes, [clf], logo=logo, device="cpu",
                    config=SearchConfig(optimizer="blackbox", budget=20, logo_scale=0.0625, lesion_margin=0,
                                        min_logo_scale=0.01, logo_shrink=0.8))
    q = finer[0].placement
    assert q is not None and (q.w, q.h) == (14, 14) and 25 <= q.x and q.x + q.w <= 39
    assert finer[1].placement == plain[1].placement
    with pytest.raises(ValueError, match="logo_shrink"):
        SearchConfig(logo_shrink=1.0)
