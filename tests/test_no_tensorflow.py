"""The device path never imports TensorFlow or Keras (a Pi has neither), and
importing the package doesn't import OpenCV either (`doctor` must work when
OpenCV is broken)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "tf_keras")


def run_python(code: str) -> dict:
    """Run `code` in a fresh interpreter (this one has TensorFlow loaded by other tests); it prints JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def loaded(names) -> str:
    return f"sorted(m for m in sys.modules if m.split('.')[0] in {tuple(names)!r})"


def test_package_import_loads_neither_tensorflow_nor_opencv():
    out = run_python(f"import sys, json, edge_runtime; print(json.dumps({loaded(HEAVY + ('cv2',))}))")
    assert out == []


def test_classifying_a_photo_file_needs_no_tensorflow(tiny_int8_model, tmp_path):
    photo = np.full((300, 240, 3), 235, np.uint8)
    cv2.rectangle(photo, (60, 40), (180, 260), (60, 40, 30), -1)
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), photo)
    code = f"""
import sys, json
from edge_runtime import Classifier
from edge_runtime.imageio import read_image
clf = Classifier({str(tiny_int8_model)!r})
result = clf.classify(read_image({str(path)!r}))
print(json.dumps({{"heavy": {loaded(HEAVY)}, "interpreter": clf.backend.package, "result": result.to_dict(),
                  "cv2": "cv2" in sys.modules}}))
"""
    out = run_python(code)
    assert out["heavy"] == []
    assert out["interpreter"] != "tensorflow"
    assert out["cv2"]  # the photo path did use OpenCV
    assert len(out["result"]["top_k"]) == 3


def test_classify_command_needs_no_tensorflow(tiny_int8_model, tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.full((50, 40, 3), (30, 200, 90), np.uint8))
    code = f"""
import sys, json, contextlib, io
from edge_runtime import cli
with contextlib.redirect_stdout(io.StringIO()):
    status = cli.main(["classify", "--json", "--model", {str(tiny_int8_model)!r}, {str(path)!r}])
print(json.dumps({{"status": status, "heavy": {loaded(HEAVY)}}}))
"""
    out = run_python(code)
    assert out == {"status": 0, "heavy": []}
