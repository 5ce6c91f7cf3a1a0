"""The Raspberry Pi bundle: what's in it, how it fails, and a real install.

`test_bundle_installs_and_classifies` unpacks the bundle, runs its
install.sh into a fresh virtualenv (packages from PyPI, as on a device;
pip's cache makes repeats fast) and classifies an image and a few video
frames with it, from the unpacked directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import pytest

from tools import pi_bundle

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tiny_int8_model, tmp_path_factory) -> Path:
    return pi_bundle.build(tiny_int8_model, tmp_path_factory.mktemp("dist") / "fashion-edge-pi.tar.gz")


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_bundle_contents(bundle, tiny_int8_model):
    names = members(bundle)
    prefix = pi_bundle.PREFIX + "/"
    assert all(n.startswith(prefix) for n in names)
    inside = {n[len(prefix):]: m for n, m in names.items()}
    for required in ("edge_runtime/pyproject.toml", "edge_runtime/__init__.py", "edge_runtime/classifier.py",
                     "edge_runtime/photo.py", "edge_runtime/webcam.py", "edge_runtime/capture.py",
                     "edge_runtime/doctor.py", "models/fashion_mnist_int8.tflite", "models/fashion_mnist_int8.json",
                     "requirements-device.txt", "requirements-device-armv7l.txt", "install.sh", "run",
                     "fashion-edge-webcam.service", "README.md", "BUILD.json"):
        assert required in inside, required
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in inside)
    assert inside["install.sh"].mode == 0o755 and inside["run"].mode == 0o755
    with tarfile.open(bundle) as tar:
        model = tar.extractfile(prefix + "models/fashion_mnist_int8.tflite").read()
        build = json.loads(tar.extractfile(prefix + "BUILD.json").read())
        sources = {n: tar.extractfile(n).read().decode() for n in names if n.endswith(".py")}
    assert model == tiny_int8_model.read_bytes()
    assert build["model"]["sha256"] == hashlib.sha256(model).hexdigest() and len(build["model"]["labels"]) == 10
    for name, text in sources.items():  # the device never needs TensorFlow
        assert not re.search(r"^\s*(import|from)\s+tensorflow", text, re.M), name


def test_missing_model_is_one_clear_error(tmp_path, capsys):
    output = tmp_path / "pi.tar.gz"
    assert pi_bundle.main(["--model", str(tmp_path / "nope.tflite"), "--output", str(output)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make train convert" in err
    assert not output.exists()


def test_a_failed_build_leaves_the_previous_bundle(bundle, tiny_int8_model, tmp_path, monkeypatch):
    output = tmp_path / "pi.tar.gz"
    pi_bundle.build(tiny_int8_model, output)
    before = output.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tarfile.TarFile, "addfile", broken)
    with pytest.raises(OSError):
        pi_bundle.build(tiny_int8_model, output)
    assert output.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pi.tar.gz"]  # no temporary left behind


def test_scripts_and_unit():
    for script in ("install.sh", "run"):
        subprocess.run(["bash", "-n", str(ROOT / "deploy" / script)], check=True)
    unit = (ROOT / "deploy" / "fashion-edge-webcam.service").read_text()
    assert re.search(r"^ExecStart=.*run\"? webcam --headless", unit, re.M)
    assert "Restart=on-failure" in unit and "@DIR@" in unit and "WantedBy=multi-user.target" in unit
    reqs = (ROOT / "deploy" / "requirements-device.txt").read_text()
    assert "ai-edge-litert" in reqs and "tensorflow" not in reqs.replace("TensorFlow", "")
    armv7l = (ROOT / "deploy" / "requirements-device-armv7l.txt").read_text()
    assert "tflite-runtime==2.14" in armv7l and "numpy>=1.23,<2" in armv7l


def clean_env() -> dict:
    """The test's own environment minus anything pointing at this project's Python setup."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EDGE_MODEL", "DISPLAY", "WAYLAND_DISPLAY")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_bundle_installs_and_classifies(bundle, tiny_int8_model, fashion, tmp_path):
    with tarfile.open(bundle) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12+, and 3.11.4+: refuse odd members
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)
    home = tmp_path / pi_bundle.PREFIX
    env = clean_env()
    env["PYTHON"] = sys.executable  # install.sh makes its venv from the base of this interpreter

    t0 = time.monotonic()
    install = subprocess.run(["./install.sh", "--pip", "--headless"], cwd=home, env=env, capture_output=True,
                             text=True, timeout=1200)
    install_s = time.monotonic() - t0
    print(f"install.sh took {install_s:.0f} s")  # shown with pytest -s; fresh venv, pip cache warm or not
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert "ready to classify" in install.stdout  # install.sh ends with `run doctor`

    python = home / ".venv" / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True,
                               text=True, check=True, env=env)
    packages = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"fashion-edge-runtime", "ai-edge-litert", "numpy", "opencv-python-headless"} <= packages
    assert not {"tensorflow", "tensorflow-cpu", "opencv-python", "keras"} & packages

    # An image classified from the unpacked directory, with the bundle's model...
    image = tmp_path / "garment.png"
    frame = 255 - cv2.resize(fashion.test_images[0], (224, 224), interpolation=cv2.INTER_CUBIC)
    frame = cv2.copyMakeBorder(frame, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    cv2.imwrite(str(image), frame)
    done = subprocess.run(["./run", "classify", str(image), "--json"], cwd=home, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.splitlines()[-1])
    # ...says what this checkout says with the same model.
    from edge_runtime.classifier import Classifier
    expected = Classifier(tiny_int8_model, threshold=0.5).classify(cv2.imread(str(image)))
    assert record["top_k"][0]["index"] == expected.best.index
    assert record["score"] == pytest.approx(expected.best.score, abs=0.01)

    # The webcam command from the bundle, headless, on a short video.
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for _ in range(3):
        writer.write(cv2.cvtColor(cv2.resize(frame, (640, 480)), cv2.COLOR_GRAY2BGR))
    writer.release()
    cam = subprocess.run(["./run", "webcam", str(video)], cwd=home, env=env, capture_output=True, text=True,
                         timeout=120)
    assert cam.returncode == 0, cam.stderr
    assert len([line for line in cam.stdout.splitlines() if line.startswith("{")]) == 3

    # The package's own dependencies (pip install ./edge_runtime) don't pull in TensorFlow either.
    report = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", "-", str(home / "edge_runtime")], capture_output=True, text=True,
                            env=env, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    resolved = {i["metadata"]["name"].lower() for i in json.loads(report.stdout)["install"]}
    assert {"numpy", "opencv-python-headless", "ai-edge-litert"} <= resolved
    assert not {n for n in resolved if n.startswith(("tensorflow", "keras"))}


def test_without_models_the_bundle_takes_the_shipped_model(tiny_int8_model, tmp_path):
    """A fresh clone has no models/: the bundle then carries the model shipped in edge_runtime/."""
    root = tmp_path / "clone"
    shutil.copytree(ROOT / "edge_runtime", root / "edge_runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "shipped"))
    shutil.copytree(ROOT / "deploy", root / "deploy")
    shipped = root / "edge_runtime" / "shipped"
    shipped.mkdir()
    shutil.copy(tiny_int8_model, shipped / "fashion_mnist_int8.tflite")
    output = pi_bundle.build(None, tmp_path / "pi.tar.gz", root=root)
    prefix = pi_bundle.PREFIX + "/"
    with tarfile.open(output) as tar:
        build = json.loads(tar.extractfile(prefix + "BUILD.json").read())
        bundled = tar.extractfile(prefix + "models/fashion_mnist_int8.tflite").read()
        inside = tar.extractfile(prefix + "edge_runtime/shipped/fashion_mnist_int8.tflite").read()
    assert build["model"]["from"] == pi_bundle.FROM_SHIPPED
    assert bundled == inside == tiny_int8_model.read_bytes()
