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
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Iterable

import numpy as np

from edge_runtime import native_stderr
from edge_runtime.deployed import VARIANTS
from .errors import ConversionError

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


def convert(model, variant: str, calibration: np.ndarray | None = None) -> bytes:
    """One TFLite FlatBuffer for `variant`. `calibration` (uint8 (N, 28, 28)) is needed for int8."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if calibration is None or len(calibration) == 0:
            raise ConversionError("int8 conversion needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif variant != "float32":
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    try:
        # Keras' SavedModel export prints every captured tensor to stdout, and the
        # int8 quantizer its settings to fd 2 ("fully_quantize: 0, inference_type: 6,
        # ..."): keep our report readable, but let any other native line through.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
                native_stderr.dropping(lambda line: line.startswith(QUANTIZER_SETTINGS)):
            warnings.simplefilter("ignore")
            return converter.convert()
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"TFLite conversion to {variant} failed: {first}") from e


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


def io_spec(model_bytes: bytes) -> tuple[dict, dict]:
    """The input and output tensors as metadata records (shape, dtype, quantization)."""
    from edge_runtime.interpreter import find_interpreter
    interpreter = find_interpreter().factory(model_content=model_bytes)

    def record(d):
        scale, zero_point = d["quantization"]
        rec = {"shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        if scale:
            rec["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        return rec

    return record(interpreter.get_input_details()[0]), record(interpreter.get_output_details()[0])
