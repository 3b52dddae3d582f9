"""Inference copies of backbones with BatchNorm folded into the preceding convolution.

In eval mode ``bn(conv(x))`` is one affine convolution; folding it halves the
kernels of a ResNet-50 forward (fewer launches, one pass less over every
activation), which matters in the watermark search's many small forwards.
The folded network computes the same function up to float rounding, so the
search uses it only under autocast; successes are confirmed and the final
check is made on the original model (:class:`~medlocker.watermark.objective.Objective`).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from medlocker.models.classifier import Classifier

__all__ = ["fold_batchnorm", "folded_copy", "FoldedBackbones"]

log = logging.getLogger(__name__)


def fold_batchnorm(backbone: nn.Module) -> nn.Module | None:
    """A frozen copy of ``backbone`` (which must be in eval mode) with every conv -> BatchNorm pair
    folded (``torch.fx``), on the same device and memory format; None when it cannot be traced or
    has nothing to fold."""
    if backbone.training or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        return None
    try:
        from torch.fx.experimental.optimization import fuse

        folded = fuse(backbone)
    except Exception as exc:  # not symbolically traceable: keep the original
        log.debug("BatchNorm folding skipped for %s: %s", type(backbone).__name__, exc)
        return None
    folded.eval()
    for p in folded.parameters():
        p.requires_grad_(False)
    weights = [p for p in backbone.parameters() if p.dim() == 4]
    if weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights):
        folded.to(memory_format=torch.channels_last)
    return folded


# Folding traces and copies the network (~0.2 s for a ResNet-50): keep one copy per backbone
# for as long as its weights are unchanged (same tensors, same in-place version counters).
_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]] = weakref.WeakKeyDictionary()


def _state(backbone: nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version, p.device.type) for p in backbone.parameters()) + tuple(
        (b.data_ptr(), b._version) for b in backbone.buffers())


def folded_copy(backbone: nn.Module) -> nn.Module | None:
    """:func:`fold_batchnorm`, cached while ``backbone``'s weights stay the same."""
    state = _state(backbone)
    hit = _cache.get(backbone)
    if hit is not None and hit[0] == state:
        return hit[1]
    folded = fold_batchnorm(backbone)
    _cache[backbone] = (state, folded)
    return folded


class FoldedBackbones:
    """Folded copies of the backbones of every :class:`Classifier` inside ``models`` (wrappers
    included); :meth:`active` swaps them in for the duration of a block."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.pairs: list[tuple[Classifier, nn.Module, nn.Module]] = []
        for model in models:
            for m in model.modules():
                if isinstance(m, Classifier):
                    folded = folded_copy(m.backbone)
                    if folded is not None:
                        self.pairs.append((m, m.backbone, folded))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        for clf, _, folded in self.pairs:
            clf.backbone = folded
        try:
            yield
        finally:
            for clf, original, _ in self.pairs:
                clf.backbone = original
