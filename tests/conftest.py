"""Shared fixtures: one tiny synthetic dataset (and a model trained on it) per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training import synth


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    synth.write(synth.generate(synth.TINY), out)
    return out


@pytest.fixture(scope="session")
def tiny_repo(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with one version trained for a few epochs on the tiny data."""
    import torch

    from training import dataset, train

    torch.set_num_threads(1)
    repo = tmp_path_factory.mktemp("models")
    train.run(dataset.load(tiny_data, progress=False), repo, train.TrainConfig(epochs=3),
              progress=False)
    return repo
