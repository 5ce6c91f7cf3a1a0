"""The model zoo. Every model takes raw 0..255 pixels (28, 28, 1) and scales
them itself, and ends in a softmax, so the converter and the runtime feed
every model the same bytes and read probabilities back.

- mlp:     the classic Keras tutorial baseline.
- cnn:     the usual two-conv-block "dense vs CNN" comparison.
- minivgg: MiniVGGNet as published by PyImageSearch (~1.68M parameters).
- edge:    ours, for the device: depthwise-separable blocks and global average
           pooling instead of a 1.6M-weight dense head, BatchNorm (folded away
           by the converter) and ReLU only, so full-int8 conversion uses
           builtin ops alone.
"""

from __future__ import annotations

import keras
from keras import layers

from edge_runtime.contract import CLASS_NAMES, INPUT_SHAPE, PIXEL_SCALE

NUM_CLASSES = len(CLASS_NAMES)


def _inputs():
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")
    return inputs, layers.Rescaling(PIXEL_SCALE, name="scale")(inputs)


def _head(x, inputs, name):
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    outputs = layers.Softmax(name="probabilities")(x)
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


def _conv_bn_relu(x, filters, separable=True, name=None):
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def edge(width: int = 32, dropout: float = 0.3) -> keras.Model:
    """Our device model: 28x28 -> 14x14 -> 7x7 stages, channels doubling as
    resolution halves, so every stage costs about the same MACs.

    The first conv is a regular one (one input channel: a separable conv
    would be a 1-channel depthwise filter, i.e. nothing gained); after it,
    depthwise-separable convs cost ~1/9 of a regular 3x3 conv's MACs.
    """
    inputs, x = _inputs()
    x = _conv_bn_relu(x, width, separable=False)
    x = _conv_bn_relu(x, int(width * 1.5))
    x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, 3 * width)
    x = _conv_bn_relu(x, 3 * width)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, 6 * width)
    x = _conv_bn_relu(x, 6 * width)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return _head(x, inputs, "edge")


MODELS = {"mlp": mlp, "cnn": cnn, "minivgg": minivgg, "edge": edge}


def build(name: str, width: int | None = None, dropout: float | None = None) -> keras.Model:
    """Build a zoo model by name; width/dropout None keeps the model's default."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
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
