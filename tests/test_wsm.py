"""Lesion boxes: connected components of masks, and Grad-CAM boxes of a classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlocker.models.classifier import Classifier
from medlocker.watermark.wsm import boxes_from_masks, gradcam_boxes, label_components


def test_boxes_from_masks_multiple_components_and_border() -> None:
    m = np.zeros((20, 30), dtype=bool)
    m[0:3, 0:4] = True  # touches the top-left border
    m[10:12, 10:15] = True
    m[12, 15] = True  # diagonal neighbour: same 8-connected component
    m[17:20, 27:30] = True  # touches the bottom-right border
    m[5, 20] = True  # a single pixel: speckle below min_area
    other = np.zeros_like(m)
    other[4:9, 22:24] = True  # a second lesion type
    boxes = boxes_from_masks([m, other])
    assert boxes == sorted([(0, 0, 4, 3), (10, 10, 16, 13), (27, 17, 30, 20), (22, 4, 24, 9)])
    assert (20, 5, 21, 6) in boxes_from_masks([m], min_area=1)
    assert boxes_from_masks([np.zeros((5, 5), dtype=bool)]) == []


def test_boxes_cover_every_component_pixel_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((40, 37)) > 0.8
        boxes = boxes_from_masks([m], min_area=1)
        covered = np.zeros_like(m)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 37 and 0 <= y0 < y1 <= 40
            covered[y0:y1, x0:x1] = True
        assert not (m & ~covered).any()


def test_label_components_matches_flood_fill() -> None:
    rng = np.random.default_rng(3)
    m = rng.random((25, 25)) > 0.55
    lab = label_components(m)
    # reference: BFS with 8-connectivity
    ref = -np.ones(m.shape, dtype=int)
    n = 0
    for y, x in zip(*np.nonzero(m)):
        if ref[y, x] >= 0:
            continue
        stack = [(y, x)]
        ref[y, x] = n
        while stack:
            cy, cx = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < 25 and 0 <= nx < 25 and m[ny, nx] and ref[ny, nx] < 0:
                        ref[ny, nx] = n
                        stack.append((ny, nx))
        n += 1
    # same partition: a bijection between label sets
    pairs = {(int(a), int(b)) for a, b in zip(lab[m], ref[m])}
    assert len(pairs) == n == len({a for a, _ in pairs})
    assert (lab[~m] == -1).all()


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_gradcam_boxes_on_a_tiny_cnn_restores_model_state() -> None:
    torch.manual_seed(0)
    clf = Classifier(TinyCNN(), arch="tiny", classes=["a", "b", "c"], input_size=32)
    clf.train()
    clf.backbone.features[1].eval()  # a caller's mixed mode must come back as it was
    clf.backbone.head[-1].weight.requires_grad_(False)
    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    images[:, :, 10:20, 30:40] += 0.8  # something to look at
    bn = clf.backbone.features[1]
    stats = bn.running_mean.clone()
    boxes = gradcam_boxes(clf, images.clamp(0, 1), torch.tensor([0, 1, 2]), threshold=0.5)
    assert len(boxes) == 3
    for image_boxes in boxes:
        for x0, y0, x1, y1 in image_boxes:
            assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 40
    assert any(boxes)
    assert clf.training and not bn.training and clf.backbone.head[2].training
    assert not clf.backbone.head[-1].weight.requires_grad and clf.backbone.features[0].weight.requires_grad
    assert all(p.grad is None for p in clf.parameters())
    assert torch.equal(bn.running_mean, stats)  # eval mode: BN statistics untouched
    # deterministic
    assert boxes == gradcam_boxes(clf, images.clamp(0, 1), torch.tensor([0, 1, 2]), threshold=0.5)


def test_gradcam_needs_a_conv_layer() -> None:
    mlp = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), arch="mlp", classes=["a", "b"], input_size=8)
    with pytest.raises(ValueError, match="Conv2d"):
        gradcam_boxes(mlp, torch.rand(1, 3, 8, 8), torch.tensor([0]))
