"""Train a classifier on a source dataset.

No pretrained weights can be downloaded here, so the target and held-out models
of the benchmarks are trained from scratch (or from a local state dict) by
:func:`train_classifier`. It is deliberately plain: a stratified train/val
split, images decoded once and cached as uint8 at the model's input size,
flips and a light colour jitter, AdamW with warm-up + cosine decay.
Everything random comes from ``seed`` (a ``torch.Generator`` and a forked torch
RNG for initialisation and dropout), so a CPU run is reproducible and the
caller's global RNG is left untouched.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medlocker.data.images import load_image
from medlocker.data.readers import Record, Source
from medlocker.models.classifier import Classifier
from medlocker.models.registry import build_classifier

__all__ = ["evaluate_accuracy", "resize_uint8", "resolve_device", "train_classifier"]

log = logging.getLogger(__name__)

_CACHE_LIMIT_BYTES = 2 * 1024**3  # decode once and keep in memory below this


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) -> CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _ResizedImages(Dataset):
    """Records -> uint8 ``[3, S, S]`` tensors, resized as :class:`Classifier` would."""

    def __init__(self, records: Sequence[Record], size: int) -> None:
        self.records = list(records)
        self.size = size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        return resize_uint8(torch.from_numpy(load_image(self.records[i].path)).permute(2, 0, 1), self.size)


def resize_uint8(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> uint8 ``[3, size, size]`` (bilinear, antialiased)."""
    if tuple(image.shape[-2:]) == (size, size):
        return image.contiguous()
    x = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def _stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0x5B117])
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = round(len(idx) * val_fraction)
        if val_fraction > 0 and len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random dihedral transforms (flips, 90-degree turns of square images) and a light
    brightness / per-channel gain jitter on ``[B, 3, H, W]`` in [0, 1].

    Lesion evidence does not depend on orientation, so the eight dihedral
    transforms are free extra data for a small training set.
    """
    b = x.shape[0]
    hflip = torch.rand(b, generator=g) < 0.5
    vflip = torch.rand(b, generator=g) < 0.5
    turn = torch.rand(b, generator=g) < 0.5
    bright = 1.0 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.3
    gain = 1.0 + (torch.rand(b, 3, 1, 1, generator=g) - 0.5) * 0.12
    dev = x.device
    x = torch.where(hflip.to(dev)[:, None, None, None], x.flip(-1), x)
    x = torch.where(vflip.to(dev)[:, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(turn.to(dev)[:, None, None, None], x.transpose(-1, -2), x)
    return (x * (bright * gain).to(dev)).clamp_(0.0, 1.0)


def _batches(
    data: torch.Tensor | Dataset, order: torch.Tensor, batch_size: int, num_workers: int, drop_single: bool
) -> Iterator[torch.Tensor]:
    """uint8 image batches in ``order``, from the in-memory cache or decoded on the fly."""
    chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if drop_single and len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks.pop()  # BatchNorm cannot train on a single sample
    if isinstance(data, torch.Tensor):
        for c in chunks:
            yield data[c]
    else:
        yield from DataLoader(data, batch_sampler=chunks, num_workers=num_workers)


def train_classifier(
    source: Source,
    *,
    arch: str,
    epochs: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    input_size: int = 224,
    seed: int = 0,
    device: str | torch.device = "auto",
    val_fraction: float = 0.2,
    progress: bool = True,
    num_workers: int = 0,
    weights: str | os.PathLike[str] | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Train ``arch`` on ``source`` from scratch (or from local ``weights``).

    Args:
        source: labelled images (:func:`medlocker.data.open_source`).
        arch: registry architecture name.
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak AdamW learning rate (linear warm-up, then cosine decay to 0).
        weight_decay: AdamW weight decay.
        input_size: the classifier's input side; images are cached at this size.
        seed: drives the split, initialisation, shuffling, augmentation and dropout.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:0"``, ...
        val_fraction: stratified share held out for validation (0 for none).
        progress: show tqdm progress bars.
        num_workers: DataLoader workers for decoding (used only when the
            dataset is too large to cache in memory).
        weights: optional local torchvision state dict for the backbone.

    Returns:
        ``(classifier, history)``: the classifier in eval mode on ``device``;
        history has per-epoch lists ``train_loss``, ``train_accuracy``,
        ``val_accuracy`` (None without a validation split), ``epoch_seconds``,
        and ``n_train``, ``n_val``, ``val_keys``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not source.records:
        raise ValueError("the source has no records")
    dev = resolve_device(device)
    records = list(source.records)
    labels_np = np.array([r.label for r in records], dtype=np.int64)
    train_idx, val_idx = _stratified_split(labels_np, val_fraction, seed)
    labels = torch.from_numpy(labels_np)

    data: torch.Tensor | Dataset = _ResizedImages(records, input_size)
    if len(records) * 3 * input_size * input_size <= _CACHE_LIMIT_BYTES:
        data = _cache(data, progress, num_workers)

    clf = build_classifier(arch, source.classes, input_size=input_size, weights=weights, seed=seed).to(dev)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, len(train_idx) // batch_size + (len(train_idx) % batch_size > 1))
    total = epochs * steps_per_epoch
    warm = max(1, min(total // 10, 3 * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / total)))
    )
    g = torch.Generator().manual_seed(seed)
    amp = dev.type == "cuda"
    history: dict[str, Any] = {
        "train_loss": [], "train_accuracy": [], "val_accuracy": [], "epoch_seconds": [],
        "n_train": len(train_idx), "n_val": len(val_idx),
        "val_keys": [records[i].key for i in val_idx],
    }
    bar = _tqdm(range(epochs), progress, desc=f"training {arch}", unit="epoch")
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # dropout / stochastic depth draw from the (forked) global RNG
        for _epoch in bar:
            t0 = time.perf_counter()
            clf.train()
            order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=g)]
            loss_sum, correct, seen = 0.0, 0, 0
            batches = zip(
                _batches(data, order, batch_size, num_workers, drop_single=True),
                (labels[order[i : i + batch_size]] for i in range(0, len(order), batch_size)),
            )
            for xb_u8, yb in _tqdm(batches, progress, total=steps_per_epoch, desc="batches", unit="batch", leave=False):
                x = _augment(xb_u8.to(dev, non_blocking=True).float().div_(255.0), g)
                y = yb.to(dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    logits = clf(x)
                loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
            clf.eval()
            val_acc = None
            if len(val_idx):
                val_acc = evaluate_accuracy(
                    clf, _subset(data, val_idx, num_workers), labels[torch.from_numpy(val_idx)],
                    batch_size=max(batch_size, 64), device=dev,
                )
            history["train_loss"].append(loss_sum / max(1, seen))
            history["train_accuracy"].append(correct / max(1, seen))
            history["val_accuracy"].append(val_acc)
            history["epoch_seconds"].append(time.perf_counter() - t0)
            postfix = {"loss": f"{loss_sum / max(1, seen):.3f}"}
            if val_acc is not None:
                postfix["val_acc"] = f"{val_acc:.3f}"
            if progress:
                bar.set_postfix(postfix)
            log.info("epoch %d/%d %s", _epoch + 1, epochs, postfix)
    clf.eval()
    return clf, history


def _tqdm(it: Iterable, enabled: bool, **kw: Any) -> Any:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, **kw)


def _cache(data: _ResizedImages, progress: bool, num_workers: int) -> torch.Tensor:
    """Decode every image once into a uint8 ``[N, 3, S, S]`` tensor."""
    out = torch.empty((len(data), 3, data.size, data.size), dtype=torch.uint8)
    loader = DataLoader(data, batch_size=32, num_workers=num_workers)
    i = 0
    for batch in _tqdm(loader, progress, desc="decoding images", unit="batch", leave=False):
        out[i : i + len(batch)] = batch
        i += len(batch)
    return out


def _subset(data: torch.Tensor | Dataset, idx: np.ndarray, num_workers: int) -> torch.Tensor | Iterable:
    if isinstance(data, torch.Tensor):
        return data[torch.from_numpy(idx)]
    return _batches(data, torch.from_numpy(idx), 64, num_workers, drop_single=False)


def _as_float_batch(x: Any, device: torch.device) -> torch.Tensor:
    """uint8 ``[B,3,H,W]`` / ``[B,H,W,3]`` (tensor or numpy) or float in [0, 1] -> float ``[B,3,H,W]``."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.dim() == 4 and t.shape[1] != 3 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)
    t = t.to(device, non_blocking=True)
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


