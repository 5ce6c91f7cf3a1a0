"""The model zoo. Every model takes raw 0..255 pixels (28, 28, 1) and scales
them itself, and ends in a softmax, so the converter and the runtime feed
every model the same bytes and read probabilities back.

- mlp:     the classic Keras tutorial baseline.
- cnn:     the usual two-conv-block "dense vs CNN" comparison.
- minivgg: MiniVGGNet as published by PyImageSearch (~1.68M parameters).
- edge:    ours, for the device: four plain 3x3 convs (two narrow ones at
           28x28, two at 14x14) and a flatten + dense-96 head that fits in
           400 KB as int8;
           conv, pool and dense layers only, so full-int8 conversion uses
           builtin ops alone.
"""

from __future__ import annotations

import keras
from keras import layers

from edge_runtime.contract import CLASS_NAMES, INPUT_SHAPE, PIXEL_SCALE

from .config import ZOO
from .errors import ConfigError

NUM_CLASSES = len(CLASS_NAMES)


def _inputs():
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")
    return inputs, layers.Rescaling(PIXEL_SCALE, name="scale")(inputs)


def _head(x, inputs, name):
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    # float32 even when training in mixed bfloat16: softmax and the loss need the range
    outputs = layers.Softmax(name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def mlp(width: int = 128, dropout: float = 0.0) -> keras.Model:
    inputs, x = _inputs()
    x = layers.Flatten()(x)
    x = layers.Dense(width, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return _head(x, inputs, "mlp")


def cnn(width: int = 32, dropout: float = 0.25) -> keras.Model:
    inputs, x = _inputs()
    for filters in (width, 2 * width):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(128, activation="relu")(x)
    return _head(x, inputs, "cnn")


def minivgg(width: int = 32, dropout: float = 0.25) -> keras.Model:
    """MiniVGGNet (Rosebrock, PyImageSearch 2019): conv-relu-BN x2, pool, dropout; twice; dense 512."""
    inputs, x = _inputs()
    for filters in (width, 2 * width):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same")(x)
            x = layers.ReLU()(x)
            x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512)(x)
    x = layers.ReLU()(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.5)(x)
    return _head(x, inputs, "minivgg")


def edge(width: int = 32, dropout: float = 0.25) -> keras.Model:
    """Our device model: two 3x3 convs of width/2 filters at 28x28, max-pool, two
    3x3 convs of 2 x width at 14x14, max-pool, flatten, dropout, dense (3 x width),
    softmax. 16-16-64-64 filters and a dense 96 give 351k parameters (343 KB as
    int8) and 11.3M MACs per image.

    Why this shape (each choice measured: docs/design-log.md):
    - plain 3x3 convs with a bias and fused ReLU: not depthwise-separable
      ones (TensorFlow's depthwise gradients are slow on a CPU, and the
      budget is wall time), and no BatchNorm (on a CPU it makes an epoch
      much longer for about the same accuracy per epoch);
    - two narrow convs at full resolution rather than one conv of 32 (v4):
      the same MACs and epoch time, but a 5x5 receptive field before the
      first pool throws away three pixels in four; at least as accurate,
      not certainly more;
    - a flatten + dense head, not global average pooling: Fashion-MNIST
      garments are centred, so *where* a feature is carries class
      information that GAP throws away; a GAP model of about the same MACs
      was less accurate and slower to train. The dense layer holds most of
      the weights (3136 x 96), which is why the width stays <= 32 within
      400 KB.
    Every layer converts to builtin int8 ops: CONV_2D, MAX_POOL_2D,
    FULLY_CONNECTED, SOFTMAX, and for Flatten a RESHAPE (plus SHAPE,
    STRIDED_SLICE and PACK computing its batch size).
    """
    inputs, x = _inputs()
    x = layers.Conv2D(width // 2, 3, padding="same", activation="relu")(x)  # 28x28
    x = layers.Conv2D(width // 2, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)  # 14x14
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)  # 7x7
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(3 * width, activation="relu")(x)
    return _head(x, inputs, "edge")


MODELS = dict(zip(ZOO, (mlp, cnn, minivgg, edge)))


def build(name: str, width: int | None = None, dropout: float | None = None) -> keras.Model:
    """Build a zoo model by name; width/dropout None keeps the model's default."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    kwargs = {k: v for k, v in (("width", width), ("dropout", dropout)) if v is not None}
    return MODELS[name](**kwargs)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one image through the conv and dense layers.

    Counted analytically from the layer shapes (pooling, BN, activations are
    ignored: they are small and BN is folded into the conv on conversion).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D, layers.Dense)):
            out_shape = layer.output.shape  # (None, H, W, C) or (None, C)
            spatial = 1
            for d in out_shape[1:-1]:
                spatial *= d
            out_ch = out_shape[-1]
            in_ch = layer.input.shape[-1]
            if isinstance(layer, layers.SeparableConv2D):
                kh, kw = layer.kernel_size
                total += spatial * in_ch * kh * kw + spatial * in_ch * out_ch
            elif isinstance(layer, layers.DepthwiseConv2D):
                kh, kw = layer.kernel_size
                total += spatial * in_ch * kh * kw
            elif isinstance(layer, layers.Conv2D):
                kh, kw = layer.kernel_size
                total += spatial * in_ch * kh * kw * out_ch
            else:
                total += in_ch * out_ch
    return int(total)
