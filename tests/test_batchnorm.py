"""recalibrate_batchnorm: slow BatchNorm statistics become the exact training-split average."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medlocker.data import open_source, write_synthetic_dataset
from medlocker.models import build_classifier, recalibrate_batchnorm

SIZE = 32


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return open_source(write_synthetic_dataset(tmp_path_factory.mktemp("bn") / "src", n=12, size=SIZE, seed=3,
                                               progress=False))


def _model(source, momentum: float) -> nn.Module:
    clf = build_classifier("smallcnn", source.classes, input_size=SIZE, seed=0).eval()
    for m in clf.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
    return clf


def _bns(clf: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in clf.modules() if isinstance(m, nn.BatchNorm2d)]


def test_fast_batchnorm_is_left_alone(source) -> None:
    clf = _model(source, 0.1)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    assert recalibrate_batchnorm(clf, source, val_keys=[], input_size=SIZE, device=torch.device("cpu")) is None
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())


def test_slow_batchnorm_gets_the_exact_training_split_statistics(source) -> None:
    clf = _model(source, 0.01)
    val_keys = [r.key for r in source.records[:3]]
    first = _bns(clf)[0]
    seen: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().clone()))
    weights = {k: v.clone() for k, v in clf.state_dict().items() if "running" not in k and "num_batches" not in k}

    acc = recalibrate_batchnorm(clf, source, val_keys=val_keys, input_size=SIZE, device=torch.device("cpu"))
    hook.remove()

    assert acc is not None and 0.0 <= acc <= 1.0
    # one batch of the 9 training images (batch_size 64), then one eval pass over the 3 validation images
    assert [x.shape[0] for x in seen] == [9, 3]
    x = seen[0]
    torch.testing.assert_close(first.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert all(m.momentum == 0.01 for m in _bns(clf)) and not clf.training
    assert all(torch.equal(weights[k], v) for k, v in clf.state_dict().items() if k in weights)


def test_no_validation_split_gives_nan(source) -> None:
    clf = _model(source, 0.01)
    acc = recalibrate_batchnorm(clf, source, val_keys=None, input_size=SIZE, device=torch.device("cpu"))
    assert acc is not None and math.isnan(acc)
