"""Keras model -> TFLite FlatBuffers, one per variant.

| variant  | weights | activations | input   | what it is for                         |
|----------|---------|-------------|---------|----------------------------------------|
| float32  | float32 | float32     | float32 | the reference, same maths as Keras      |
| float16  | float16 | float32     | float32 | half the size, GPU delegates            |
| dynamic  | int8    | float32     | float32 | dynamic-range quantization: NOT int8    |
| int8     | int8    | int8        | uint8   | full-integer: the deployable model      |

Only `int8` is full-integer: the converter is restricted to
TFLITE_BUILTINS_INT8, so any op it can't quantize fails the conversion
instead of silently falling back to float. Its uint8 input takes raw 0..255
pixels (the model's Rescaling layer makes the calibrated input range
0..255, i.e. scale 1 and zero point 0) and its uint8 output holds the
softmax probabilities in steps of 1/256.

Every variant has two outputs: output 0 the class probabilities, output 1
the embedding, the features the last layer reads (convert/graph.py
`with_embedding`), which on-device imprinting (edge_runtime/imprint.py)
compares. In int8 both are uint8. The converter lists a multi-output model's
outputs in an order of its own; `convert` puts them back in the Keras order
and checks their shapes.

Before int8 conversion every BatchNorm that follows a ReLU is folded into
the layer before it (convert/fold.py: MiniVGGNet's order, which int8 can't
represent otherwise). `float_layers` keeps named layers in float inside the
int8 model (selective quantization, what the gate's diagnosis suggests):
the model is calibrated once, then quantized with those layers' ops
denylisted, as tf.lite.experimental.QuantizationDebugger does.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Iterable

import numpy as np

from edge_runtime import native_stderr
from edge_runtime.deployed import VARIANTS
from .errors import ConversionError
from .fold import fold_relu_batchnorm
from .graph import reorder_outputs, static_flatten, with_embedding

QUANTIZER_SETTINGS = "fully_quantize: "  # what the int8 quantizer prints on every conversion


def stratified_sample(images: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` images with (as near as possible) equal counts per class. Pure given the seed."""
    from edge_runtime.dataset import stratified_indices
    held, _ = stratified_indices(labels, max(1, size // len(np.unique(labels))), seed)
    return images[held]


def _representative(calibration: np.ndarray) -> Iterable:
    def gen():
        for image in calibration:
            # float32 raw pixels, exactly what the Keras model's input layer receives
            yield [image[None, :, :, None].astype(np.float32)]
    return gen


def int8_converter(model, calibration: np.ndarray):
    """A TFLiteConverter set up for the deployable full-int8 model (uint8 in and out)."""
    import tensorflow as tf
    if calibration is None or len(calibration) == 0:
        raise ConversionError("int8 conversion needs calibration images")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter


def convert(model, variant: str, calibration: np.ndarray | None = None, float_layers: tuple[str, ...] = ()) -> bytes:
    """One TFLite FlatBuffer for `variant`. `calibration` (uint8 (N, 28, 28)) is needed for int8;
    `float_layers` (int8 only) are Keras layer names or TFLite op types (MUL) kept in float."""
    if variant == "int8":
        model = fold_relu_batchnorm(model)
    model = with_embedding(static_flatten(model))  # one XNNPACK partition, two outputs (convert/graph.py)
    return outputs_in_keras_order(_convert(model, variant, calibration, float_layers), model)


def _convert(model, variant: str, calibration: np.ndarray | None, float_layers: tuple[str, ...]) -> bytes:
    import tensorflow as tf
    if variant == "int8":
        converter = int8_converter(model, calibration)
        if float_layers:
            names = [layer.name for layer in model.layers]
            return run_converter(variant, lambda: quantize(calibrate(converter), float_layers, names))
        return run_converter(variant, converter.convert)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant != "float32":
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if float_layers:
        raise ValueError("float_layers applies to the int8 variant only")
    return run_converter(variant, converter.convert)


def outputs_in_keras_order(flatbuffer: bytes, model) -> bytes:
    """The FlatBuffer with its outputs in the Keras model's order, checked by shape.

    The converter names output k of the Keras model `<function>:k` but may list
    it anywhere; the name says where it belongs.
    """
    from edge_runtime.interpreter import find_interpreter
    details = find_interpreter().factory(model_content=flatbuffer).get_output_details()
    if len(details) > 1:
        keras_index = [int(d["name"].rsplit(":", 1)[-1]) if re.fullmatch(r".*:\d+", d["name"]) else -1
                       for d in details]
        if sorted(keras_index) != list(range(len(details))):
            raise ConversionError(f"can't tell the converted outputs apart: {[d['name'] for d in details]}")
        flatbuffer = reorder_outputs(flatbuffer, [keras_index.index(k) for k in range(len(details))])
        details = find_interpreter().factory(model_content=flatbuffer).get_output_details()
    for k, (d, keras_output) in enumerate(zip(details, model.outputs)):
        if int(d["shape"][-1]) != int(keras_output.shape[-1]):
            raise ConversionError(f"converted output {k} has {int(d['shape'][-1])} values, Keras output {k} "
                                  f"has {int(keras_output.shape[-1])}")
    return flatbuffer


def run_converter(variant: str, run) -> bytes:
    try:
        # Keras' SavedModel export prints every captured tensor to stdout, and the
        # int8 quantizer its settings to fd 2 ("fully_quantize: 0, inference_type: 6,
        # ..."): keep our report readable, but let any other native line through.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
                native_stderr.dropping(lambda line: line.startswith(QUANTIZER_SETTINGS)):
            warnings.simplefilter("ignore")
            return run()
    except ConversionError:
        raise
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"TFLite conversion to {variant} failed: {first}") from e


def calibrate(converter) -> bytes:
    """The model with float ops and the calibrated activation ranges recorded, not yet
    quantized: what QuantizationDebugger and selective quantization start from."""
    converter.experimental_mlir_quantizer = True
    # Private, but how tf.lite.experimental.QuantizationDebugger itself calibrates.
    converter._experimental_calibrate_only = True
    return converter.convert()


def quantize(calibrated: bytes, float_layers: tuple[str, ...] = (), layer_names: list[str] | None = None) -> bytes:
    """Full int8 with uint8 input and output, as the plain converter makes it, except for
    the ops of `float_layers` (`layer_names`: every layer of the model, to tell them apart)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert
    nodes, ops = float_nodes(tensor_names(calibrated), float_layers, layer_names or list(float_layers))
    return tflite_convert.mlir_quantize(calibrated, input_data_type=tf.uint8, output_data_type=tf.uint8,
                                        denylisted_nodes=nodes or None, denylisted_ops=ops or None)


def tensor_names(model_bytes: bytes) -> list[str]:
    from edge_runtime.interpreter import find_interpreter
    return [t["name"] for t in find_interpreter().factory(model_content=model_bytes).get_tensor_details()]


def layers_in(tensor_name: str, layer_names) -> list[str]:
    """The Keras layers whose ops made a TFLite tensor, in `layer_names` order. Pure.

    TensorFlow names a tensor by its ops' scopes, joined with ';' where the
    converter fused several ops: 'minivgg_1/re_lu_15_1/Relu;minivgg_1/conv2d_12_1/BiasAdd'.
    A scope is the layer's name made unique by a '_N' suffix, which the
    converter's second trace of the model always adds: layer conv2d is scope
    conv2d_1, layer conv2d_1 scope conv2d_1_2. So one suffix is taken off
    first; the bare name counts only when that gives no layer.
    """
    names = set(layer_names)
    found = set()
    for op in tensor_name.split(";"):
        for scope in op.split("/"):
            base = re.sub(r"_\d+$", "", scope)
            if base != scope and base in names:
                found.add(base)
            elif scope in names:
                found.add(scope)
    return [name for name in layer_names if name in found]


def float_nodes(tensor_names: list[str], float_layers: tuple[str, ...],
                layer_names: list[str]) -> tuple[list[str], list[str]]:
    """(tensor names, op types) to denylist for `float_layers`: an UPPER_CASE name is a TFLite
    op type (MUL, FULLY_CONNECTED), anything else one of the model's `layer_names`. Pure."""
    ops = [name for name in float_layers if name.isupper()]
    layers = [name for name in float_layers if not name.isupper()]
    made_by = {t: layers_in(t, layer_names) for t in tensor_names}
    nodes = [t for t in tensor_names if set(made_by[t]) & set(layers)]
    missing = [name for name in layers if not any(name in found for found in made_by.values())]
    if missing:
        raise ConversionError(f"--float_layers: no layer named {', '.join(missing)} in the model; "
                              "use the layer names the gate's diagnosis prints")
    return nodes, ops


def tensor_types(model_bytes: bytes) -> dict:
    """dtype name -> number of tensors, read with the runtime's interpreter.

    The self-check behind "full int8": a float32 tensor in the int8 model
    would mean some op was left in float.
    """
    from edge_runtime.interpreter import find_interpreter
    interpreter = find_interpreter().factory(model_content=model_bytes)
    counts: dict[str, int] = {}
    for t in interpreter.get_tensor_details():
        name = np.dtype(t["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


def io_spec(model_bytes: bytes) -> tuple[dict, list[dict]]:
    """The input tensor and every output tensor, in order, as metadata records (shape, dtype,
    quantization)."""
    from edge_runtime.interpreter import find_interpreter
    interpreter = find_interpreter().factory(model_content=model_bytes)

    def record(d):
        scale, zero_point = d["quantization"]
        rec = {"shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        if scale:
            rec["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        return rec

    return record(interpreter.get_input_details()[0]), [record(d) for d in interpreter.get_output_details()]
