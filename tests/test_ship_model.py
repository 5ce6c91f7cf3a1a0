"""`make ship-model` (tools/ship_model.py) on a real tiny conversion: what it writes,
what it refuses, and that a runtime copied elsewhere then finds the shipped model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from edge_runtime import deployed
from edge_runtime.metadata import flatbuffer_part, read_metadata, sha256
from tools import ship_model

ROOT = deployed.Path(__file__).resolve().parents[1]


@pytest.fixture
def conversion(tiny_models, tmp_path):
    """A copy of the tiny conversion's output directory (the report is edited by some tests)."""
    source, _ = tiny_models
    copy = tmp_path / "models"
    shutil.copytree(source, copy)
    return copy


def edit_report(models_dir, change):
    path = models_dir / ship_model.REPORT
    report = json.loads(path.read_text())
    change(report)
    path.write_text(json.dumps(report))


def test_ships_the_model_with_its_gate_figures(conversion, tiny_run, tmp_path, capsys):
    dest = tmp_path / "shipped"
    assert ship_model.main(["--models_dir", str(conversion), "--dest", str(dest)]) == 0
    assert "shipped" in capsys.readouterr().out
    model = dest / deployed.MODEL_FILENAME
    assert model.read_bytes() == (conversion / deployed.MODEL_FILENAME).read_bytes()
    assert json.loads((dest / "fashion_mnist_int8.json").read_text()) == read_metadata(model)
    gate = json.loads((dest / "gate.json").read_text())
    report = json.loads((conversion / ship_model.REPORT).read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert gate["schema"] == ship_model.SCHEMA and gate["size_bytes"] == model.stat().st_size
    assert gate["sha256"] == sha256(model.read_bytes())
    assert gate["flatbuffer_sha256"] == sha256(flatbuffer_part(model.read_bytes())) == rows["int8"]["flatbuffer_sha256"]
    assert gate["int8_test_accuracy"] == rows["int8"]["accuracy"] and gate["float_test_accuracy"] == rows["keras"]["accuracy"]
    assert gate["unknown_threshold"] == read_metadata(model).get("unknown_threshold")
    assert gate["gate"]["passed"] is True and gate["test_images"] == 10000
    checked = gate["checked_when_shipped"]
    assert abs(checked["int8_test_accuracy"] - gate["int8_test_accuracy"]) * 100 <= ship_model.TOLERANCE_PP
    assert gate["run"]["name"] == tiny_run.name and gate["run"]["model"] == "cnn" and gate["run"]["epochs"] == 2
    assert gate["run"]["train_minutes"] is not None and 0 < gate["run"]["float_test_accuracy"] <= 1
    assert not [p for p in dest.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("tamper, message", [
    (lambda r: r.update(passed=False, failures=["int8 top-1 dropped 0.9 pp"]), "gate failed"),
    (lambda r: [v.update(flatbuffer_sha256="0" * 64) for v in r["variants"] if v["variant"] == "int8"],
     "not the int8 model the conversion report measured"),
    (lambda r: [v.update(accuracy=v["accuracy"] - 0.01) for v in r["variants"] if v["variant"] == "int8"],
     "on the test set now"),
])
def test_refuses_a_model_the_gate_did_not_pass_as_it_is(conversion, tmp_path, capsys, tamper, message):
    edit_report(conversion, tamper)
    dest = tmp_path / "shipped"
    assert ship_model.main(["--models_dir", str(conversion), "--dest", str(dest)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not dest.exists()  # nothing half-shipped


def test_no_conversion_is_one_clear_line(tmp_path, capsys):
    assert ship_model.main(["--models_dir", str(tmp_path), "--dest", str(tmp_path / "shipped")]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make train convert" in err
    (tmp_path / deployed.MODEL_FILENAME).write_bytes(b"x")
    assert ship_model.main(["--models_dir", str(tmp_path), "--dest", str(tmp_path / "shipped")]) == 4
    assert "conversion_report.json: not readable" in capsys.readouterr().err


def test_a_runtime_installed_alone_classifies_with_its_shipped_model(conversion, tmp_path):
    """The package copied away from any checkout (as pip installs it), run from a directory
    without models/: it finds the model inside itself, and never imports TensorFlow."""
    package = tmp_path / "site" / "edge_runtime"
    shutil.copytree(ROOT / "edge_runtime", package, ignore=shutil.ignore_patterns("__pycache__", "shipped"))
    ship_model.ship(conversion, package / "shipped")
    import cv2
    import numpy as np
    photo = np.full((240, 200, 3), 225, np.uint8)
    cv2.rectangle(photo, (50, 40), (150, 200), (30, 30, 140), -1)
    work = tmp_path / "work"
    work.mkdir()
    cv2.imwrite(str(work / "photo.jpg"), photo)
    env = {k: v for k, v in os.environ.items() if k not in (deployed.MODEL_ENV_VAR, "PYTHONPATH")}
    env["PYTHONPATH"] = str(package.parent)
    code = ("import runpy, sys; sys.argv = ['edge_runtime', '-v', 'classify', 'photo.jpg']\n"
            "try:\n    runpy.run_module('edge_runtime', run_name='__main__')\n"
            "finally:\n    print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')),"
            " file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("photo.jpg  ") and len(r.stdout.splitlines()) == 1
    assert f"({deployed.FROM_SHIPPED})" in r.stderr and str(package / "shipped") in r.stderr
    assert "HEAVY []" in r.stderr
