"""The adversarial layer: exact integer rule = batched twin, encoding, restoration v2 with clipped pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medlocker.errors import FormatError
from medlocker.shards.payload import (
    apply_restoration,
    build_restoration,
    parse_restoration,
    restore_image,
)
from medlocker.watermark.layer import (
    Layer,
    apply_layer,
    fill_box,
    grid_shape,
    layer_exceptions,
    layer_offsets,
    layer_offsets_torch,
)


def random_layer(rng: np.random.Generator, h: int, w: int, cell: int, amp: int = 4) -> Layer:
    grid = rng.integers(-amp, amp + 1, (3, *grid_shape(h, w, cell))).astype(np.int8)
    return Layer(cell, grid, rng.random((h, w)) > 0.3)


@pytest.mark.parametrize(("h", "w", "cell"), [(37, 50, 8), (64, 64, 16), (5, 3, 1), (48, 31, 7)])
def test_exact_rule_equals_the_torch_twin_and_stays_within_the_grid(h: int, w: int, cell: int) -> None:
    rng = np.random.default_rng(h * w + cell)
    grid = rng.integers(-127, 128, (3, *grid_shape(h, w, cell))).astype(np.int8)
    exact = layer_offsets(grid, cell, h, w)
    twin = layer_offsets_torch(torch.from_numpy(grid).float()[None], cell, h, w, exact=True)[0].permute(1, 2, 0)
    assert np.array_equal(exact, twin.numpy().astype(np.int64))
    assert exact.min() >= grid.min() and exact.max() <= grid.max()  # interpolation never overshoots
    assert np.array_equal(exact[::cell, ::cell], grid[:, : -(-h // cell), : -(-w // cell)].transpose(1, 2, 0))
    soft = layer_offsets_torch(torch.from_numpy(grid).double()[None], cell, h, w, exact=False)[0].permute(1, 2, 0)
    assert np.abs(soft.numpy() - exact).max() <= 0.5 + 1e-9  # the float version rounds to the exact one


def test_encoding_round_trips_and_rejects_garbage() -> None:
    layer = random_layer(np.random.default_rng(1), 40, 33, 8)
    data = layer.to_bytes()
    back, used = Layer.from_bytes(data + b"tail")
    assert used == len(data) and back.cell == layer.cell
    assert np.array_equal(back.grid, layer.grid) and np.array_equal(back.mask, layer.mask)
    for bad in (data[:10], b"XXXX" + data[4:], data[:-3]):
        with pytest.raises(ValueError):
            Layer.from_bytes(bad)


def test_restoration_v2_is_exact_even_where_the_clip_lost_values() -> None:
    rng = np.random.default_rng(2)
    original = rng.integers(0, 256, (40, 33, 3)).astype(np.uint8)
    original[:4] = 0
    original[-4:] = 255  # saturated rows: the layer's clip loses these
    layer = random_layer(rng, 40, 33, 8)
    box = (5, 6, 15, 16)
    published = apply_layer(original, layer)
    published[6:16, 5:15] = 7  # the logo box, whatever it holds
    assert len(layer_exceptions(original, layer)[0]) > 0
    plaintext = build_restoration(original, box, layer)
    assert plaintext[4] == 2 and build_restoration(original, box)[4] == 1  # without a layer: version 1 as before
    assert np.array_equal(apply_restoration(published, plaintext), original)
    img = Image.fromarray(published)
    assert np.array_equal(np.asarray(restore_image(img, plaintext)), original)
    r = parse_restoration(plaintext)
    assert r.layer is not None and r.box == box
    with pytest.raises(FormatError):
        parse_restoration(plaintext[:-1])
    with pytest.raises(FormatError):
        parse_restoration(plaintext + b"\0")


def test_fill_box_changes_only_the_box_and_passes_gradients_to_the_surroundings() -> None:
    x = torch.rand(2, 3, 20, 24, requires_grad=True)
    xy = torch.tensor([[3, 4], [10, 9]])
    out = fill_box(x, xy, 6, 5)
    inside = torch.zeros(2, 1, 20, 24, dtype=torch.bool)
    inside[0, :, 4:9, 3:9] = True
    inside[1, :, 9:14, 10:16] = True
    assert torch.equal(out.masked_select(~inside.expand_as(x)), x.masked_select(~inside.expand_as(x)))
    (g,) = torch.autograd.grad(out.masked_select(inside.expand_as(x)).sum(), x)
    assert g.masked_select(inside.expand_as(x)).abs().max() == 0  # the box's own pixels do not leak through
    assert g.abs().sum() > 0  # its surroundings do
