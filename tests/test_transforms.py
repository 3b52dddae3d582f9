"""EOT views (medlocker.watermark.transforms): differentiable, faithful, named."""

from __future__ import annotations

import pytest
import torch


def test_eot_views_are_differentiable_and_faithful() -> None:
    from medlocker.watermark.transforms import get_view

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g)
    for name in ("identity", "resize0.5", "blur", "median3", "crop", "jpeg75"):
        xr = x.clone().requires_grad_(True)
        out = get_view(name)(xr)
        assert out.shape == x.shape, name
        out.sum().backward()
        assert xr.grad is not None and xr.grad.abs().sum() > 0, name
    # median3 equals a plain reference at an interior pixel
    med = get_view("median3")(x)
    assert torch.equal(med[0, 1, 5, 7], x[0, 1, 4:7, 6:9].flatten().median())
    # jpeg: real codec forward (lossy, bounded error), straight-through backward
    xr = x.clone().requires_grad_(True)
    y = get_view("jpeg75")(xr)
    assert 0 < (y - x).abs().mean() < 0.2 and torch.all((y * 255 - torch.round(y * 255)).abs() < 1e-4)
    (y * 3).sum().backward()
    assert torch.allclose(xr.grad, torch.full_like(x, 3.0))
    # resize / blur keep a constant image constant
    c = torch.full((1, 3, 16, 16), 0.25)
    for name in ("resize0.5", "blur", "crop"):
        assert torch.allclose(get_view(name)(c), c, atol=1e-6), name
    with pytest.raises(ValueError, match="valid"):
        get_view("jpeg101")


def test_input_diversity_is_one_draw_per_step_shared_by_every_row() -> None:
    from medlocker.watermark.transforms import diverse

    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 40, 52, generator=g) + 0.1  # no pixel is black before the shrink
    assert diverse(x, 5, 0.0) is x  # off
    y = diverse(x, 5, 0.2)
    assert y.shape == x.shape
    assert torch.equal(diverse(x[1:2], 5, 0.2), y[1:2])  # a row's view does not depend on its batch
    assert torch.equal(diverse(x, 5, 0.2), y)  # deterministic
    draws = {tuple((diverse(x[:1], k, 0.2)[0, 0] == 0).sum(dim=0).tolist()) for k in range(8)}
    assert len(draws) > 1  # the scale and offset change from step to step
    black = (y == 0).all(1)  # the padding is the black surround; shrunk by at most 20 %
    assert black.any() and (~black).sum(dim=(1, 2)).min() >= int(0.8 * 40) * int(0.8 * 52)
    xr = x.clone().requires_grad_(True)
    diverse(xr, 2, 0.2).sum().backward()
    assert xr.grad.abs().sum() > 0
