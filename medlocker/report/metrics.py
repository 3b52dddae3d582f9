"""Evaluation metrics: accuracy, attack success, image quality, lesion safety, cost.

Everything here is a pure function over numpy arrays (uint8 images shaped
``[H, W, 3]`` or batches ``[N, H, W, 3]``), except :func:`predict`, which runs a
:class:`~medlocker.models.Classifier` in batches. Boxes are ``(x0, y0, x1, y1)``
in pixels, end-exclusive, the convention of :class:`medlocker.watermark.Placement`.

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from
error visibility to structural similarity", IEEE TIP 13(4), 2004: an 11x11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, computed on the valid
part of the image (no padding) and averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Box",
    "accuracy",
    "attack_success_rate",
    "psnr",
    "ssim",
    "boxes_to_mask",
    "lesion_pixels_changed",
    "box_area_fraction",
    "summarize",
    "predict",
    "check_image",
]

Box = tuple[int, int, int, int]


def accuracy(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Fraction of ``predictions`` equal to ``labels``; NaN for an empty set."""
    p, y = _as_labels(predictions, labels)
    return float((p == y).mean()) if p.size else math.nan


def attack_success_rate(
    clean_predictions: Sequence[int] | np.ndarray,
    protected_predictions: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
) -> float:
    """Among images the model gets right when clean, the fraction it gets wrong once protected.

    Images the model already misclassifies are left out: the watermark cannot be
    credited for them. NaN when the model gets no clean image right.
    """
    c, y = _as_labels(clean_predictions, labels)
    p, _ = _as_labels(protected_predictions, labels)
    correct = c == y
    if not correct.any():
        return math.nan
    return float((p[correct] != y[correct]).mean())


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, *, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two images, optionally over a region.

    Args:
        a, b: images of the same shape ``[H, W]`` or ``[H, W, C]``.
        mask: optional boolean ``[H, W]``; only pixels where it is true count.
        data_range: peak value (255 for uint8).

    Returns:
        PSNR in dB; ``inf`` when the images are identical over the region, NaN
        when the region is empty.
    """
    a64, b64 = _pair(a, b)
    diff2 = (a64 - b64) ** 2
    if mask is not None:
        m = _check_mask(mask, a64.shape)
        if not m.any():
            return math.nan
        diff2 = diff2[m]
    mse = float(diff2.mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    channels: str = "luminance",
    data_range: float = 255.0,
    window: int = 11,
    sigma: float = 1.5,
) -> float:
    """Mean structural similarity (Wang et al. 2004) between two images.

    Args:
        a, b: uint8 (or float) images ``[H, W, 3]`` or ``[H, W]``.
        mask: optional boolean ``[H, W]``: the SSIM map is averaged only over
            windows centred on pixels where it is true (for example the
            lesion-free region).
        channels: ``"luminance"`` (ITU-R BT.601 luma, the usual choice) or
            ``"per_channel"`` (mean over R, G, B).
        data_range: dynamic range of the pixel values.
        window, sigma: Gaussian window side and width; the window shrinks to the
            largest odd side that fits images smaller than it.

    Returns:
        SSIM in ``[-1, 1]``, exactly 1.0 for identical images; NaN when the mask
        selects no valid window centre.
    """
    a64, b64 = _pair(a, b)
    if channels not in ("luminance", "per_channel"):
        raise ValueError(f"channels must be 'luminance' or 'per_channel', got {channels!r}")
    if a64.ndim == 3:
        if channels == "luminance":
            luma = np.array([0.299, 0.587, 0.114])
            a64, b64 = a64 @ luma, b64 @ luma
            a64, b64 = a64[..., None], b64[..., None]
    else:
        a64, b64 = a64[..., None], b64[..., None]
    h, w = a64.shape[:2]
    side = min(window, h, w)
    side -= 1 - side % 2  # odd
    if side < 1:
        return math.nan
    x = torch.from_numpy(np.ascontiguousarray(a64.transpose(2, 0, 1)))[:, None]  # [C, 1, H, W]
    y = torch.from_numpy(np.ascontiguousarray(b64.transpose(2, 0, 1)))[:, None]
    g = _gaussian_1d(side, sigma)

    def filt(t: torch.Tensor) -> torch.Tensor:  # separable, valid part only
        return F.conv2d(F.conv2d(t, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    smap = smap[:, 0].mean(dim=0).numpy()  # [H - side + 1, W - side + 1]
    if mask is None:
        return float(smap.mean())
    r = side // 2
    m = _check_mask(mask, (h, w))[r : h - r, r : w - r]
    return float(smap[m].mean()) if m.any() else math.nan


def boxes_to_mask(boxes: Iterable[Sequence[int]], shape: tuple[int, ...]) -> np.ndarray:
    """Boolean ``[H, W]`` mask that is true inside any of ``boxes`` (clipped to the image)."""
    h, w = shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        mask[max(y0, 0) : max(min(y1, h), 0), max(x0, 0) : max(min(x1, w), 0)] = True
    return mask


def lesion_pixels_changed(
    original: np.ndarray, protected: np.ndarray, lesion: np.ndarray | Iterable[Sequence[int]]
) -> int:
    """Number of pixels inside the lesion region whose value differs in any channel.

    Args:
        original, protected: images of the same shape.
        lesion: a boolean ``[H, W]`` mask, or a list of ``(x0, y0, x1, y1)`` boxes.
    """
    if original.shape != protected.shape:
        raise ValueError(f"shape mismatch: {original.shape} vs {protected.shape}")
    if isinstance(lesion, np.ndarray) and lesion.dtype == bool:
        mask = _check_mask(lesion, original.shape)
    else:
        mask = boxes_to_mask(lesion, original.shape)
    changed = original != protected
    if changed.ndim == 3:
        changed = changed.any(axis=-1)
    return int((changed & mask).sum())


def box_area_fraction(box: Sequence[int], shape: tuple[int, ...]) -> float:
    """Fraction of the image area covered by ``box`` (clipped to the image)."""
    return float(boxes_to_mask([box], shape).mean())


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """Median, mean, 95th percentile, min and max of the finite values, plus counts.

    Non-finite values (an ``inf`` PSNR of an unchanged image) are counted in
    ``n_nonfinite`` and left out of the statistics, which are NaN when no finite
    value is left.
    """
    v = np.asarray(list(values), dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    out: dict[str, float | int] = {"n": int(v.size), "n_nonfinite": int(v.size - finite.size)}
    if finite.size:
        out.update(
            median=float(np.median(finite)),
            mean=float(finite.mean()),
            p95=float(np.percentile(finite, 95)),
            min=float(finite.min()),
            max=float(finite.max()),
        )
    else:
        out.update(median=math.nan, mean=math.nan, p95=math.nan, min=math.nan, max=math.nan)
    return out


@torch.inference_mode()
def predict(
    classifier: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Predicted labels of uint8 images ``[N, H, W, 3]``, in batches.

    The classifier does its own resize and normalisation; it gets float RGB in
    ``[0, 1]``. Its training mode and device are restored on return.

    Returns:
        int64 array ``[N]`` of argmax labels.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images shaped [N, H, W, 3], got {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    param = next(iter(classifier.parameters()), None)
    old_device = param.device if param is not None else None
    was_training = classifier.training
    classifier.eval()
    if old_device is not None and old_device != device:
        classifier.to(device)
    try:
        out = []
        for i in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device)
            x = chunk.permute(0, 3, 1, 2).float().div_(255.0)
            out.append(classifier(x).argmax(dim=1).cpu())
        return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, dtype=np.int64)
    finally:
        if old_device is not None and old_device != device:
            classifier.to(old_device)
        classifier.train(was_training)


def check_image(img: np.ndarray) -> np.ndarray:
    """Return ``img`` if it is a uint8 ``[H, W, 3]`` array, else raise ``ValueError`` saying what it is."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {got}")
    return img


def _as_labels(p: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p).ravel()
    y = np.asarray(y).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels")
    return p, y


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask shape {m.shape} does not match image {tuple(shape[:2])}")
    return m


def _gaussian_1d(side: int, sigma: float) -> torch.Tensor:
    t = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()
