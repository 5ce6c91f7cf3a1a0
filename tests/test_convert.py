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
        # photo_calibration=0: the run's photos would otherwise join the grey images and calibrate well.
        run(ConvertConfig(run_dir=str(tiny_run), out_dir=str(tmp_path), variants="int8", latency_runs=2,
                          photo_calibration=0), calibration=constant)
    assert deployed.read_bytes() == before
    assert (tmp_path / "rejected" / model_filename("int8")).is_file()
    report = json.loads((tmp_path / "rejected" / "conversion_report.json").read_text())
    assert not report["passed"]
    # The diagnosis sees real images outside the ranges grey images calibrated.
    worst = report["diagnosis"]["worst"][0]
    assert worst["clipped"] > 0.001 and "calibration images" in worst["findings"][0][0]
    assert report["diagnosis"]["calibration"].startswith("only 50 calibration images")
    assert "int8_diagnosis.md" in (tmp_path / "rejected" / "conversion_report.md").read_text()
    assert "likely:" in (tmp_path / "rejected" / "int8_diagnosis.md").read_text()


@pytest.fixture(scope="module")
def outlier_run(tiny_run, tmp_path_factory, fashion):
    """The tiny run with one output channel of its first conv scaled up 300x and the next
    conv's weights for it scaled down as much: the same float model (ReLU commutes with a
    positive scale), but that channel sets the first conv's one int8 range and the other
    channels fall below one int8 step."""
    import shutil

    import keras
    run = tmp_path_factory.mktemp("outlier") / "outlier"
    shutil.copytree(tiny_run, run)
    model = keras.models.load_model(tiny_run / "model.keras")
    first, second = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][:2]
    probe = keras.Model(model.inputs, first.output)
    c = int(probe.predict(fashion.test_images[:100, ..., None], verbose=0).mean((0, 1, 2)).argmax())
    kernel, bias = first.get_weights()
    kernel[..., c] *= 300
    bias[c] *= 300
    first.set_weights([kernel, bias])
    kernel2, bias2 = second.get_weights()
    kernel2[:, :, c, :] /= 300
    second.set_weights([kernel2, bias2])
    model.save(run / "model.keras")
    pool = model.layers[model.layers.index(first) + 1]
    assert isinstance(pool, keras.layers.MaxPooling2D)
    return run, [first.name, pool.name, second.name]


def test_diagnosis_names_the_layer_an_outlier_channel_drowns_and_float_layers_rescue_it(outlier_run, tmp_path):
    run_dir, keep = outlier_run  # the first conv, the pool its output passes through unchanged, the next conv
    config = ConvertConfig(run_dir=str(run_dir), out_dir=str(tmp_path), variants="int8", latency_runs=5,
                           max_drop=1.0, max_class_drop=5.0)  # the tiny model, 2 epochs: a little noisier than a real one
    with pytest.raises(GateError, match="int8 model not deployed: .*per-layer diagnosis"):
        run(config)
    diagnosis = json.loads((tmp_path / "rejected" / "conversion_report.json").read_text())["diagnosis"]
    # Named: the first conv, whose range the outlier sets, and the next conv, whose weights for that
    # channel became too small for int8; not the pool between them, which only passes the range on.
    named = {w["name"]: w for w in diagnosis["worst"]}
    assert set(named) == {keep[0], keep[2]}, diagnosis["text"]
    assert named[keep[0]]["drowned"] > 0.5 and "outlier channels" in named[keep[0]]["findings"][0][0]
    assert f"--float_layers {','.join(keep)}" in named[keep[0]]["findings"][0][1]
    full, rescued = diagnosis["rescue"][0], next(r for r in diagnosis["rescue"] if r["float_layers"] == keep)
    assert rescued["accuracy"] > full["accuracy"] + 0.05, diagnosis["rescue"]
    # What the diagnosis suggests, done: the gate passes, and the report says what it cost.
    report = run(ConvertConfig(**{**config.__dict__, "float_layers": ",".join(keep)}))
    int8 = next(r for r in report["variants"] if r["variant"] == "int8")
    assert report["passed"] and int8["float_layers"]["layers"] == keep
    assert "float32" in int8["tensor_types"] and int8["float_layers"]["size_cost_bytes"] > 0
    assert "in float:" in (tmp_path / "conversion_report.md").read_text()


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


