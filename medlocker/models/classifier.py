"""A classifier that owns its preprocessing.

Every model in MedLocker takes float RGB images in ``[0, 1]`` of any size,
shaped ``[B, 3, H, W]``, and does its own resize and normalisation. The
watermark search, the final check on stored bytes and the evaluation all call
the same :meth:`Classifier.forward`, so "the model's own preprocessing" is one
piece of code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Classifier", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """A backbone plus the preprocessing it was trained with.

    Args:
        backbone: any module mapping normalised ``[B, 3, S, S]`` to logits.
        arch: registry name of the architecture (stored in checkpoints).
        classes: class names, index = label.
        input_size: side ``S`` the backbone expects; inputs of another size are
            resized (bilinear, antialiased) -- differentiably.
        mean, std: per-channel normalisation.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        arch: str,
        classes: Sequence[str],
        input_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.arch = arch
        self.classes = tuple(str(c) for c in classes)
        self.input_size = int(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Resize ``[B, 3, H, W]`` images in ``[0, 1]`` to the input size and normalise."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images shaped [B, 3, H, W], got {tuple(x.shape)}")
        s = self.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(x))
