"""`doctor` on faked devices: a healthy 64-bit Pi, 32-bit Pi OS with numpy 2,
no interpreter, no model, no display, picamera2 present or broken. Then once
on this machine, through the real command line."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from edge_runtime import cli, doctor, metadata
from edge_runtime.contract import CLASS_NAMES, CONTRACT
from edge_runtime.doctor import FAIL, INFO, OK, WARN, Environment
from edge_runtime.errors import ModelError
from edge_runtime.interpreter import Probe

GTK_BUILD = "  GUI:                           GTK3\n    GTK+:                        YES (ver 3.24.38)\n"
HEADLESS_BUILD = "  GUI:                           NONE\n"


@pytest.fixture
def model(tmp_path) -> Path:
    """A file with real metadata; the interpreter never sees it (load_model is faked)."""
    meta = {"format": metadata.FORMAT, "variant": "int8", "labels": list(CLASS_NAMES),
            "input": {"shape": [1, 28, 28, 1], "dtype": "uint8"}, "output": {"shape": [1, 10], "dtype": "uint8"},
            "preprocessing": {"contract": CONTRACT}, "accuracy": {"accuracy": 0.9123}}
    path = tmp_path / "fashion_mnist_int8.tflite"
    path.write_bytes(metadata.embed(b"not really a flatbuffer", meta))
    return path


def importer(modules: dict):
    """An import_module that knows only `modules` (a value that is an exception is raised)."""
    def import_module(name):
        if name not in modules:
            raise ModuleNotFoundError(f"No module named '{name}'")
        if isinstance(modules[name], BaseException):
            raise modules[name]
        return modules[name]
    return import_module


def fake_cv2(build=HEADLESS_BUILD):
    return types.SimpleNamespace(__version__="4.10.0", __file__="/venv/site-packages/cv2/__init__.py",
                                 getBuildInformation=lambda: build)


def picamera2_module(*models):
    cameras = [{"Model": m, "Id": f"/base/soc/i2c0mux/i2c@1/{m}@1a", "Num": i} for i, m in enumerate(models)]
    return types.SimpleNamespace(Picamera2=types.SimpleNamespace(global_camera_info=lambda: cameras))


LITERT = Probe("ai-edge-litert", True, "2.3.0")
NO_LITERT = Probe("ai-edge-litert", False, "not installed")
NO_TFLITE = Probe("tflite-runtime", False, "not installed")
NO_TF = Probe("tensorflow", False, "not tried (last resort, heavy)")


def pi(model: Path, **overrides) -> Environment:
    """A healthy Raspberry Pi 5 with 64-bit Raspberry Pi OS, over SSH, a USB webcam plugged in."""
    settings = dict(
        python_version="3.11.2", python_executable="/home/pi/fashion-edge-pi/.venv/bin/python",
        machine="aarch64", pointer_bits=64, environ={},
        import_module=importer({"numpy": types.SimpleNamespace(__version__="2.2.6"), "cv2": fake_cv2()}),
        dist_version=lambda d: {"opencv-python-headless": "4.10.0.84"}.get(d),
        video_devices=lambda: [("/dev/video0", "HD Webcam C270"), ("/dev/video1", "HD Webcam C270"),
                               ("/dev/video19", "pispbe"), ("/dev/video20", "rpi-hevc-dec")],
        probes=lambda: [LITERT, NO_TFLITE, NO_TF],
        model_path=model, load_model=lambda p: "loads with ai-edge-litert 2.3.0, 0.41 ms per image")
    settings.update(overrides)
    return Environment(**settings)


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_a_healthy_pi_is_ready(model):
    checks = doctor.run_checks(pi(model))
    c = by_name(checks)
    assert doctor.exit_status(checks) == 0
    assert c["architecture"].status == OK and c["architecture"].detail.startswith("aarch64")
    assert c["interpreter"].status == OK and "ai-edge-litert 2.3.0" in c["interpreter"].detail
    assert c["interpreter: tflite-runtime"].status == INFO  # reported, not a problem
    assert c["model"].status == OK and "test accuracy 0.9123" in c["model"].detail and "0.41 ms" in c["model"].detail
    assert "/dev/video0 (HD Webcam C270)" in c["camera: V4L2"].detail
    assert "pispbe" not in c["camera: V4L2"].detail  # the Pi's own ISP/codec nodes aren't cameras
    assert c["cameras"].status == OK
    assert c["display"].status == INFO and "headless" in c["display"].detail
    assert doctor.format_report(checks).endswith("ready to classify")


def test_32_bit_pi_os_with_numpy_2(model):
    # Raspberry Pi OS 32-bit on a Pi 4: a 64-bit kernel (uname: aarch64) under a 32-bit Python.
    tflite_numpy = Probe("tflite-runtime", False, "built against numpy 1, fails with numpy 2 "
                         "(AttributeError: _ARRAY_API not found); use ai-edge-litert, or numpy<2")
    env = pi(model, machine="aarch64", pointer_bits=32, probes=lambda: [NO_LITERT, tflite_numpy, NO_TF],
             import_module=importer({"numpy": types.SimpleNamespace(__version__="2.0.2"), "cv2": fake_cv2()}))
    checks = doctor.run_checks(env)
    c = by_name(checks)
    assert env.arch == "armv7l"
    assert "armv7l (32-bit userland on a 64-bit aarch64 kernel)" in c["architecture"].detail
    assert c["numpy"].status == FAIL and c["numpy"].fix == "pip install 'numpy<2'"
    assert c["interpreter"].status == FAIL
    assert "32-bit OS: ai-edge-litert has no armv7l wheels; install tflite-runtime with numpy<2" in c["interpreter"].fix
    assert "no wheels for 32-bit ARM" in c["interpreter: ai-edge-litert"].detail
    assert "numpy 1" in c["interpreter: tflite-runtime"].detail
    assert c["model"].status == WARN and "not loaded" in c["model"].detail
    assert doctor.exit_status(checks) == 1
    report = doctor.format_report(checks)
    assert "fix: pip install 'numpy<2'" in report and report.endswith("(see the fixes above)")


def test_no_interpreter_on_a_64_bit_machine(model):
    checks = doctor.run_checks(pi(model, machine="x86_64", probes=lambda: [NO_LITERT, NO_TFLITE, NO_TF]))
    c = by_name(checks)
    assert c["interpreter"].status == FAIL and c["interpreter"].fix == "pip install ai-edge-litert"
    assert doctor.exit_status(checks) == 1


def test_no_model_or_a_bad_one(model, tmp_path):
    c = by_name(doctor.run_checks(pi(model, model_path=tmp_path / "missing.tflite")))
    assert c["model"].status == FAIL and "no model at" in c["model"].detail
    assert "make train convert" in c["model"].fix and "EDGE_MODEL" in c["model"].fix

    bare = tmp_path / "bare.tflite"
    bare.write_bytes(b"a model without metadata")
    c = by_name(doctor.run_checks(pi(model, model_path=bare)))
    assert c["model"].status == FAIL and "no embedded metadata" in c["model"].detail

    def broken(path):
        raise ModelError(f"{path}: not a loadable TFLite model (flatbuffer verification failed)")
    c = by_name(doctor.run_checks(pi(model, load_model=broken)))
    assert c["model"].status == FAIL and "not a loadable" in c["model"].detail


@pytest.mark.parametrize("accuracy", [0.9, {"accuracy": "high"}])
def test_malformed_metadata_is_a_fail_row(model, tmp_path, accuracy):
    edited = tmp_path / "edited.tflite"
    edited.write_bytes(metadata.embed(b"not really a flatbuffer", {**metadata.read_embedded(model),
                                                                    "accuracy": accuracy}))
    c = by_name(doctor.run_checks(pi(model, model_path=edited)))
    assert c["model"].status == FAIL and "metadata field 'accuracy'" in c["model"].detail


def test_a_model_that_breaks_the_interpreter_is_a_fail_row(model):
    def crashing(path):
        raise RuntimeError("tensorflow/lite/kernels/conv.cc:351 input->dims->size != 4 (3 != 4)\nNode 0 failed")
    c = by_name(doctor.run_checks(pi(model, load_model=crashing)))
    assert c["model"].status == FAIL and c["model"].detail.endswith("RuntimeError: tensorflow/lite/kernels/"
                                                                     "conv.cc:351 input->dims->size != 4 (3 != 4)")


def test_display_states(model):
    no_gui = by_name(doctor.run_checks(pi(model, environ={"DISPLAY": ":0"})))["display"]
    assert no_gui.status == WARN and "no GUI support" in no_gui.detail and "pip install opencv-python" in no_gui.fix
    gui_env = pi(model, environ={"WAYLAND_DISPLAY": "wayland-0"},
                 import_module=importer({"numpy": types.SimpleNamespace(__version__="1.24.2"),
                                         "cv2": fake_cv2(GTK_BUILD)}))
    gui = by_name(doctor.run_checks(gui_env))["display"]
    assert gui.status == OK and "GTK3" in gui.detail
    checks = doctor.run_checks(pi(model, environ={}))
    assert by_name(checks)["display"].status == INFO and doctor.exit_status(checks) == 0  # not needed to classify


def test_picamera2_present_broken_or_absent(model):
    modules = {"numpy": types.SimpleNamespace(__version__="1.24.2"), "cv2": fake_cv2(GTK_BUILD)}
    env = pi(model, video_devices=lambda: [("/dev/video0", "unicam"), ("/dev/video1", "bcm2835-isp")],
             import_module=importer({**modules, "picamera2": picamera2_module("imx708")}))
    c = by_name(doctor.run_checks(env))
    assert c["camera: picamera2"].status == OK and "camera 0: imx708" in c["camera: picamera2"].detail
    assert c["cameras"].status == OK and "csi" in c["cameras"].detail
    assert "no USB/V4L2 cameras" in c["camera: V4L2"].detail  # unicam is the CSI receiver, not a webcam

    abi = ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96, got 88")
    c = by_name(doctor.run_checks(pi(model, import_module=importer({**modules, "picamera2": abi}))))
    assert c["camera: picamera2"].status == WARN and "apt's numpy" in c["camera: picamera2"].fix

    c = by_name(doctor.run_checks(pi(model, video_devices=lambda: [])))
    assert c["camera: picamera2"].status == INFO and "not installed" in c["camera: picamera2"].detail
    assert c["cameras"].status == WARN and "/dev/video" in c["cameras"].fix


def test_opencv_problems(model):
    both = by_name(doctor.run_checks(pi(model, dist_version=lambda d: "4.10.0.84" if d in (
        "opencv-python", "opencv-python-headless") else None)))["opencv"]
    assert both.status == WARN and "pip uninstall -y opencv-python opencv-python-headless" in both.fix
    libgl = ImportError("libGL.so.1: cannot open shared object file: No such file or directory")
    broken = pi(model, import_module=importer({"numpy": types.SimpleNamespace(__version__="2.2.6"), "cv2": libgl}))
    checks = doctor.run_checks(broken)
    assert by_name(checks)["opencv"].status == FAIL and "libgl1" in by_name(checks)["opencv"].fix
    assert doctor.exit_status(checks) == 1


def test_every_problem_has_a_fix(model, tmp_path):
    env = pi(model, machine="armv6l", pointer_bits=32, probes=lambda: [NO_LITERT, NO_TFLITE, NO_TF],
             model_path=tmp_path / "none.tflite", video_devices=lambda: [], environ={"DISPLAY": ":0"})
    for check in doctor.run_checks(env):
        if check.status in (FAIL, WARN):
            assert check.fix, check


def test_on_this_machine_through_the_cli(tiny_int8_model, capsys):
    status = cli.main(["doctor", "--json", "--model", str(tiny_int8_model)])
    report = json.loads(capsys.readouterr().out)
    names = {c["name"]: c for c in report["checks"]}
    assert status == 0 and report["ready"] is True
    assert names["interpreter"]["status"] == OK and names["model"]["status"] == OK
    assert {"python", "architecture", "numpy", "opencv", "cameras", "display"} <= set(names)
