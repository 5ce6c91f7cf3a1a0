"""Regression test on real photos from ../shared/real-photos (skipped when that
folder is absent: the project never depends on it).

tests/golden/ holds 18 photos (two per class the shipped model got right
when the golden was made; the photos have no Bag) with the 28x28
input photo_to_input made from each. Regenerate it deliberately when the
preprocessing or the shipped model changes on purpose:
    python -m tools.real_photos --model edge_runtime/shipped/fashion_mnist_int8.tflite --write_golden tests/golden
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED
from edge_runtime import metadata
from edge_runtime.deployed import SHIPPED_MODEL

PHOTOS = SHARED / "real-photos"
GOLDEN = Path(__file__).parent / "golden"
DEPLOYED = SHIPPED_MODEL

pytestmark = pytest.mark.skipif(not (PHOTOS / "labels.csv").is_file(),
                                reason=f"{PHOTOS} is absent (the real-photo set lives beside the checkout)")


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "real_photos.json").read_text()), np.load(GOLDEN / "real_photos.npz")["inputs"]


@pytest.fixture(scope="module")
def inputs(golden):
    from edge_runtime.imageio import read_model_input
    from edge_runtime.photo import DEFAULT_SIZE, photo_to_input
    photos, _ = golden
    return np.stack([read_model_input(PHOTOS / p["file"], photo_to_input, DEFAULT_SIZE) for p in photos["photos"]])


def test_preprocessing_matches_the_golden_inputs(golden, inputs):
    _, expected = golden
    # Tolerance: OpenCV's resize may differ by a grey level between builds and CPUs;
    # a real change to the segmentation moves whole rows of pixels by far more.
    per_photo = np.abs(inputs.astype(int) - expected.astype(int)).mean(axis=(1, 2))
    assert per_photo.max() <= 1.0, per_photo.round(2)


def test_deployed_model_still_gets_them_right(golden, inputs):
    photos, _ = golden
    if not DEPLOYED.is_file():
        pytest.skip("no shipped model")
    flatbuffer = metadata.flatbuffer_part(DEPLOYED.read_bytes())
    assert metadata.sha256(flatbuffer) == photos["model_flatbuffer_sha256"], \
        "the shipped model is not the one the golden labels were recorded with: regenerate them (module docstring)"
    from edge_runtime.classifier import Classifier
    predicted = Classifier(DEPLOYED).predict(inputs).argmax(1)
    assert predicted.tolist() == [p["label"] for p in photos["photos"]]
