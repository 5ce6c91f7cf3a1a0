"""Shared fixtures. The real Fashion-MNIST files are required (CI installs
Debian's dataset-fashion-mnist); tests never download anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Keep TensorFlow's start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def fashion():
    from edge_runtime import dataset
    return dataset.load()


@pytest.fixture(scope="session")
def data_dir():
    from edge_runtime import dataset
    return dataset.find_data_dir()