def test_float_layers_of_another_name_are_a_conversion_error(keras_model, fashion):
    from convert.errors import ConversionError
    calibration = export.stratified_sample(fashion.train_images, fashion.train_labels, 50, seed=0)
    with pytest.raises(ConversionError, match="--float_layers: no layer named nope in the model"):
        export.convert(keras_model, "int8", calibration, float_layers=("nope",))


def test_layers_in_tensor_names_by_hand():
    layers = ["conv2d", "max_pooling2d", "conv2d_1", "batch_normalization_19", "logits"]
    # The converter's second trace makes every scope unique: layer conv2d is conv2d_1, conv2d_1 is conv2d_1_2.
    assert export.layers_in("cnn_1/conv2d_1/Relu;cnn_1/conv2d_1/convolution", layers) == ["conv2d"]
    assert export.layers_in("cnn_1/conv2d_1_2/Relu;cnn_1/conv2d_1_2/convolution", layers) == ["conv2d_1"]
    assert export.layers_in("m_1/batch_normalization_19_1/batchnorm/mul_1;m_1/logits_1/MatMul",
                            layers) == ["batch_normalization_19", "logits"]
    assert export.layers_in("StatefulPartitionedCall_1:0", layers) == []
    names = ["cnn_1/conv2d_1/Relu", "cnn_1/conv2d_1_2/Relu", "cnn_1/logits_1/MatMul"]
    assert export.float_nodes(names, ("conv2d_1", "MUL"), layers) == (["cnn_1/conv2d_1_2/Relu"], ["MUL"])


def _minivgg_with_statistics(seed=0, negative_gamma=False):
    """A small MiniVGGNet with BatchNorm statistics like a trained one's: some channels of tiny variance."""
    from train.models import minivgg
    rng = np.random.default_rng(seed)
    model = minivgg(width=4)
    import keras
    batchnorms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for i, layer in enumerate(batchnorms):
        n = layer.weights[0].shape[0]
        gamma = rng.uniform(0.5, 2.0, n)
        if negative_gamma and i == 0:
            gamma[0] = -1.0
        var = 10.0 ** rng.uniform(-5, 0, n)
        layer.set_weights([gamma, rng.normal(0, 0.3, n), rng.uniform(0, 0.5, n), var])
    return model