@torch.no_grad()
def evaluate_accuracy(
    clf: Classifier,
    images: torch.Tensor | np.ndarray | Iterable[Any],
    labels: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy of ``clf``.

    Args:
        clf: the classifier; its train/eval mode and device are restored afterwards.
        images: all images at once (uint8 ``[N, 3, H, W]`` or ``[N, H, W, 3]``,
            or float in [0, 1]), or an iterable of image batches (with ``labels``),
            or of ``(images, labels)`` batches (``labels`` None), e.g. a DataLoader.
        labels: class indices, when ``images`` does not carry them.
        batch_size: forward batch size for in-memory images.
        device: where to run; None = where the model already is, "auto" = CUDA if available.

    Returns:
        Fraction correct in [0, 1] (0.0 for no images).
    """
    if device is None:
        dev = next(clf.parameters()).device
    else:
        dev = resolve_device(device)
    was_training = clf.training
    old_dev = next(clf.parameters()).device
    clf.eval().to(dev)
    try:
        if isinstance(images, (torch.Tensor, np.ndarray)):
            if labels is None:
                raise ValueError("labels are required with in-memory images")
            n = len(images)
            batches: Iterable[Any] = (
                (images[i : i + batch_size], torch.as_tensor(np.asarray(labels[i : i + batch_size])))
                for i in range(0, n, batch_size)
            )
        elif labels is not None:
            y_all = torch.as_tensor(np.asarray(labels))
            batches = _zip_with_labels(images, y_all)
        else:
            batches = images
        correct = total = 0
        for xb, yb in batches:
            x = _as_float_batch(xb, dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                pred = clf(x).argmax(1).cpu()
            y = torch.as_tensor(yb).cpu()
            correct += int((pred == y).sum())
            total += len(y)
        return correct / total if total else 0.0
    finally:
        clf.to(old_dev).train(was_training)


def _zip_with_labels(batches: Iterable[Any], labels: torch.Tensor) -> Iterator[tuple[Any, torch.Tensor]]:
    i = 0
    for xb in batches:
        n = len(xb)
        yield xb, labels[i : i + n]
        i += n
