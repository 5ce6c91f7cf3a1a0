"""The converted graph's shape: one XNNPACK partition, and how to tell.

Keras' Flatten reshapes to (batch, features) with the batch size read at run
time (`ops.shape(x)[0]`), which TFLite turns into SHAPE, STRIDED_SLICE, PACK
and RESHAPE. XNNPACK does not take SHAPE, STRIDED_SLICE or PACK, so the
interpreter runs them itself between two delegated partitions: two hand-overs
per inference, and the second partition's operators are planned apart from
the first. A reshape to (-1, features), features known when converting, is
one RESHAPE with a constant shape, which XNNPACK takes; the batch axis stays
dynamic, so batching still works.

`static_flatten` swaps every Flatten for that reshape before conversion. The
weights and outputs are unchanged (Flatten has no weights; the test compares
outputs), and the saved Keras model keeps its Flatten: this is a conversion
detail, not part of the model.
"""

from __future__ import annotations

import math

# TFLite builtin ops the XNNPACK delegate takes in the graphs this project
# converts (int8, float16 and float32). A graph of these only is one partition.
XNNPACK_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "FULLY_CONNECTED", "HARD_SWISH", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE",
    "RELU", "RELU6", "RESHAPE", "SOFTMAX", "SUB",
})


def static_flatten(model):
    """The Keras model with every Flatten replaced by a reshape to (-1, features); same weights."""
    import keras
    from keras import layers, ops

    class StaticFlatten(layers.Layer):
        """Flatten with the feature count fixed: reshape to (-1, features)."""

        def __init__(self, features: int, **kwargs):
            super().__init__(**kwargs)
            self.features = features

        def call(self, x):
            return ops.reshape(x, (-1, self.features))

        def compute_output_shape(self, shape):
            return (shape[0], self.features)

    if not any(isinstance(layer, layers.Flatten) for layer in model.layers):
        return model

    def clone(layer):
        if isinstance(layer, layers.Flatten):
            return StaticFlatten(math.prod(layer.input.shape[1:]), name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    static = keras.models.clone_model(model, clone_function=clone)
    static.set_weights(model.get_weights())
    return static


def op_names(flatbuffer: bytes) -> list[str]:
    """The model's operators in execution order, e.g. ['QUANTIZE', 'CONV_2D', ...]."""
    from edge_runtime.interpreter import find_interpreter
    interpreter = find_interpreter().factory(model_content=flatbuffer)
    # Private, but the only listing of a model's operators the Python interpreters offer.
    return [op["op_name"] for op in interpreter._get_ops_details()]


def partitions(ops: list[str], delegated=XNNPACK_OPS) -> list[list[str]]:
    """The runs of consecutive delegated ops: what XNNPACK would take as separate partitions. Pure.

    The ops between two runs are the interpreter's own; one run means the
    whole graph is delegated in one piece.
    """
    runs, current = [], []
    for op in ops:
        if op in delegated:
            current.append(op)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


# -- outputs: class scores first, then the embedding ---------------------------------

EMBEDDING_LAYER_INPUT = "logits"  # the embedding is what this layer reads (train/models.py `_head`)


def with_embedding(model):
    """The Keras model with a second output: the features its `logits` layer reads, i.e. the
    penultimate layer after dropout (the identity at inference). Same weights, same first output.
    A model without a `logits` layer is returned unchanged (one output)."""
    import keras
    try:
        features = model.get_layer(EMBEDDING_LAYER_INPUT).input
    except ValueError:
        return model
    return keras.Model(model.inputs, [model.outputs[0], features], name=model.name)


def reorder_outputs(flatbuffer: bytes, order: list[int]) -> bytes:
    """The FlatBuffer with its main subgraph's outputs listed in `order` (positions into the
    current list). Only the output list changes: the same int32 tensor indices, permuted in
    place, so no offset moves. The converter lists a multi-output Keras model's outputs in an
    order of its own; readers that take output 0 must get the class scores."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    subgraph = model.Subgraphs(0)
    current = [int(subgraph.Outputs(i)) for i in range(subgraph.OutputsLength())]
    if sorted(order) != list(range(len(current))):
        raise ValueError(f"{order} is not a permutation of {len(current)} outputs")
    # The vector's first element sits at Vector(offset of field `outputs`), as Outputs(j) reads it.
    start = subgraph._tab.Vector(subgraph._tab.Offset(8))
    patched = bytearray(flatbuffer)
    for j, i in enumerate(order):
        patched[start + 4 * j:start + 4 * j + 4] = current[i].to_bytes(4, "little", signed=True)
    return bytes(patched)