def test_relu_batchnorm_fold_is_the_same_float_model():
    from convert import fold
    model = _minivgg_with_statistics()
    folded = fold.fold_relu_batchnorm(model)
    assert len(fold.foldable(model)) == 5  # four conv blocks and the dense layer
    assert not [layer for layer in folded.layers if type(layer).__name__ == "BatchNormalization"]
    images = np.random.default_rng(1).integers(0, 256, (64, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(folded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
    # A negative scale does not commute with ReLU: that BatchNorm stays.
    assert len(fold.foldable(_minivgg_with_statistics(negative_gamma=True))) == 4


def test_fold_arithmetic_by_hand():
    from convert import fold
    s, t = fold.bn_scale_shift(np.array([2.0]), np.array([1.0]), np.array([3.0]), np.array([4.0 - 1e-3]), 1e-3)
    assert np.allclose(s, 1.0) and np.allclose(t, -2.0)
    kernel, bias = fold.fold_scale(np.ones((3, 3, 1, 2)), np.array([1.0, -1.0]), np.array([2.0, 0.5]))
    assert kernel[..., 0].max() == 2.0 and kernel[..., 1].max() == 0.5 and list(bias) == [2.0, -0.5]
    with pytest.raises(ValueError, match="positive"):
        fold.fold_scale(np.ones((2, 2)), np.zeros(2), np.array([1.0, -1.0]))
    # relu(z) * s + t == relu(z * s) + t for s > 0
    z = np.linspace(-3, 3, 13)
    assert np.allclose(np.maximum(z, 0) * 2.5 - 1, np.maximum(z * 2.5, 0) - 1)


def test_diagnosis_figures_and_findings_by_hand():
    from convert import diagnose
    F = diagnose.LayerFigures
    fine = F("t0", "CONV_2D", ["conv2d"], error_steps=0.25, scale=0.1, clipped=0.0, drowned=0.0, channels=16)
    folded_bn = F("t1", "FULLY_CONNECTED", ["batch_normalization_19", "logits"], error_steps=21.7, scale=0.04,
                  clipped=0.0, drowned=0.0, channels=10)
    drowned = F("t2", "CONV_2D", ["conv2d_12", "re_lu_15"], error_steps=0.22, scale=0.03, clipped=0.0,
                drowned=0.66, channels=32, readers=["max_pooling2d", "conv2d_13"])
    clipped = F("t3", "CONV_2D", ["conv2d"], error_steps=16.6, scale=0.1, clipped=0.005, drowned=0.0, channels=16,
                clip_steps=15.0)
    assert diagnose.severity(fine) == 1.0 and round(diagnose.severity(drowned), 1) == 7.6
    assert [f.tensor for f in diagnose.rank([fine, drowned, folded_bn, clipped])] == ["t1", "t3", "t2", "t0"]
    # The error of a clipped layer is the clipping's: one finding, about calibration.
    (why, fix), = diagnose.findings(clipped, set())
    assert "0.5% of its float values fall outside" in why and "--calibration_size" in fix
    assert [f.tensor for f in diagnose.worst([fine, drowned])] == ["t2"]
    assert [f.tensor for f in diagnose.worst([fine])] == ["t0"]  # the worst one at least
    bns = {"batch_normalization_19"}
    (why, fix), = diagnose.findings(folded_bn, bns)
    assert "21.7 steps" in why and "BatchNorm batch_normalization_19 was folded into its weights" in why
    assert fix == "keep it in float (--float_layers logits)"
    assert "--float_layers re_lu_15,max_pooling2d,conv2d_13" in diagnose.findings(drowned, bns)[0][1]
    assert diagnose.rescue_candidates([folded_bn, drowned]) == [
        (), ("logits",), ("re_lu_15", "max_pooling2d", "conv2d_13"), ("logits", "re_lu_15", "max_pooling2d", "conv2d_13")]


def test_activation_figures_by_hand():
    from convert import diagnose
    values = np.zeros((10, 4, 4, 3), np.float32)
    values[..., 0] = np.linspace(0, 25.5, 160).reshape(10, 4, 4)  # spans the range
    values[..., 1] = np.linspace(0, 0.05, 160).reshape(10, 4, 4)  # below one step of 0.1
    values[0, 0, 0, 2] = 100.0  # one value past the range
    clipped, drowned, active, clip_steps = diagnose.activation_figures(values, scale=0.1, zero_point=-128)
    assert active == 3 and drowned == pytest.approx(1 / 3) and clipped == pytest.approx(1 / values.size)
    assert clip_steps == pytest.approx(np.sqrt((100 - 25.5) ** 2 / values.size) / 0.1)
    assert diagnose.calibration_problem(np.full((50, 28, 28), 128, np.uint8)) == \
        "only 50 calibration images (--calibration_size, default 500)"
    assert "repeat: 1 distinct among 500" in diagnose.calibration_problem(np.full((500, 28, 28), 128, np.uint8))
    assert diagnose.calibration_problem(np.random.default_rng(0).integers(0, 256, (500, 28, 28), dtype=np.uint8)) is None


def test_every_variant_is_one_xnnpack_partition(tiny_models):
    # Keras' Flatten reads the batch size at run time (SHAPE, STRIDED_SLICE, PACK), ops
    # XNNPACK leaves to the interpreter, which split the graph in two (convert/graph.py).
    _, report = tiny_models
    for row in report["variants"][1:]:
        graph = row["graph"]
        assert graph["xnnpack_partitions"] == 1 and not graph["interpreter_ops"], (row["variant"], graph["ops"])
        assert "RESHAPE" in graph["ops"] and "SHAPE" not in graph["ops"]
    out, _ = tiny_models
    assert metadata.read_embedded(out / model_filename("int8"))["graph"] == report["variants"][-1]["graph"]


def test_static_flatten_keeps_the_outputs_and_batching(keras_model, tiny_int8_model, fashion):
    from convert.graph import static_flatten
    images = fashion.test_images[:64, ..., None].astype(np.float32)
    np.testing.assert_array_equal(static_flatten(keras_model).predict(images, verbose=0),
                                  keras_model.predict(images, verbose=0))
    clf = Classifier(tiny_int8_model)
    assert clf.input.dynamic_batch  # the batch axis is still free
    one_by_one = np.stack([clf.predict(image)[0] for image in fashion.test_images[:5]])
    np.testing.assert_array_equal(clf.predict(fashion.test_images[:5]), one_by_one)


def test_partitions_are_the_runs_of_delegated_ops():
    from convert.graph import partitions
    flatten = ["QUANTIZE", "CONV_2D", "MAX_POOL_2D", "SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE",
               "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"]
    assert partitions(flatten) == [["QUANTIZE", "CONV_2D", "MAX_POOL_2D"],
                                   ["RESHAPE", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"]]
    assert len(partitions(["QUANTIZE", "CONV_2D", "RESHAPE", "FULLY_CONNECTED"])) == 1
    assert partitions(["SHAPE"]) == [] and partitions([]) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_outputs_probabilities_first_then_the_embedding(variant, tiny_models, keras_model, fashion):
    """Output 0 stays the class probabilities (every existing reader takes it), output 1 is
    the embedding, the features the `logits` layer reads, as the metadata says.
    Tolerance, as a share of the largest Keras feature, every value: float32 1e-5 (same
    maths), float16 1e-3 (half-precision weights), dynamic and int8 0.02 (5 of int8's 1/255
    steps of that range; measured 0.003-0.004 on the tiny model)."""
    import keras
    out, _ = tiny_models
    clf = Classifier(out / model_filename(variant))
    meta = clf.metadata
    assert meta["output"]["kind"] == "probabilities" and meta["embedding"]["output"] == 1
    assert clf.output.shape[-1] == len(clf.labels) and clf.embedding is not None
    images = fashion.test_images[:32]
    features = keras.Model(keras_model.inputs, keras_model.get_layer("logits").input).predict(
        images[..., None].astype(np.float32), verbose=0)
    probabilities, embedding = clf.predict_with_embedding(images)
    assert embedding.shape == features.shape == (32, meta["embedding"]["shape"][-1])
    np.testing.assert_array_equal(probabilities, clf.predict(images))  # same invocations, same answer
    error = np.abs(embedding - features) / float(np.abs(features).max())
    assert error.max() <= {"float32": 1e-5, "float16": 1e-3, "dynamic": 0.02, "int8": 0.02}[variant]
    # what `classify` reports without own photos is the model alone
    assert clf.own is None
    np.testing.assert_array_equal(clf.classify_input(images[0]).probabilities, probabilities[0])


def test_reorder_outputs_permutes_the_output_list_only(tiny_int8_model):
    from convert.graph import reorder_outputs
    from edge_runtime.interpreter import find_interpreter
    from edge_runtime.metadata import flatbuffer_part
    flatbuffer = flatbuffer_part(tiny_int8_model.read_bytes())
    swapped = reorder_outputs(flatbuffer, [1, 0])
    assert len(swapped) == len(flatbuffer)
    names = [[d["name"] for d in find_interpreter().factory(model_content=fb).get_output_details()]
             for fb in (flatbuffer, swapped, reorder_outputs(swapped, [1, 0]))]
    assert names[1] == names[0][::-1] and names[2] == names[0]
    with pytest.raises(ValueError):
        reorder_outputs(flatbuffer, [0, 0])
