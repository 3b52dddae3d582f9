"""Shared pytest fixtures. Keep each fixture small and clearly named."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from medlocker.crypto import Identity
from medlocker.data import Source, open_source
from medlocker.data.synth import write_synthetic_dataset
from medlocker.models import Classifier, build_classifier, save_checkpoint
from medlocker.pack import PackConfig
from medlocker.watermark import PlacementConfig, ProtectionConfig

# ---------------------------------------------------------------- synthetic DR data


@pytest.fixture(scope="session")
def synth_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic DR dataset (20 images, 64 px, seed 7): labels.csv, images/, masks/.

    Session-scoped and shared: treat it as read-only (copy it to modify).
    """
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", n=20, size=64, seed=7, progress=False)


# ---------------------------------------------------------------- packing


@dataclass(frozen=True)
class PackWorld:
    """What a packing test starts from: a synthetic source, a surrogate, the owner's keys.

    ``tmp / "owner.key"`` and ``tmp / "model.pt"`` are the files the command-line tools take.
    """

    tmp: Path
    src: Path
    source: Source
    model: Classifier
    owner: Identity


@pytest.fixture(scope="module")
def pack_world(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., PackWorld]:
    """Factory ``pack_world(name, n=, seed=)``: a tiny synthetic source (64 px) with a
    deterministically initialised smallcnn surrogate and a fresh owner identity."""

    def make(name: str, *, n: int, seed: int, size: int = 64) -> PackWorld:
        tmp = tmp_path_factory.mktemp(name)
        src = write_synthetic_dataset(tmp / "src", n=n, size=size, seed=seed, progress=False)
        source = open_source(src)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_classifier("smallcnn", source.classes, input_size=size).eval()
        save_checkpoint(model, tmp / "model.pt")
        owner = Identity.generate(name="owner")
        owner.save(tmp / "owner")
        return PackWorld(tmp=tmp, src=src, source=source, model=model, owner=owner)

    return make


def quick_pack_config(*, budget: int, shard_size: int, batch_size: int = 32) -> PackConfig:
    """A fast CPU packing configuration: the black-box search with a small budget and logo."""
    return PackConfig(
        protection=ProtectionConfig(
            placement=PlacementConfig(optimizer="blackbox", budget=budget, logo_scale=0.02, lesion_margin=1)
        ),
        shard_size=shard_size,
        batch_size=batch_size,
    )


@pytest.fixture(scope="session")
def quick_config() -> Callable[..., PackConfig]:
    """:func:`quick_pack_config` as a fixture."""
    return quick_pack_config
