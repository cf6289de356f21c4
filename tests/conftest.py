"""Shared fixtures: the real MNIST beside the project, and small models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from scratch import committed_params  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MASKTUNE_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {MNIST_DIR} (set MASKTUNE_MNIST_DIR)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from masktune.datasets.mnist_idx import load_mnist

    return load_mnist(mnist_dir)
