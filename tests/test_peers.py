"""The peers benchmark (tools/peers.py): the ONNX export is the Keras model, ONNX Runtime's
int8 model agrees with its float one, OpenCV's refusals become a recorded reason, and the
verdict and markdown come out of a results dict.

A tiny `edge` model trained for a few steps on 2,000 Fashion-MNIST images stands in for a
real run: real export (Keras -> tf2onnx), real quantizer, real runtimes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tools import peers

TEST_IMAGES = 500


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fashion):
    """A run directory holding a tiny trained `edge` model (no photos, no config: calibration
    is Fashion-MNIST training images alone)."""
    import keras

    from train.models import edge
    keras.utils.set_random_seed(0)
    model = edge(width=8)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(fashion.train_images[:2000, ..., None].astype(np.float32), fashion.train_labels[:2000],
              batch_size=64, epochs=1, verbose=0)
    run_dir = tmp_path_factory.mktemp("peers") / "tiny"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    return run_dir, model


@pytest.fixture(scope="module")
def onnx_float(tiny, tmp_path_factory):
    _, model = tiny
    path = tmp_path_factory.mktemp("onnx") / "float32.onnx"
    info = peers.export_onnx(model, path)
    return path, info


def test_onnx_export_matches_keras(tiny, onnx_float, fashion):
    _, model = tiny
    path, info = onnx_float
    assert info["opset"] and "Conv" in info["ops"] and "Shape" not in info["ops"]  # Flatten as a constant reshape
    images = fashion.test_images[:TEST_IMAGES]
    keras_probs = model.predict(images[..., None].astype(np.float32), verbose=0)
    onnx_probs = peers.open_runner("onnxruntime", path, threads=1)(images)
    check = peers.compare_with_keras(keras_probs, onnx_probs)
    assert check["ok"] and check["max_abs_diff"] <= peers.EXPORT_TOLERANCE == 1e-5, check
    assert check["top1_agreement"] == 1.0
    # The check can fail: a difference of 1e-4 in one probability is over the tolerance.
    off = onnx_probs.copy()
    off[3, 2] += 1e-4
    assert not peers.compare_with_keras(keras_probs, off)["ok"]


def test_onnx_runtime_int8_agrees_with_float(tiny, onnx_float, fashion, tmp_path):
    run_dir, _ = tiny
    path, _ = onnx_float
    calibration = peers.calibration_images(fashion, run_dir, size=200, photos=100, seed=0)
    assert calibration.shape == (200, 28, 28) and calibration.dtype == np.uint8  # no run config: no photos
    train = {image.tobytes() for image in fashion.train_images}
    assert all(image.tobytes() in train for image in calibration)  # training images, never the test set
    images = fashion.test_images[:TEST_IMAGES]
    float_top1 = peers.open_runner("onnxruntime", path, threads=1)(images).argmax(1)
    for scheme in ("qdq_s8s8", "qoperator_u8s8"):
        int8 = peers.quantize_int8(path, tmp_path / f"{scheme}.onnx", calibration, scheme, tmp_path)
        assert int8.stat().st_size < 0.5 * path.stat().st_size
        probs = peers.open_runner("onnxruntime", int8, threads=2)(images)
        assert probs.shape == (TEST_IMAGES, 10) and probs.dtype == np.float32
        agreement = (probs.argmax(1) == float_top1).mean()
        assert agreement >= 0.95, (scheme, agreement)
    assert not list(tmp_path.glob(".*partial*"))  # written atomically


def test_onnx_models_exports_in_a_child_checks_and_caches(tiny, tmp_path, data_dir):
    run_dir, _ = tiny
    said = []
    first = peers.onnx_models(run_dir, None, str(data_dir), work_dir=tmp_path, say=said.append)
    assert first["report"]["check"]["ok"] and first["report"]["check"]["images"] == 10000
    assert first["report"]["calibration"]["images"] == 500 and first["report"]["calibration"]["photos_used"] == 0
    assert set(first["paths"]) == {"float32", *(f"int8_{s}" for s in peers.INT8_SCHEMES)}
    assert all(p.is_file() for p in first["paths"].values())
    assert any("TensorFlow child process" in s for s in said)
    said.clear()
    second = peers.onnx_models(run_dir, None, str(data_dir), work_dir=tmp_path, say=said.append)
    assert second["report"] == first["report"] and any("cached" in s for s in said)


def test_opencv_refusals_are_recorded_not_raised(tmp_path, tiny, fashion):
    image = fashion.test_images[0]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    predict, why = peers.try_runner(peers.Peer("opencv_onnx_x", "opencv", "ONNX x", garbage), 1, image)
    assert predict is None and why and "\n" not in why and len(why) <= 240
    # The real int8 .tflite: OpenCV 5.1 refuses it (no int8 ReLU lookup table); either way no exception.
    from convert.export import convert, stratified_sample
    _, model = tiny
    int8 = tmp_path / "int8.tflite"
    int8.write_bytes(convert(model, "int8", stratified_sample(fashion.train_images, fashion.train_labels, 50, 0)))
    predict, why = peers.try_runner(peers.Peer("opencv_tflite_int8", "opencv", "TFLite int8", int8), 1, image)
    if predict is None:
        assert why and "\n" not in why
    else:
        assert predict(image[None]).shape == (1, 10)
    # LiteRT is the reference, not a peer: its failure is an error, not a recorded refusal.
    from edge_runtime.errors import ModelError
    with pytest.raises(ModelError):
        peers.try_runner(peers.Peer("litert_int8", "litert", "TFLite int8", garbage), 1, image)


def test_memory_probe_runs_in_a_fresh_process(onnx_float):
    path, _ = onnx_float
    memory = peers.measure_memory(peers.Peer("ort_float32", "onnxruntime", "ONNX float32", path), threads=1, runs=3)
    stages = memory["stages_mb"]
    assert stages["python"] < stages["runtime_imported"] <= stages["ran"] == memory["peak_rss_mb"]
    assert not memory["tensorflow_imported"] and not memory["cv2_imported"]


def test_one_line_and_chunks():
    error = RuntimeError("OpenCV(5.1.0) /io/opencv/modules/dnn/src/tflite/tflite_importer.cpp:1829: error: "
                         "(-213:The function/feature is not implemented) Lookup table for RELU in function 'x'\n")
    assert peers.one_line(error) == ("OpenCV 5.1.0, dnn/src/tflite/tflite_importer.cpp:1829 (-213:The "
                                     "function/feature is not implemented) Lookup table for RELU in function 'x'")
    assert peers.one_line(ValueError("first\n\nlast line\n")) == "last line"
    assert peers.one_line(ValueError()) == "ValueError"
    assert len(peers.one_line(ValueError("x" * 1000))) == 240
    assert peers.chunk_sizes(2000, 5) == [400] * 5
    assert peers.chunk_sizes(7, 3) == [3, 2, 2] and peers.chunk_sizes(2, 5) == [1, 1]
    stats = peers.interleaved_latency({"a": lambda: None, "b": lambda: sum(range(100))}, runs=7, warmup=2, rounds=3)
    assert stats["a"]["runs"] == stats["b"]["runs"] == 7


# -- results by hand: verdict and markdown --------------------------------------------------------

def _row(name, runtime, model, accuracy, medians, memory=50.0, status="ok", reason=None):
    return {"name": name, "runtime": runtime, "model": model,
            "label": f"{peers.RUNTIME_NAMES[runtime]} · {model}", "path": f"/m/{name}", "size_bytes": 365_000,
            "status": status, "reason": reason, "accuracy": accuracy, "agreement_with_reference": 0.999,
            "latency": {t: {"median_us": m, "p95_us": m * 1.5} for t, m in medians.items()},
            "memory": {"peak_rss_mb": memory} if status == "ok" else None}


def _results(ort_medians, ort_accuracy=0.9418):
    rows = [_row("litert_int8", "litert", "TFLite int8", 0.9418, {"1": 70.0, "2": 50.0}),
            _row("ort_float32", "onnxruntime", "ONNX float32", 0.9416, {"1": 190.0, "2": 120.0}, 74.0),
            _row("ort_int8_qdq_s8s8", "onnxruntime", "ONNX int8 qdq s8s8", ort_accuracy, ort_medians, 72.0),
            _row("opencv_tflite_int8", "opencv", "TFLite int8", None, {}, status="refused",
                 reason="OpenCV 5.1.0, dnn/src/tflite/tflite_importer.cpp:1829 Lookup table for RELU")]
    threads = [1, 2]
    peers.add_ratios(rows, threads)
    return {
        "schema": peers.SCHEMA, "created": "2026-12-07T02:00:00+0000", "command": "python -m tools.peers",
        "quick": False,
        "config": {"run_dir": "runs/t1", "models_dir": "models", "threads": threads, "runs": 2000, "warmup": 200,
                   "rounds": 5, "memory_runs": 50, "work_dir": "/c", "data_dir": None},
        "machine": {"cpu": "Test CPU", "cores_usable": 2, "machine": "x86_64", "load_average": [2.0, 1.5, 1.0],
                    "interpreter": {"package": "ai-edge-litert", "version": "2.3.0"}, "python": "3.11.7"},
        "load_average_end": [2.5, 1.6, 1.1],
        "versions": {"ai-edge-litert": "2.3.0", "onnxruntime": "1.32.0"},
        "model": {"keras": "runs/t1/model.keras", "keras_sha256": "ab" * 32, "keras_accuracy": 0.9416, "name": "edge"},
        "export": {"exporter": "keras Model.export(format='onnx')", "opset": 15, "ops": ["Conv"],
                   "check": {"images": 10000, "max_abs_diff": 1e-6, "tolerance": 1e-5, "top1_agreement": 1.0,
                             "ok": True}},
        "calibration": {"size": 500, "photos": 100, "seed": 0, "images": 600, "photos_used": 100},
        "int8_schemes": {"qdq_s8s8": {"format": "QDQ", "activations": "QInt8"}},
        "reference": peers.REFERENCE, "rows": rows, "int8_formats": peers.int8_formats(rows, threads),
        "verdict": peers.verdict(rows, threads),
        "installed_mb": {"litert": {"distribution": "ai-edge-litert", "mb": 58.5},
                         "onnxruntime": {"distribution": "onnxruntime", "mb": 76.5}},
    }


def test_verdict_met_with_ties_and_missed_with_the_faster_peer():
    met = _results({"1": 110.0, "2": 51.0})  # 2 threads: 2% slower, a tie
    v = met["verdict"]
    assert v["met"] is True and v["faster"] == [] and v["per_thread"]["2"]["ties"] == ["ort_int8_qdq_s8s8"]
    assert v["per_thread"]["1"]["fastest_peer"] == "ort_int8_qdq_s8s8"
    assert v["per_thread"]["1"]["fastest_peer_vs_reference"] == pytest.approx(110 / 70, abs=1e-3)
    missed = _results({"1": 110.0, "2": 40.0})
    v = missed["verdict"]
    assert v["met"] is False and v["per_thread"]["1"]["met"] and not v["per_thread"]["2"]["met"]
    (faster,) = v["faster"]
    assert faster["name"] == "ort_int8_qdq_s8s8" and faster["speedup"] == 1.25 and faster["as_accurate"]
    less_accurate = _results({"1": 110.0, "2": 40.0}, ort_accuracy=0.9400)["verdict"]["faster"][0]
    assert less_accurate["accuracy_pp"] == -0.18 and not less_accurate["as_accurate"]
    assert peers.verdict([], [1])["met"] is None


def test_markdown_has_the_tables_refusals_and_verdict():
    text = peers.markdown(_results({"1": 110.0, "2": 51.0}))
    assert text.startswith("# Peers")
    assert "Load average at start: 2.0, 1.5, 1.0; at the end: 2.5, 1.6, 1.1" in text
    assert "largest probability difference **1.0e-06** (tolerance 1e-05)" in text
    assert "| **LiteRT · TFLite int8** (reference) | 356.4 KB | 94.18% | +0.00 pp | 99.90% | 50 MB | 1.00x |" in text
    assert "| ONNX Runtime · ONNX int8 qdq s8s8 | 356.4 KB | 94.18% | +0.00 pp | 99.90% | 72 MB | 1.44x |" in text
    assert "| ONNX Runtime · ONNX float32 | 1 | 190 µs | 285 µs | 2.71x |" in text
    assert "|  | 2 | 51 µs | 76 µs | 1.02x |" in text
    assert "- OpenCV DNN · TFLite int8: OpenCV 5.1.0, dnn/src/tflite/tflite_importer.cpp:1829 Lookup table for RELU" in text
    assert "**met: LiteRT int8 is at least as fast as every peer measured at 1 thread, 2 threads" in text
    assert "Adopting it" not in text
    missed = peers.markdown(_results({"1": 110.0, "2": 40.0}))
    assert "**MISSED: ONNX Runtime · ONNX int8 qdq s8s8 is 1.25x as fast at 2t" in missed
    assert "Faster and as accurate: ONNX Runtime. Adopting it would cost a new device dependency (onnxruntime, " \
           "76.5 MB installed here, against 58.5 MB for ai-edge-litert)" in missed


def test_results_are_written_atomically(tmp_path):
    results = _results({"1": 110.0, "2": 51.0})
    js, md = peers.write_results(results, tmp_path)
    assert json.loads(js.read_text())["verdict"]["met"] is True
    assert md.read_text() == peers.markdown(results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["peers.json", "peers.md"]
