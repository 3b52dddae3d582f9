"""Watermark semantic masks (WSM): the lesion boxes a logo must stay off.

Two sources, as in MedLocker / MIAD-MARK:

* ground-truth lesion masks -> one box per connected component
  (:func:`boxes_from_masks`);
* the classifier's own attention: Grad-CAM on the last convolution,
  thresholded relative to its maximum, components -> boxes
  (:func:`gradcam_boxes`, the way the MIAD-MARK authors' code derives the
  "lesion" region).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medlocker.watermark.optim.base import frozen
from medlocker.watermark.params import Box

__all__ = ["label_components", "boxes_from_masks", "gradcam_boxes", "last_conv"]


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels of a boolean mask (``-1`` = background).

    Labels are the flat index of each component's first pixel, found by
    min-label propagation with pointer jumping (``label = label[label]``), which
    needs O(log diameter) vectorised passes for compact blobs.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"a mask is 2-D, got shape {m.shape}")
    H, W = m.shape
    big = H * W
    lab = np.where(m, np.arange(big, dtype=np.int64).reshape(H, W), big)
    while True:
        p = np.pad(lab, 1, constant_values=big)
        nb = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(nb, p[dy:dy + H, dx:dx + W], out=nb)
        nb = np.where(m, nb, big)
        flat = nb.ravel()
        fg = flat < big
        flat[fg] = flat[flat[fg]]  # pointer jumping: adopt the label of my label's pixel
        if np.array_equal(nb, lab):
            break
        lab = nb
    return np.where(m, lab, -1)


def boxes_from_masks(masks: Sequence[np.ndarray], *, min_area: int = 4) -> list[Box]:
    """One half-open box per connected lesion component, over all masks of one image.

    Args:
        masks: boolean H x W masks (e.g. one per lesion type), same size.
        min_area: components with fewer pixels are ignored (speckle).

    Returns:
        ``(x0, y0, x1, y1)`` boxes, sorted.
    """
    boxes: set[Box] = set()
    for mask in masks:
        lab = label_components(mask)
        fg = lab >= 0
        if not fg.any():
            continue
        ys, xs = np.nonzero(fg)
        ids, inv, counts = np.unique(lab[fg], return_inverse=True, return_counts=True)
        n = ids.size
        x0 = np.full(n, np.iinfo(np.int64).max)
        y0 = x0.copy()
        x1 = np.full(n, -1)
        y1 = x1.copy()
        np.minimum.at(x0, inv, xs)
        np.minimum.at(y0, inv, ys)
        np.maximum.at(x1, inv, xs)
        np.maximum.at(y1, inv, ys)
        for i in np.nonzero(counts >= min_area)[0]:
            boxes.add((int(x0[i]), int(y0[i]), int(x1[i]) + 1, int(y1[i]) + 1))
    return sorted(boxes)


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` in module order. Raises ``ValueError`` when there is none."""
    conv = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            conv = module
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer: Grad-CAM needs a convolutional model")
    return conv


def gradcam_boxes(
    clf: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    threshold: float = 0.5,
) -> list[list[Box]]:
    """Grad-CAM lesion boxes: where the classifier looks for the true class.

    Grad-CAM (Selvaraju et al., 2017) on the last ``Conv2d``: channel weights are
    the spatially averaged gradients of the true-class logit, the map is
    ``relu(sum_c w_c A_c)``, upsampled bilinearly to the image size and
    thresholded at ``threshold * max`` per image. The model is run in eval
    mode with frozen weights; every module's training flag and every
    parameter's ``requires_grad`` are restored afterwards, and no ``.grad`` is
    touched.

    Args:
        clf: a classifier taking ``[B, 3, H, W]`` in ``[0, 1]``.
        images: float ``[B, 3, H, W]``.
        labels: long ``[B]``, the class whose evidence is located.
        threshold: relative threshold in ``(0, 1]``.

    Returns:
        Per image, a list of half-open boxes (empty if the map is all zero).

    Raises:
        ValueError: the model has no convolution, or a bad threshold.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"Grad-CAM threshold must be in (0, 1], got {threshold}")
    conv = last_conv(clf)
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        store["act"] = out

    handle = conv.register_forward_hook(hook)
    try:
        with frozen([clf]), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # activations need a graph even if weights are frozen
            logits = clf(x)
            act = store["act"]
            score = logits.gather(1, labels.view(-1, 1).to(logits.device)).sum()
            (grad,) = torch.autograd.grad(score, act)
        with torch.no_grad():
            weights = grad.float().mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * act.float()).sum(1, keepdim=True))
            cam = torch.nn.functional.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
            cam = cam[:, 0]
            peak = cam.flatten(1).amax(1).view(-1, 1, 1)
            hot = (cam >= threshold * peak) & (peak > 0)
    finally:
        handle.remove()
    return [boxes_from_masks([m], min_area=1) for m in hot.cpu().numpy()]
