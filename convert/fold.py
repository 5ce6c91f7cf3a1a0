"""Fold a BatchNorm that follows a ReLU before int8 quantization.

The TFLite converter folds BatchNorm into the conv or dense layer *before*
it. MiniVGGNet's published order is conv -> ReLU -> BatchNorm, so the
converter can't do that: it leaves a per-channel MUL and ADD after a conv,
and after the dense-512 layer it folds the BatchNorm into the logits
layer's weights. Both quantize badly for the same reason. BatchNorm scales
each channel by s = gamma / sqrt(var + eps), and a channel whose training
variance was tiny gets a large s (3e-6 variance, s = 31 in a 3-epoch
MiniVGGNet): its values before the scale are a few thousandths, far below
one step of the tensor's shared int8 scale, and the logits layer's
per-output-channel weight scale must cover rows multiplied by 0.12 and by
31. The debugger measures the logits layer's error at 22 quantization
steps (rmse / scale) where a well quantized layer shows 0.3, and the int8
model falls from 90.5% to 59.9%.

ReLU commutes with a positive scale (s * relu(z) = relu(s * z)), so for
s > 0 the BatchNorm is exactly

    relu(conv(x; W * s, b * s)) + t,   t = beta - mean * s

The scale goes into the layer before (its weights are quantized per output
channel, so each channel keeps its own int8 scale), every tensor then holds
normalized values, and the shift t stays as a per-channel ADD. It is kept
as an ADD rather than folded into the next conv because with "same"
padding the next conv would add t at the zero-padded border too. A
BatchNorm with any s <= 0 (gamma <= 0) is left as it is.
"""

from __future__ import annotations

import numpy as np

_LINEAR = (None, "linear")


def bn_scale_shift(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                   epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm at inference as y = x * s + t, per channel. Pure."""
    s = gamma / np.sqrt(var + epsilon)
    return s, beta - mean * s


def fold_scale(kernel: np.ndarray, bias: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of the layer before a ReLU, with the per-output-channel scale `s` folded in.
    The output channel is the kernel's last axis for Conv2D and Dense. Pure."""
    if np.any(s <= 0):
        raise ValueError("only a positive scale commutes with ReLU")
    return kernel * s, bias * s


def _is_relu(layer) -> bool:
    import keras
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        return not cfg.get("max_value") and not cfg.get("negative_slope") and not cfg.get("threshold")
    if isinstance(layer, keras.layers.Activation):
        return layer.get_config()["activation"] == "relu"
    return False


def _is_chain(model) -> bool:
    """Every layer feeds the next and nothing else: the shape of every model in the zoo."""
    layers = model.layers
    if len(model.inputs) != 1 or len(model.outputs) != 1 or not layers:
        return False
    try:
        return all(len(layer._inbound_nodes) == 1 and layer.input is prev.output
                   for prev, layer in zip(layers, layers[1:])) and model.outputs[0] is layers[-1].output
    except (AttributeError, ValueError):
        return False


def foldable(model) -> list[tuple[int, int, int]]:
    """(conv or dense, ReLU, BatchNorm) layer indices where the BatchNorm can be folded backwards."""
    import keras
    if not _is_chain(model):
        return []
    layers, found = model.layers, []
    for i in range(len(layers) - 2):
        linear, relu, bn = layers[i:i + 3]
        if (isinstance(linear, (keras.layers.Conv2D, keras.layers.Dense)) and linear.use_bias
                and linear.get_config()["activation"] in _LINEAR and _is_relu(relu)
                and isinstance(bn, keras.layers.BatchNormalization) and bn.scale and bn.center
                and bn.axis in (-1, [-1], len(bn.input.shape) - 1, [len(bn.input.shape) - 1])):
            gamma, beta, mean, var = (w.numpy() for w in bn.weights)
            if np.all(bn_scale_shift(gamma, beta, mean, var, bn.epsilon)[0] > 0):
                found.append((i, i + 1, i + 2))
    return found


def fold_relu_batchnorm(model):
    """An equivalent Keras model for int8 conversion with every foldable ReLU -> BatchNorm
    folded (see the module docstring); the model itself when there is none."""
    import keras
    folds = {i: (j, k) for i, j, k in foldable(model)}
    if not folds:
        return model
    layers = model.layers
    x = inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    skip = set()
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.InputLayer) or i in skip:
            continue
        if i in folds:
            j, k = folds[i]
            bn = layers[k]
            gamma, beta, mean, var = (w.numpy() for w in bn.weights)
            s, t = bn_scale_shift(gamma, beta, mean, var, bn.epsilon)
            kernel, bias = fold_scale(*(w.numpy() for w in layer.weights), s)
            # The published layer names stay, so the diagnosis and --float_layers use them.
            folded = type(layer).from_config({**layer.get_config(), "activation": "relu"})
            x = folded(x)
            folded.set_weights([kernel, bias])
            x = _channel_shift(t, name=bn.name)(x)
            skip.update((j, k))
            continue
        clone = type(layer).from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=model.name)


def _channel_shift(shift: np.ndarray, name: str):
    """A layer computing x + shift, a constant per channel: one ADD in the TFLite graph."""
    import keras
    constant = np.asarray(shift, np.float32)

    class ChannelShift(keras.layers.Layer):
        def call(self, inputs):
            return inputs + keras.ops.convert_to_tensor(constant)

    return ChannelShift(name=name)
