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
