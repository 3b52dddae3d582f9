"""The architectures MedLocker can build, by name.

A thin registry over torchvision: each entry builds the network with
``weights=None`` (nothing is ever downloaded), optionally loads a *local*
torchvision-style state dict, and then sizes the classification head to the
dataset. ``smallcnn`` and ``vit_tiny`` are small models for tests and the demo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

from medlocker.errors import FormatError
from medlocker.models.classifier import IMAGENET_MEAN, IMAGENET_STD, Classifier

__all__ = ["ARCHITECTURES", "SmallCNN", "build_classifier", "create_backbone"]


class SmallCNN(nn.Module):
    """A ~100k-parameter CNN, fast on CPU at 64-224 px.

    A stride-2 stem then three conv-bn-relu blocks, each after a 2x max-pool,
    and global average + max pooling: the max keeps the evidence of a single
    small lesion, the average its extent.
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(3, w, 2),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            nn.MaxPool2d(2),
            *block(4 * w, 8 * w),
        )
        self.fc = nn.Linear(16 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.fc(pooled)


@dataclass(frozen=True)
class _Arch:
    build: Callable[[int], nn.Module]  # input_size -> network with its default head
    head: str  # dotted path of the final nn.Linear
    patch: int = 1  # input_size must be a multiple of this


def _vit_tiny(size: int) -> nn.Module:
    return VisionTransformer(
        image_size=size, patch_size=16, num_layers=4, num_heads=3, hidden_dim=192, mlp_dim=768
    )


_REGISTRY: dict[str, _Arch] = {
    "resnet18": _Arch(lambda s: tvm.resnet18(weights=None), "fc"),
    "resnet50": _Arch(lambda s: tvm.resnet50(weights=None), "fc"),
    "vgg16": _Arch(lambda s: tvm.vgg16(weights=None), "classifier.6"),
    "densenet121": _Arch(lambda s: tvm.densenet121(weights=None), "classifier"),
    "mobilenet_v3_large": _Arch(lambda s: tvm.mobilenet_v3_large(weights=None), "classifier.3"),
    "efficientnet_b0": _Arch(lambda s: tvm.efficientnet_b0(weights=None), "classifier.1"),
    "convnext_tiny": _Arch(lambda s: tvm.convnext_tiny(weights=None), "classifier.2"),
    "vit_b_16": _Arch(lambda s: tvm.vit_b_16(weights=None, image_size=s), "heads.head", patch=16),
    "vit_tiny": _Arch(_vit_tiny, "heads.head", patch=16),
    "smallcnn": _Arch(lambda s: SmallCNN(1000), "fc"),
}

ARCHITECTURES: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`create_backbone`."""


def create_backbone(
    arch: str,
    num_classes: int,
    *,
    weights: str | os.PathLike[str] | None = None,
    input_size: int = 224,
    seed: int | None = 0,
) -> nn.Module:
    """Build a backbone with a ``num_classes``-way head.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: size of the new head.
        weights: a local torchvision-style state dict (``.pth``) loaded before
            the head is replaced: every backbone key must match, head keys are
            ignored. Nothing is ever downloaded.
        input_size: image side the network will see (ViTs are built for it;
            their position embeddings are interpolated if ``weights`` came from
            another size).
        seed: seeds the random initialisation in a forked RNG (the global
            torch RNG is left as it was); ``None`` draws from the global RNG.

    Returns:
        The network, mapping normalised ``[B, 3, input_size, input_size]`` to logits.

    Raises:
        ValueError: unknown ``arch``, ``num_classes < 1`` or an input size the
            architecture cannot take.
        FormatError: ``weights`` cannot be read or does not fit the architecture.
    """
    spec = _REGISTRY.get(arch)
    if spec is None:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(ARCHITECTURES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if input_size < 16 or input_size % spec.patch:
        raise ValueError(f"{arch} needs an input size >= 16 that is a multiple of {spec.patch}, got {input_size}")

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        net = spec.build(input_size)
        if weights is not None:
            _load_backbone_weights(net, spec.head, weights)
        old = net.get_submodule(spec.head)
        _set_submodule(net, spec.head, nn.Linear(old.in_features, num_classes))
    return net


def build_classifier(
    arch: str,
    classes: Sequence[str],
    *,
    input_size: int = 224,
    weights: str | os.PathLike[str] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int | None = 0,
) -> Classifier:
    """A :class:`Classifier` over ``create_backbone(arch, len(classes), ...)``."""
    if len(classes) < 1:
        raise ValueError("classes must not be empty")
    backbone = create_backbone(arch, len(classes), weights=weights, input_size=input_size, seed=seed)
    return Classifier(backbone, arch=arch, classes=classes, input_size=input_size, mean=mean, std=std)


def _set_submodule(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _load_backbone_weights(net: nn.Module, head: str, path: str | os.PathLike[str]) -> None:
    name = os.fspath(path)
    try:
        state = torch.load(name, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FormatError(f"{name}: weights file not found") from None
    except Exception as exc:  # torch raises many types for bad files
        raise FormatError(f"{name}: cannot read weights ({type(exc).__name__}: {exc}); expected a torch state dict") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FormatError(f"{name}: not a state dict of tensors; save it with torch.save(model.state_dict(), path)")
    prefix = head + "."
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    pos = "encoder.pos_embedding"
    if isinstance(net, VisionTransformer) and pos in state and state[pos].shape != net.encoder.pos_embedding.shape:
        state = interpolate_embeddings(net.image_size, net.patch_size, state)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise FormatError(f"{name}: weights do not fit this architecture ({exc})") from None
    missing = [k for k in missing if not k.startswith(prefix)]
    if missing or unexpected:
        raise FormatError(
            f"{name}: weights do not fit this architecture; missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
