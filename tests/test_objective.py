"""The attack objective (medlocker.watermark.objective): padded CUDA-style forwards change nothing."""

from __future__ import annotations

import torch
from test_optim import toy_images, toy_model  # shared toy world

from medlocker.watermark.objective import Objective


def test_padded_forwards_give_the_same_values_and_gradients() -> None:
    # On CUDA every forward is padded to a bucketed row count (few cuDNN plans); the
    # padded rows must not change any value or gradient of the real rows.
    from medlocker.watermark.objective import bucket_rows

    assert [bucket_rows(n, 256) for n in (1, 3, 9, 17, 25, 33, 100, 200, 256)] == [1, 4, 16, 24, 32, 48, 128, 256, 256]
    assert bucket_rows(300, 300) == 300 and bucket_rows(130, 150) == 150
    models = [toy_model(0), toy_model(1)]
    images, labels = toy_images(7, seed=5)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor(labels)
    plain = Objective(models, ("blur",), batch_size=4, pad_rows=False)
    padded = Objective(models, ("blur",), batch_size=4, pad_rows=True)
    for a, b in [(plain.evaluate(x, y), padded.evaluate(x, y))]:
        assert torch.allclose(a.loss, b.loss, atol=1e-5) and torch.equal(a.fooled, b.fooled)
    assert torch.allclose(plain.check(x[:3], y[:3]), padded.check(x[:3], y[:3]), atol=1e-5)
    (ea, ga), (eb, gb) = plain.gradient(x, y), padded.gradient(x, y)
    assert ga.shape == gb.shape == x.shape
    assert torch.allclose(ea.loss, eb.loss, atol=1e-5) and torch.allclose(ga, gb, atol=1e-6)
    padded.prime((3, 48, 48), "cpu")  # no-op off CUDA
