"""Bad model files get a clear ModelError (one line, what is wrong, what to do), never a crash."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge_runtime import metadata
from edge_runtime.classifier import Classifier
from edge_runtime.errors import ModelError


@pytest.fixture(scope="module")
def other_shape_model(tmp_path_factory):
    """A valid TFLite model for 224x224x3 images (like an ImageNet classifier), no metadata."""
    import keras

    from convert import export
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(4, 3, strides=8)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(10)(x)))
    path = tmp_path_factory.mktemp("other") / "imagenet_like.tflite"
    path.write_bytes(export.convert(model, "float32"))
    return path


def meta_of(model_path):
    return json.loads(metadata.sidecar_path(model_path).read_text())


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found; run `make train convert` or pass --model"):
        Classifier(tmp_path / "nope.tflite")
    with pytest.raises(ModelError, match="is a directory; pass the .tflite file"):
        Classifier(tmp_path)


def test_random_bytes(tmp_path, tiny_int8_model):
    path = tmp_path / "random.tflite"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        Classifier(path, metadata=meta_of(tiny_int8_model))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_model(tmp_path, tiny_int8_model, fraction):
    data = metadata.flatbuffer_part(tiny_int8_model.read_bytes())
    path = tmp_path / "truncated.tflite"
    path.write_bytes(data[: int(len(data) * fraction)])
    # Run in a subprocess: a crash in the interpreter's C++ would kill pytest itself.
    code = ("import sys; from edge_runtime.classifier import Classifier; from edge_runtime.errors import ModelError\n"
            f"import json; meta = json.load(open({str(metadata.sidecar_path(tiny_int8_model))!r}))\n"
            f"try:\n    Classifier({str(path)!r}, metadata=meta)\nexcept ModelError as e:\n    print(e); sys.exit(4)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 4, result.stderr[-500:]
    assert "not a loadable TFLite model" in result.stdout


def test_no_metadata_anywhere(tmp_path, other_shape_model):
    with pytest.raises(ModelError, match="has no embedded metadata and no imagenet_like.json beside it"):
        Classifier(other_shape_model)


def test_model_of_another_shape(other_shape_model, tiny_int8_model):
    with pytest.raises(ModelError, match=r"input tensor is \[1, 224, 224, 3\], expected \[N, H, W, 1\] grayscale"):
        Classifier(other_shape_model, metadata=meta_of(tiny_int8_model))


def test_metadata_contradicting_the_model(tmp_path, tiny_int8_model):
    meta = meta_of(tiny_int8_model)
    meta["input"]["shape"] = [1, 32, 32, 1]
    with pytest.raises(ModelError, match=r"metadata says \[1, 32, 32, 1\]; the metadata belongs to another model"):
        Classifier(tiny_int8_model, metadata=meta)
    meta = meta_of(tiny_int8_model)
    meta["input"]["dtype"] = "float32"
    with pytest.raises(ModelError, match="input dtype is uint8 but its metadata says float32"):
        Classifier(tiny_int8_model, metadata=meta)


def test_label_count_not_matching_outputs(tiny_int8_model):
    meta = meta_of(tiny_int8_model)
    meta["labels"] = meta["labels"][:5]
    with pytest.raises(ModelError, match="model has 10 outputs but its metadata lists 5 labels"):
        Classifier(tiny_int8_model, metadata=meta)


def test_unknown_preprocessing_contract(tiny_int8_model):
    meta = meta_of(tiny_int8_model)
    meta["preprocessing"]["contract"] = "rgb-224/1"
    with pytest.raises(ModelError, match="expects preprocessing 'rgb-224/1'"):
        Classifier(tiny_int8_model, metadata=meta)


def test_sidecar_used_when_nothing_embedded(tmp_path, tiny_int8_model):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(metadata.flatbuffer_part(tiny_int8_model.read_bytes()))
    metadata.sidecar_path(bare).write_text(metadata.sidecar_path(tiny_int8_model).read_text())
    assert Classifier(bare).labels == meta_of(tiny_int8_model)["labels"]
    metadata.sidecar_path(bare).write_text("{not json")
    with pytest.raises(ModelError, match="bare.json: not readable metadata JSON"):
        Classifier(bare)


def test_cli_one_line_error_and_debug_traceback(tmp_path):
    """A user error is one line and exit status 4 (ModelError); --debug shows the traceback."""
    args = [sys.executable, "-m", "edge_runtime", "info", "--model", str(tmp_path / "missing.tflite")]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 4
    assert plain.stderr.strip().count("\n") == 0 and plain.stderr.startswith("error: ")
    debug = subprocess.run([*args[:3], "--debug", *args[3:]], capture_output=True, text=True, timeout=60)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ModelError" in debug.stderr


def bare_with_sidecar(tmp_path, model, meta):
    """The model's FlatBuffer alone, with `meta` as its sidecar: what a hand-edited .json gives."""
    bare = tmp_path / "edited.tflite"
    bare.write_bytes(metadata.flatbuffer_part(model.read_bytes()))
    metadata.sidecar_path(bare).write_text(json.dumps(meta))
    return bare


@pytest.mark.parametrize("field,value", [
    ("input", {}), ("input", None), ("input", {"shape": None, "dtype": "uint8"}), ("labels", 5),
    ("labels", [1, 2]), ("preprocessing", None), ("accuracy", 0.9), ("accuracy", {"accuracy": "high"}),
])
def test_malformed_metadata_fields(tmp_path, tiny_int8_model, field, value):
    """Present but of the wrong type: a ModelError naming the field, not a KeyError or TypeError."""
    meta = {**meta_of(tiny_int8_model), field: value}
    with pytest.raises(ModelError, match=f"metadata field '{field}' is not .*; reconvert the model"):
        Classifier(bare_with_sidecar(tmp_path, tiny_int8_model, meta))


def test_cli_malformed_metadata_is_one_line(tmp_path, tiny_int8_model):
    model = bare_with_sidecar(tmp_path, tiny_int8_model, {**meta_of(tiny_int8_model), "input": {}})
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "info", "--model", str(model)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "metadata field 'input'" in r.stderr


def test_damaged_embedded_metadata(tmp_path, tiny_int8_model):
    """Bytes flipped inside the compressed metadata (a bad copy): ModelError, not a zlib.error."""
    import struct
    import zipfile
    data = bytearray(tiny_int8_model.read_bytes())
    with zipfile.ZipFile(tiny_int8_model) as archive:
        header = archive.getinfo(metadata.EMBEDDED_NAME).header_offset
    name_len, extra_len = struct.unpack("<HH", data[header + 26:header + 30])  # from the local file header
    start = header + 30 + name_len + extra_len  # the deflated bytes
    data[start + 10:start + 40] = bytes(b ^ 0xFF for b in data[start + 10:start + 40])
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="damaged.tflite: can't read its embedded metadata"):
        metadata.read_metadata(damaged)


def test_embedded_metadata_with_a_bad_checksum(tmp_path, tiny_int8_model):
    """A wrong CRC in the archive's directory: the metadata is damaged, not absent."""
    import struct
    import zipfile
    data = bytearray(tiny_int8_model.read_bytes())
    with zipfile.ZipFile(tiny_int8_model) as archive:
        crc = archive.getinfo(metadata.EMBEDDED_NAME).CRC
    data[data.rfind(struct.pack("<I", crc))] ^= 0xFF  # the central directory's copy, which zipfile checks
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="damaged.tflite: can't read its embedded metadata .*Bad CRC-32"):
        metadata.read_metadata(damaged)
