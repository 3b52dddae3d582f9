"""Save and load a :class:`Classifier` with everything needed to rebuild it.

A checkpoint is ``torch.save`` of a dict holding only plain Python values and
tensors, read back with ``torch.load(weights_only=True)`` (no pickled code)::

    {"format": "medlocker.checkpoint", "version": 1,
     "arch": "resnet18", "classes": ["0", "1", ...], "input_size": 224,
     "mean": [..3 floats..], "std": [..3 floats..],
     "state_dict": {"backbone.conv1.weight": tensor, ...},
     "meta": {...plain JSON-like values...}}
"""

from __future__ import annotations

import os
from typing import Any

import torch

from medlocker.errors import FormatError
from medlocker.util import atomic_open
from medlocker.models.classifier import Classifier
from medlocker.models.registry import ARCHITECTURES, build_classifier

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "medlocker.checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(clf: Classifier, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> None:
    """Write ``clf`` to ``path`` (atomically: a temporary file, then a rename).

    Args:
        clf: the classifier; its ``arch`` must be a registry name.
        path: destination file.
        meta: extra plain values (str, int, float, bool, None, lists, dicts
            with str keys), e.g. the training history.

    Raises:
        ValueError: ``meta`` holds something other than plain values, or
            ``clf.arch`` is not in the registry.
    """
    if not isinstance(clf, Classifier):
        raise TypeError(f"expected a Classifier, got {type(clf).__name__}")
    if clf.arch not in ARCHITECTURES:
        raise ValueError(f"cannot checkpoint architecture {clf.arch!r}: not in the registry")
    meta = {} if meta is None else meta
    _check_plain(meta, "meta")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": clf.arch,
        "classes": list(clf.classes),
        "input_size": int(clf.input_size),
        "mean": [float(x) for x in clf.mean.flatten().tolist()],
        "std": [float(x) for x in clf.std.flatten().tolist()],
        "state_dict": {k: v.detach().cpu().clone() for k, v in clf.state_dict().items()},
        "meta": meta,
    }
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Classifier:
    """Rebuild a classifier saved by :func:`save_checkpoint`, in eval mode.

    Raises:
        FormatError: the file is missing, corrupt, not a MedLocker checkpoint,
            of an unknown version, or its weights do not fit its architecture.
    """
    name = os.fspath(path)
    try:
        data = torch.load(name, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FormatError(f"{name}: checkpoint not found") from None
    except Exception as exc:  # torch raises many types for bad files
        raise FormatError(f"{name}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{name}: not a MedLocker checkpoint (no format {CHECKPOINT_FORMAT!r}); save it with save_checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise FormatError(
            f"{name}: checkpoint version {data.get('version')!r} is not supported (this reader knows {CHECKPOINT_VERSION})"
        )
    try:
        arch, classes, size = data["arch"], data["classes"], data["input_size"]
        mean, std, state = data["mean"], data["std"], data["state_dict"]
        if arch not in ARCHITECTURES:
            raise FormatError(f"{name}: unknown architecture {arch!r}")
        clf = build_classifier(arch, [str(c) for c in classes], input_size=int(size), mean=mean, std=std, seed=0)
        clf.load_state_dict(state, strict=True)
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{name}: malformed checkpoint ({type(exc).__name__}: {exc})") from None
    clf.meta = dict(data.get("meta") or {})  # type: ignore[attr-defined]
    return clf.to(map_location).eval()


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be str, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where}: {type(value).__name__} is not a plain value (str, int, float, bool, None, list, dict)")
