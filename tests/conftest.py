"""Shared pytest fixtures. Keep each fixture small and clearly named."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlocker.data.synth import write_synthetic_dataset

# ---------------------------------------------------------------- synthetic DR data


@pytest.fixture(scope="session")
def synth_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic DR dataset (20 images, 64 px, seed 7): labels.csv, images/, masks/.

    Session-scoped and shared: treat it as read-only (copy it to modify).
    """
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", n=20, size=64, seed=7, progress=False)
