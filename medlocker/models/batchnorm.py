"""BatchNorm recalibration after a short training run.

Some torchvision backbones (MobileNetV3, EfficientNet-B5..B7) use BatchNorm momentum
0.01, tuned for long ImageNet schedules. After the few hundred steps of a short run
their running statistics are still mostly the initial (0, 1), and in eval mode the
model predicts one class although it has learned. :func:`recalibrate_batchnorm`
recomputes those statistics exactly over the training split. This is the standard
BN recalibration.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from medlocker.data.images import load_image
from medlocker.data.readers import Source
from medlocker.models.train import evaluate_accuracy, resize_uint8

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(
    clf: nn.Module, source: Source, *, val_keys: Iterable[str] | None, input_size: int, device: torch.device, batch_size: int = 64
) -> float | None:
    """Re-estimate slow BatchNorm running statistics on the training split; return the new val accuracy.

    The statistics become the exact average over the training split (momentum None,
    no gradient; the weights are unchanged). Models whose BatchNorm momentum is >= 0.1
    are left alone.

    Args:
        clf: the trained classifier, on ``device``; it is left in eval mode.
        source: the dataset it was trained on.
        val_keys: the validation keys ``train_classifier`` held out (its
            ``history["val_keys"]``); the other records are the training split.
        input_size: the classifier's input side; images are resized to it as in training.
        device: where ``clf`` is.
        batch_size: images per forward pass.

    Returns:
        The validation accuracy after recalibration (NaN without a validation split),
        or None when no BatchNorm needed it.
    """
    bns = [m for m in clf.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or all(m.momentum is None or m.momentum >= 0.1 for m in bns):
        return None
    records = list(source.records)
    labels = np.asarray([r.label for r in records], dtype=np.int64)
    held = set(val_keys or ())
    train_idx = np.asarray([i for i, r in enumerate(records) if r.key not in held], dtype=np.int64)
    val_idx = np.asarray([i for i, r in enumerate(records) if r.key in held], dtype=np.int64)

    def images(idx: np.ndarray) -> torch.Tensor:
        return torch.stack([resize_uint8(torch.from_numpy(load_image(records[i].path)).permute(2, 0, 1), input_size)
                            for i in idx])

    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    clf.train()
    with torch.no_grad():
        for i in range(0, len(train_idx), batch_size):
            clf(images(train_idx[i : i + batch_size]).float().div(255).to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    clf.eval()
    if len(val_idx) == 0:
        return float("nan")
    return float(evaluate_accuracy(clf, images(val_idx), torch.from_numpy(labels[val_idx]), device=device))
