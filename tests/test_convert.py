"""The converter: every variant runs through the runtime, agrees with Keras,
carries its metadata, and the gate keeps a bad int8 model from being deployed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convert import check, export
from convert.pipeline import ConvertConfig, run
from edge_runtime.deployed import VARIANTS, model_filename
from edge_runtime import metadata
from edge_runtime.classifier import Classifier
from edge_runtime.contract import CLASS_NAMES, CONTRACT
from convert.errors import GateError


@pytest.fixture(scope="module")
def keras_model(tiny_run):
    import keras
    return keras.models.load_model(tiny_run / "model.keras")


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_runs_in_runtime_and_agrees_with_keras(variant, tiny_models, keras_model, fashion):
    out, _ = tiny_models
    clf = Classifier(out / model_filename(variant))
    images = fashion.test_images[:500]
    probs = clf.predict(images)
    reference = keras_model.predict(images[..., None], verbose=0)
    assert probs.shape == (500, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.02)  # int8 probabilities come in steps of 1/256
    agreement = (probs.argmax(1) == reference.argmax(1)).mean()
    # Tolerances: float32 is the same maths (differences ~1e-6); float16 weights and
    # dynamic-range/int8 quantization move a few borderline images of a weak model.
    tolerance = {"float32": (1e-4, 0.998), "float16": (5e-3, 0.99), "dynamic": (0.05, 0.97), "int8": (0.05, 0.97)}
    max_abs, min_agreement = tolerance[variant]
    assert agreement >= min_agreement, f"{variant}: top-1 agreement {agreement:.3f}"
    worst_per_image = np.abs(probs - reference).max(1)
    # Float variants: every image within tolerance; quantized: the typical image.
    assert (worst_per_image.max() if variant.startswith("float") else np.median(worst_per_image)) <= max_abs


def test_int8_model_is_full_integer_with_raw_pixel_input(tiny_int8_model, tiny_models):
    clf = Classifier(tiny_int8_model)
    assert clf.input.dtype == np.uint8 and (clf.input.scale, clf.input.zero_point) == (1.0, 0)
    assert clf.output.dtype == np.uint8 and clf.output.quantized
    _, report = tiny_models
    int8 = next(r for r in report["variants"] if r["variant"] == "int8")
    assert "float32" not in int8["tensor_types"], int8["tensor_types"]
    float32 = next(r for r in report["variants"] if r["variant"] == "float32")
    assert int8["size_bytes"] < 0.4 * float32["size_bytes"]


def test_metadata_round_trips_and_matches_the_model(tiny_int8_model):
    embedded = metadata.read_embedded(tiny_int8_model)
    sidecar = json.loads(metadata.sidecar_path(tiny_int8_model).read_text())
    assert embedded == sidecar
    assert embedded["labels"] == list(CLASS_NAMES)
    assert embedded["preprocessing"]["contract"] == CONTRACT
    assert embedded["input"]["shape"] == [1, 28, 28, 1] and embedded["input"]["dtype"] == "uint8"
    assert embedded["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert 0 < embedded["accuracy"]["accuracy"] <= 1 and embedded["accuracy"]["test_images"] == 10000
    assert embedded["training"]["run"] == "tiny" and len(embedded["training"]["config_sha256"]) == 64
    import hashlib
    flatbuffer = metadata.flatbuffer_part(tiny_int8_model.read_bytes())
    assert hashlib.sha256(flatbuffer).hexdigest() == embedded["flatbuffer_sha256"]


def test_report_files_written(tiny_models):
    out, report = tiny_models
    for name in ("conversion_report.json", "conversion_report.md", "confusion_diff_int8.png"):
        assert (out / name).is_file()
    assert report["passed"] and report["test_images"] == 10000
    assert [r["variant"] for r in report["variants"]] == ["keras", *VARIANTS]
    assert not list(out.glob(".staging-*"))


def test_gate_refuses_badly_calibrated_model_and_keeps_deployed_one(tiny_run, tiny_int8_model, tmp_path):
    deployed = tmp_path / model_filename("int8")
    deployed.write_bytes(tiny_int8_model.read_bytes())
    before = deployed.read_bytes()
    # Calibrating on constant grey images gives the int8 model useless activation ranges.
    constant = np.full((50, 28, 28), 128, np.uint8)
    with pytest.raises(GateError, match=r"int8 model not deployed: top-1 accuracy dropped \d+\.\d\d pp"):
        run(ConvertConfig(run_dir=str(tiny_run), out_dir=str(tmp_path), variants="int8", latency_runs=2),
            calibration=constant)
    assert deployed.read_bytes() == before
    assert (tmp_path / "rejected" / model_filename("int8")).is_file()
    assert not json.loads((tmp_path / "rejected" / "conversion_report.json").read_text())["passed"]


def test_compare_and_gate_by_hand():
    labels = np.repeat(np.arange(10), 10)
    reference = labels.copy()
    predicted = labels.copy()
    predicted[:3] = 1  # three class-0 images now wrong
    figures = check.compare(labels, reference, predicted, list(CLASS_NAMES))
    assert figures["change_pp"] == -3.0 and figures["agreement"] == 0.97
    assert figures["worst_class"] == "T-shirt/top" and figures["worst_class_change_pp"] == -30.0
    failures = check.gate_failures(figures, check.Gate(max_drop=0.5, max_class_drop=2.0), list(CLASS_NAMES))
    assert failures == ["top-1 accuracy dropped 3.00 pp (limit 0.5 pp, --max_drop)",
                        "class T-shirt/top dropped 30.00 pp (limit 2.0 pp, --max_class_drop)"]
    assert check.gate_failures(figures, check.Gate(5, 50), list(CLASS_NAMES)) == []


def test_calibration_sample_is_stratified_training_data(fashion):
    sample = export.stratified_sample(fashion.train_images, fashion.train_labels, 300, seed=0)
    assert sample.shape == (300, 28, 28)
    train_set = {img.tobytes() for img in fashion.train_images}
    assert all(img.tobytes() in train_set for img in sample)


def test_int8_conversion_prints_nothing_on_stderr(keras_model, fashion, capfd):
    """The int8 quantizer writes its settings to fd 2 on every conversion
    ("fully_quantize: 0, inference_type: 6, ..."); convert's output drops them."""
    calibration = export.stratified_sample(fashion.train_images, fashion.train_labels, 50, seed=0)
    capfd.readouterr()
    assert export.convert(keras_model, "int8", calibration)[4:8] == b"TFL3"  # a FlatBuffer with TFLite's identifier
    assert capfd.readouterr().err == ""
