"""The emulated Raspberry Pi check: `make pi-check` (tools/pi_check.sh, tools/pi_check.py).

The comparison rules are tested on hand-made results (fast); then the whole
check runs for real: an arm64 Debian root filesystem, the runtime's aarch64
wheels, qemu-aarch64-static -cpu cortex-a72, on a small trained int8 model
(`PI_MODEL=path` runs it on another model instead, e.g. the deployed one).

Without qemu-user-static the end-to-end test is skipped on a developer's
machine and fails in CI (CI is set): CI installs it, so there a missing
emulator is a broken setup, not a reason to pass without checking.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools import pi_check

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "pi-check" / "aarch64"
LABELS = [3, 1, 7]


# -- hand-made results for the comparison rules ------------------------------------------------

def _result(machine="x86_64", raw=None, ops=("CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE")):
    raw = raw if raw is not None else [[10, 200, 3, 0, 0, 0, 0, 42, 0, 0],
                                      [0, 250, 0, 0, 0, 0, 0, 5, 0, 0],
                                      [0, 0, 0, 0, 0, 0, 0, 255, 0, 0]]
    predicted = [pi_check._argmax(r) for r in raw]
    return {
        "schema": pi_check.SCHEMA, "machine": machine, "python": "3.11.2",
        "packages": {"numpy": "2.4.6", "interpreter": "ai-edge-litert 2.3.0"},
        "checks": [{"name": "machine", "ok": True, "detail": "aarch64"}],
        "model": {"sha256": "ab" * 32, "ops": list(ops), "output_scale": 1 / 256},
        "test_set": {"count": len(raw), "images_sha256": "cd" * 32, "labels": LABELS, "raw_dtype": "uint8",
                     "raw": raw, "predicted": predicted,
                     "accuracy": float(np.mean(np.array(predicted) == np.array(LABELS)))},
        "reference": {"status": "ok", "raw": copy.deepcopy(raw)},
        "photos": {"status": "ok", "items": [_photo("synthetic", "a"), _photo("photo", "b.jpg")]},
        "doctor": {"status": "ok", "detail": "ready; architecture aarch64"},
        "timings": {"total": 1.0},
    }


def _photo(kind, name, model_input=None, raw=None):
    model_input = model_input if model_input is not None else bytes(range(256)) * 3 + bytes(16)
    raw = raw or [0, 0, 200, 55, 0, 0, 0, 0, 0, 0]
    return {"kind": kind, "name": name, "shape": [40, 30, 3], "image_sha256": "ef" * 32,
            "model_input": model_input.hex(), "raw": raw, "label": f"class {pi_check._argmax(raw)}", "score": 0.5}


def _compare(host, pi, strict=False):
    out = io.StringIO()
    code = pi_check.compare(host, pi, out=out, strict=strict)
    return code, out.getvalue()


def test_identical_results_pass():
    code, text = _compare(_result(), _result("aarch64"))
    assert code == 0, text
    assert "bit-identical" in text and "pi-check passed" in text


def test_a_different_output_fails_with_a_diff():
    pi = _result("aarch64")
    pi["test_set"]["raw"][1] = [0, 247, 0, 0, 0, 0, 0, 8, 0, 0]
    code, text = _compare(_result(), pi)
    assert code == 1
    assert "FAIL test set: 1 of 3 images" in text
    assert "image    1" in text and "247" in text and "max |diff| 3" in text


def test_one_step_softmax_difference_is_tolerated_only_where_explained():
    pi = _result("aarch64")
    pi["test_set"]["raw"][0] = [11, 200, 3, 0, 0, 0, 0, 41, 0, 0]
    code, text = _compare(_result(), pi)
    assert code == 0, text
    assert "one step apart" in text and "TFLITE_SOFTMAX_USE_UINT16_LUT" in text
    assert _compare(_result(), pi, strict=True)[0] == 1  # PI_STRICT=1
    no_softmax = _result(ops=("CONV_2D", "FULLY_CONNECTED"))
    assert _compare(no_softmax, pi)[0] == 1  # nothing explains it
    not_arm64 = copy.deepcopy(pi)
    not_arm64["machine"] = "armv7l"
    assert _compare(_result(), not_arm64)[0] == 1


def test_a_different_label_fails_unless_the_host_had_a_near_tie():
    host = _result(raw=[[0, 0, 0, 100, 99, 0, 0, 0, 0, 0], [0, 250, 0, 0, 0, 0, 0, 5, 0, 0],
                        [0, 0, 0, 0, 0, 0, 0, 255, 0, 0]])
    pi = copy.deepcopy(host)
    pi["machine"] = "aarch64"
    pi["test_set"]["raw"][0] = [0, 0, 0, 99, 100, 0, 0, 0, 0, 0]  # one step each way: a near-tie
    pi["test_set"]["predicted"][0] = 4
    pi["reference"] = copy.deepcopy(host["reference"])
    code, text = _compare(host, pi)
    assert code == 0, text
    assert "1 near-ties" in text
    pi["test_set"]["raw"][1] = [0, 5, 0, 0, 0, 0, 0, 250, 0, 0]  # a confident label changed
    pi["test_set"]["predicted"][1] = 7
    code, text = _compare(host, pi)
    assert code == 1 and "a different label" in text


def test_reference_kernels_must_agree_exactly():
    pi = _result("aarch64")
    pi["reference"]["raw"][2] = [0, 0, 0, 0, 0, 0, 0, 254, 1, 0]
    code, text = _compare(_result(), pi)
    assert code == 1 and "FAIL reference kernels: 1 of 3" in text


def test_different_test_images_fail():
    pi = _result("aarch64")
    pi["test_set"]["images_sha256"] = "00" * 32
    code, text = _compare(_result(), pi)
    assert code == 1 and "read different images" in text


def test_photo_rules():
    base = bytes(range(256)) * 3 + bytes(16)
    near = bytearray(base)
    near[5] += 1
    near[300] -= 2
    far = bytearray(base)  # a crop that went the other way: many pixels differ
    for i in range(0, 400, 10):
        far[i] = 0

    def with_photo(item):
        r = _result("aarch64")
        r["photos"]["items"][1] = item
        return r

    # Rounding: a few pixels, a few grey levels, the same label -> a note.
    code, text = _compare(_result(), with_photo(_photo("photo", "b.jpg", bytes(near))))
    assert code == 0, text
    assert "model input differs in 2 of 784 pixels, by up to 2 grey levels, same label" in text
    # Much more than rounding but the same label -> passes, reported as such; PI_STRICT=1 fails it.
    code, text = _compare(_result(), with_photo(_photo("photo", "b.jpg", bytes(far))))
    assert code == 0, text
    assert "differ by more than rounding" in text
    assert _compare(_result(), with_photo(_photo("photo", "b.jpg", bytes(far))), strict=True)[0] == 1
    # A different input and a confidently different label -> fails.
    flipped = _photo("photo", "b.jpg", bytes(far), raw=[0, 0, 55, 200, 0, 0, 0, 0, 0, 0])
    code, text = _compare(_result(), with_photo(flipped))
    assert code == 1 and "different label" in text and "0.57 surer" in text
    # ... unless the host itself was torn between the two labels.
    host = _result()
    host["photos"]["items"][1] = _photo("photo", "b.jpg", raw=[0, 0, 100, 90, 0, 0, 0, 0, 0, 0])
    torn = _photo("photo", "b.jpg", bytes(far), raw=[0, 0, 90, 100, 0, 0, 0, 0, 0, 0])
    code, text = _compare(host, with_photo(torn))
    assert code == 0 and "near-tie" in text, text
    # The same input and a confidently different output -> fails.
    code, text = _compare(_result(), with_photo(_photo("photo", "b.jpg", raw=[0, 0, 50, 205, 0, 0, 0, 0, 0, 0])))
    assert code == 1 and "same 28x28 model input, different output" in text
    # Decoding differs -> fails.
    item = _photo("photo", "b.jpg")
    item["image_sha256"] = "00" * 32
    code, text = _compare(_result(), with_photo(item))
    assert code == 1 and "decoded pixels differ" in text
    # A photo the Pi never classified -> fails.
    pi = _result("aarch64")
    del pi["photos"]["items"][1]
    assert _compare(_result(), pi)[0] == 1


def test_photos_skipped_on_one_side_only_fail():
    pi = _result("aarch64")
    pi["photos"] = {"status": "skipped", "detail": "no edge_runtime.photo", "items": []}
    code, text = _compare(_result(), pi)
    assert code == 1 and "photos not compared" in text


def test_doctor_and_checks():
    pi = _result("aarch64")
    pi["doctor"] = {"status": "failed", "detail": "exit status 1", "checks": ["FAIL model: broken"]}
    code, text = _compare(_result(), pi)
    assert code == 1 and "FAIL python -m edge_runtime doctor" in text and "FAIL model: broken" in text
    pi = _result("aarch64")
    pi["checks"].append({"name": "tensorflow not installed", "ok": False, "detail": "importable from /x"})
    code, text = _compare(_result(), pi)
    assert code == 1 and "FAIL pi check tensorflow not installed" in text


def _peers(probabilities, names=("float32", "int8_qdq_s8s8")):
    return {"status": "ok", "detail": "onnxruntime 1.32.0", "onnxruntime": "1.32.0",
            "models": {n: {"status": "ok", "probabilities": copy.deepcopy(probabilities),
                           "predicted": [pi_check._argmax(p) for p in probabilities]} for n in names}}


def test_peers_agreement_is_reported_and_never_fails():
    host, pi = _result(), _result("aarch64")
    litert = [[q / 256 for q in row] for row in host["test_set"]["raw"]]  # output scale 1/256, zero point 0
    host["peers"] = _peers(litert)
    pi["peers"] = _peers(litert)
    pi["peers"]["models"]["int8_qdq_s8s8"]["probabilities"][1] = [0, 0.1, 0, 0, 0, 0, 0, 0.9, 0, 0]
    code, text = _compare(host, pi)
    assert code == 0, text
    assert "info peers: ONNX Runtime 1.32.0 on the Pi, 1.32.0 on the host, 3 test images" in text
    assert "float32                pi vs host: top-1 3/3, max |diff| 0; vs LiteRT on the Pi: top-1 3/3" in text
    assert "int8_qdq_s8s8          pi vs host: top-1 2/3, max |diff| 0.88" in text
    # Not installable on the Pi (no wheel): a note with the reason, still no failure.
    pi["peers"] = {"status": "skipped", "detail": "no onnxruntime==1.32.0 for Python 3.11 on armv7l from PyPI"}
    code, text = _compare(host, pi)
    assert code == 0 and "note peers (ONNX Runtime) not compared: host onnxruntime 1.32.0; pi no onnxruntime" in text
    # One model failing on one side: a note naming it.
    pi["peers"] = _peers(litert)
    pi["peers"]["models"]["float32"] = {"status": "failed", "detail": "RuntimeError: boom"}
    code, text = _compare(host, pi)
    assert code == 0 and "note peer float32: host ok; pi failed RuntimeError: boom" in text


def test_synthetic_photos_are_deterministic_and_varied():
    from edge_runtime.synthetic import synthetic_photos
    first, second = synthetic_photos(), synthetic_photos()
    assert [n for n, _ in first] == [n for n, _ in second]
    for (name, a), (_, b) in zip(first, second):
        assert a.dtype == np.uint8 and np.array_equal(a, b), name
    shapes = {a.shape for _, a in first}
    assert (28, 28) in shapes and any(len(s) == 3 and s[2] == 4 for s in shapes)  # grey 28x28 and BGRA
    assert len({a.tobytes() for _, a in first}) == len(first)


# -- the real runs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(request):
    if os.environ.get("PI_MODEL"):
        return Path(os.environ["PI_MODEL"]).resolve()
    return request.getfixturevalue("tiny_int8_model")


@pytest.mark.slow
def test_run_on_this_machine_records_raw_outputs(model, tmp_path, data_dir):
    from edge_runtime import Classifier
    from edge_runtime.classifier import dequantize
    out = tmp_path / "host.json"
    assert pi_check.main(["run", "--model", str(model), "--out", str(out), "--count", "20",
                          "--data_dir", str(data_dir)]) == 0
    result = json.loads(out.read_text())
    from edge_runtime import dataset
    images = dataset.read_idx(dataset.file_in(data_dir, dataset.FILES["test_images"]),
                              dataset.FILES["test_images"])[:20]
    clf = Classifier(model)
    raw = np.array(result["test_set"]["raw"])
    assert raw.shape == (20, len(clf.labels))
    np.testing.assert_array_equal(dequantize(raw, clf.output.scale, clf.output.zero_point), clf.predict(images))
    assert result["reference"]["status"] == "ok" and len(result["reference"]["raw"]) == 20
    assert not list(tmp_path.glob(".*partial*"))  # written atomically
    assert pi_check.compare(result, result, out=io.StringIO()) == 0


def _run_pi_check(env_extra, timeout=1200):
    env = dict(os.environ, PY=sys.executable, **env_extra)
    return subprocess.run(["bash", str(ROOT / "tools" / "pi_check.sh")], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("env, message", [
    ({"PI_MODEL": "/nonexistent/model.tflite"}, "model /nonexistent/model.tflite not found"),
    ({"PI_ARCH": "sparc"}, "PI_ARCH=sparc is not supported"),
])
def test_setting_errors_are_one_line(env, message):
    result = _run_pi_check(env, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pi-check: error:")
    assert message in lines[0] or "qemu-aarch64-static not found" in lines[0]


@pytest.mark.slow
def test_pi_check_end_to_end_under_emulation(model, request):
    missing = [tool for tool in ("qemu-aarch64-static", "apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        why = f"{', '.join(missing)} not found: apt-get install qemu-user-static (Debian/Ubuntu)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI installs it, so the emulated Raspberry Pi check must run there")
        pytest.skip(why)

    env = {"PI_MODEL": str(model)}
    if not os.environ.get("PI_MODEL"):
        env["PI_PEERS_RUN_DIR"] = str(request.getfixturevalue("tiny_run"))  # the tiny model's Keras file
    result = _run_pi_check(env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "pi-check passed: aarch64 under emulation matches x86_64" in result.stdout \
        or "pi-check passed: aarch64 under emulation matches" in result.stdout

    host = json.loads((CACHE / "out" / "host.json").read_text())
    pi = json.loads((CACHE / "out" / "pi.json").read_text())
    assert pi["machine"] == "aarch64" and pi["python"].startswith("3.11.")
    assert pi["packages"]["interpreter"].startswith("ai-edge-litert ")
    assert all(check["ok"] for check in pi["checks"]), pi["checks"]
    assert {c["name"] for c in pi["checks"]} >= {"machine", "interpreter", "tensorflow not installed"}
    # What ran is the packaged runtime and the aarch64 wheels from the cache, nothing of this machine's.
    modules = pi["modules"]
    assert Path(modules["edge_runtime"]).parent.parent.name.startswith("runtime-")
    for name in ("numpy", "ai_edge_litert"):
        assert Path(modules[name]).parent.parent.name.startswith("site-"), modules
    assert pi["test_set"]["images_sha256"] == host["test_set"]["images_sha256"]
    assert pi["test_set"]["count"] == 200

    # The peers: ONNX Runtime's own aarch64 wheel ran the ONNX export of the same Keras model.
    if not os.environ.get("PI_MODEL"):
        assert pi["peers"]["status"] == "ok", pi["peers"]
        assert Path(modules["onnxruntime"]).parent.parent.name.startswith("peers-site-"), modules
        assert set(pi["peers"]["models"]) >= {"float32", "int8_qdq_s8s8"}
        assert all(m["status"] == "ok" for m in pi["peers"]["models"].values()), pi["peers"]["models"]
        assert "info peers: ONNX Runtime" in result.stdout and "float32" in result.stdout

    # The comparison would have caught a real difference: two steps off in one output.
    tampered = copy.deepcopy(pi)
    row = tampered["test_set"]["raw"][0]
    row[0] = row[0] + 2 if row[0] < 254 else row[0] - 2
    text = io.StringIO()
    assert pi_check.compare(host, tampered, out=text) == 1
    assert "FAIL test set: 1 of 200" in text.getvalue()
