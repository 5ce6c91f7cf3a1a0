"""The model shipped inside edge_runtime (edge_runtime/shipped/, refreshed by
`make ship-model`): it is the file its gate.json describes, it loads and
classifies without TensorFlow, it still scores its recorded int8 accuracy on
the 10,000 test images through Classifier.predict, and its threshold is the
Classifier's default. The README's figures for it are checked by test_readme.py."""

from __future__ import annotations

import json

import pytest

from edge_runtime import deployed
from edge_runtime.classifier import Classifier
from edge_runtime.metadata import flatbuffer_part, read_metadata, sha256, sidecar_path
from test_no_tensorflow import HEAVY, loaded, run_python
from tools.ship_model import SCHEMA, TOLERANCE_PP

MODEL = deployed.SHIPPED_MODEL


@pytest.fixture(scope="module")
def gate() -> dict:
    return json.loads(deployed.SHIPPED_GATE.read_text())


def test_the_shipped_files_are_the_ones_gate_json_describes(gate):
    data = MODEL.read_bytes()
    assert gate["schema"] == SCHEMA and gate["model"] == MODEL.name
    assert gate["size_bytes"] == len(data) and gate["sha256"] == sha256(data)
    assert gate["flatbuffer_sha256"] == sha256(flatbuffer_part(data))
    meta = read_metadata(MODEL)
    assert json.loads(sidecar_path(MODEL).read_text()) == meta  # sidecar and embedded copy agree
    assert meta["variant"] == "int8" and meta["labels"] == gate["labels"] and len(meta["labels"]) == 10
    assert gate["unknown_threshold"] == meta.get("unknown_threshold")
    assert gate["gate"]["passed"] is True and gate["test_images"] == 10000
    # the gate the converter applies: int8 within 0.5 pp of its float model
    assert abs(gate["int8_test_accuracy"] - gate["float_test_accuracy"]) * 100 <= gate["gate"]["max_drop_pp"]


def test_it_is_the_model_commands_fall_back_to(tmp_path, monkeypatch):
    monkeypatch.setattr(deployed, "__file__", str(tmp_path / "pkg" / "edge_runtime" / "deployed.py"))
    assert deployed.find_model(None, {}, tmp_path) == deployed.ModelChoice(MODEL, deployed.FROM_SHIPPED)


def test_its_threshold_is_the_classifiers_default(gate):
    assert Classifier(MODEL).threshold == gate["unknown_threshold"] == read_metadata(MODEL)["unknown_threshold"]


def test_it_scores_its_recorded_accuracy_on_the_test_set(gate, fashion):
    clf = Classifier(MODEL, batch_size=256)
    accuracy = float((clf.predict(fashion.test_images).argmax(1) == fashion.test_labels).mean())
    # TOLERANCE_PP: another interpreter build may move a few of the 10,000 images (tools/ship_model.py)
    assert abs(accuracy - gate["int8_test_accuracy"]) * 100 <= TOLERANCE_PP, (accuracy, gate["int8_test_accuracy"])
    assert accuracy >= 0.90  # a real model, not a fixture


def test_it_classifies_a_photo_without_tensorflow(tmp_path):
    import cv2
    import numpy as np
    photo = np.full((320, 240, 3), 225, np.uint8)  # a dark trouser-like shape on a light floor
    cv2.rectangle(photo, (80, 30), (115, 290), (60, 40, 30), -1)
    cv2.rectangle(photo, (125, 30), (160, 290), (60, 40, 30), -1)
    cv2.rectangle(photo, (80, 30), (160, 80), (60, 40, 30), -1)
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), photo)
    out = run_python(f"""
import sys, json
from edge_runtime import Classifier
from edge_runtime.imageio import read_image
clf = Classifier({str(MODEL)!r})
result = clf.classify(read_image({str(path)!r}))
print(json.dumps({{"heavy": {loaded(HEAVY)}, "interpreter": clf.backend.package, "label": result.best.label}}))
""")
    assert out["heavy"] == [] and out["interpreter"] != "tensorflow"
    assert out["label"] == "Trouser"
