"""Classifiers: the architecture registry, checkpoints, training and BatchNorm recalibration."""

from medlocker.models.batchnorm import recalibrate_batchnorm
from medlocker.models.checkpoint import load_checkpoint, save_checkpoint
from medlocker.models.classifier import Classifier
from medlocker.models.registry import (
    ARCHITECTURES,
    SmallCNN,
    build_classifier,
    create_backbone,
)
from medlocker.models.train import (
    evaluate_accuracy,
    resize_uint8,
    resolve_device,
    train_classifier,
)

__all__ = [
    "ARCHITECTURES",
    "Classifier",
    "SmallCNN",
    "build_classifier",
    "create_backbone",
    "evaluate_accuracy",
    "load_checkpoint",
    "recalibrate_batchnorm",
    "resize_uint8",
    "resolve_device",
    "save_checkpoint",
    "train_classifier",
]
