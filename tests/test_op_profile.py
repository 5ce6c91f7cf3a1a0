"""The per-operator profile: prefix models cut from a real converted model compute exactly
what the whole model computes up to that operator, and the arithmetic on their times.
Nothing here asserts a timing: only that figures exist and add up."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT
from edge_runtime.errors import ModelError
from edge_runtime.metadata import read_metadata
from tools import cpu_peak, op_profile

SHIPPED = ROOT / "edge_runtime" / "shipped" / "fashion_mnist_int8.tflite"


def _reference_interpreter(flatbuffer: bytes, keep_all: bool = False):
    """TFLite's own kernels, no delegate: integer arithmetic that doesn't depend on the CPU."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=flatbuffer, num_threads=1, experimental_preserve_all_tensors=keep_all,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def _images(n: int = 3) -> np.ndarray:
    from edge_runtime import dataset
    return dataset.load().test_images[:n]


@pytest.fixture(scope="module")
def shipped() -> bytes:
    return SHIPPED.read_bytes()


# -- the cut ------------------------------------------------------------------------------------

def test_every_prefix_outputs_exactly_the_whole_models_intermediate_tensor(shipped):
    """Prefix k's output is, bit for bit, the tensor operator k-1 writes when the whole model runs."""
    ops = op_profile.operators(shipped)
    full = _reference_interpreter(shipped, keep_all=True)
    full_in = full.get_input_details()[0]
    full_ops = full._get_ops_details()
    assert [o["op_name"] for o in full_ops] == [o["op"] for o in ops]
    for image in _images():
        x = image[None, :, :, None].astype(full_in["dtype"])
        full.set_tensor(full_in["index"], x)
        full.invoke()
        for k in range(1, len(ops) + 1):
            prefix = _reference_interpreter(op_profile.cut_after(shipped, k))
            assert [o["op_name"] for o in prefix._get_ops_details()] == [o["op"] for o in ops[:k]]
            prefix.set_tensor(prefix.get_input_details()[0]["index"], x)
            prefix.invoke()
            out = prefix.get_output_details()[0]
            expected_index = full_ops[k - 1]["outputs"][0]
            expected = full.get_tensor(expected_index)
            got = prefix.get_tensor(out["index"])
            assert got.dtype == expected.dtype and np.array_equal(got, expected), f"prefix {k} ({ops[k - 1]['op']})"
            # same tensor, same quantization: the cut changes which tensor is an output, nothing else
            assert out["quantization"] == full.get_tensor_details()[expected_index]["quantization"]


def test_the_whole_prefix_is_the_model_through_xnnpack_too(shipped):
    """Repacking the full graph changes nothing the delegated kernels compute."""
    from ai_edge_litert.interpreter import Interpreter
    outputs = []
    for blob in (shipped, op_profile.cut_after(shipped, len(op_profile.operators(shipped)))):
        it = Interpreter(model_content=blob, num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.resize_tensor_input(d["index"], [4, 28, 28, 1])
        it.allocate_tensors()
        it.set_tensor(d["index"], _images(4)[..., None].astype(d["dtype"]))
        it.invoke()
        outputs.append([it.get_tensor(o["index"]) for o in it.get_output_details()])
    assert len(outputs[0]) == len(outputs[1])
    for a, b in zip(*outputs):
        assert np.array_equal(a, b)


def test_prefix_zero_returns_its_input_and_prefixes_count(shipped):
    n = len(op_profile.operators(shipped))
    blobs = op_profile.prefixes(shipped)
    assert len(blobs) == n + 1
    empty = _reference_interpreter(blobs[0])
    assert empty._get_ops_details() == []
    x = _images(1)[..., None].astype(empty.get_input_details()[0]["dtype"])
    empty.set_tensor(empty.get_input_details()[0]["index"], x)
    empty.invoke()
    assert np.array_equal(empty.get_tensor(empty.get_output_details()[0]["index"]), x)


def test_cut_refuses_what_it_cannot_cut(shipped, tmp_path):
    with pytest.raises(ValueError):
        op_profile.cut_after(shipped, -1)
    with pytest.raises(ValueError):
        op_profile.cut_after(shipped, len(op_profile.operators(shipped)) + 1)
    for bad in (b"", b"not a model at all", b"\x00" * 4 + b"TFL3" + b"\xff" * 40):
        with pytest.raises(ModelError):
            op_profile.operators(bad)


def test_frontier_keeps_every_kept_operator_live():
    # 0: a -> b; 1: b -> c; 2: b -> d (a branch); 3: c, d -> e; graph outputs e and d
    ops_io = [([0], [1]), ([1], [2]), ([1], [3]), ([2, 3], [4])]
    assert op_profile.frontier([0], [4, 3], ops_io, 0) == [0]
    assert op_profile.frontier([0], [4, 3], ops_io, 1) == [1]
    assert op_profile.frontier([0], [4, 3], ops_io, 2) == [2, 1]  # b is still read by operator 2
    assert op_profile.frontier([0], [4, 3], ops_io, 3) == [3, 2]  # c for operator 3; d is also a graph output
    assert op_profile.frontier([0], [4, 3], ops_io, 4) == [4, 3]  # the original outputs, in their order
    chain = [([0], [1]), ([1], [2])]
    assert op_profile.frontier([0], [2], chain, 1) == [1]


# -- MACs and the arithmetic ----------------------------------------------------------------------

def test_op_macs():
    assert op_profile.op_macs("CONV_2D", [[1, 28, 28, 1], [16, 3, 3, 1], [16]], [[1, 28, 28, 16]]) == 28 * 28 * 16 * 9
    assert op_profile.op_macs("CONV_2D", [[-1, 14, 14, 16], [64, 3, 3, 16], [64]], [[-1, 14, 14, 64]]) == 14 * 14 * 64 * 9 * 16
    assert op_profile.op_macs("DEPTHWISE_CONV_2D", [[1, 28, 28, 8], [1, 3, 3, 8], [8]], [[1, 28, 28, 8]]) == 28 * 28 * 8 * 9
    assert op_profile.op_macs("FULLY_CONNECTED", [[-1, 3136], [96, 3136], [96]], [[-1, 96]]) == 3136 * 96
    assert op_profile.op_macs("FULLY_CONNECTED", [[256, 1024], [1024, 1024]], [[256, 1024]]) == 256 * 1024 * 1024
    for other in ("QUANTIZE", "MAX_POOL_2D", "RESHAPE", "SOFTMAX"):
        assert op_profile.op_macs(other, [[1, 10]], [[1, 10]]) == 0


def test_operators_count_the_same_macs_as_training(shipped):
    """The MACs per operator add up to the count the training run recorded for the model."""
    ops = op_profile.operators(shipped)
    recorded = read_metadata(SHIPPED)["training"]["macs_per_image"]
    assert sum(o["macs"] for o in ops) == recorded
    assert all(o["macs"] > 0 for o in ops if o["op"] in op_profile.MAC_OPS)


def test_differences_and_rows():
    assert op_profile.differences([1.0, 3.0, 2.5, 10.0]) == [2.0, -0.5, 7.5]
    ops = [{"index": 0, "op": "CONV_2D", "macs": 2_000_000, "inputs": [{"shape": [1, 4, 4, 1]}, {"shape": [2, 3, 3, 1]}],
            "outputs": [{"shape": [1, 4, 4, 2]}]},
           {"index": 1, "op": "SOFTMAX", "macs": 0, "inputs": [{"shape": [1, 10]}], "outputs": [{"shape": [1, 10]}]}]
    rows = op_profile.profile_rows(ops, [1.0, 11.0, 21.0])  # 10 µs each, 20 µs of work
    assert [r["us"] for r in rows] == [10.0, 10.0]
    assert [r["share"] for r in rows] == [0.5, 0.5]
    assert rows[0]["gmacs_per_s"] == 200.0 and rows[1]["gmacs_per_s"] is None  # 2e6 MACs in 10 µs
    assert rows[0]["shape"] == "4x4x1 -> 4x4x2 (3x3)" and rows[1]["shape"] == "10 -> 10"
    noisy = op_profile.profile_rows(ops, [1.0, 0.5, 21.0])  # a negative difference stays visible, no rate
    assert noisy[0]["us"] == -0.5 and noisy[0]["gmacs_per_s"] is None
    with pytest.raises(ValueError):
        op_profile.profile_rows(ops, [1.0, 2.0])
    profile = {"ops": rows + [{**rows[0], "index": 2, "us": 30.0}]}
    assert [r["index"] for r in op_profile.top_ops(profile, 2)] == [2, 0]


def test_side_by_side_matches_operators_by_kind_and_shape():
    a = {"variant": "int8", "ops": [{"op": "QUANTIZE", "shape": "s", "us": 1.0}, {"op": "CONV_2D", "shape": "c", "us": 9.0}]}
    b = {"variant": "dynamic", "ops": [{"op": "CONV_2D", "shape": "c", "us": 7.0}, {"op": "DEQUANTIZE", "shape": "d", "us": 2.0}]}
    side = op_profile.side_by_side([a, b])
    assert side == [{"op": "QUANTIZE", "shape": "s", "int8": 1.0, "dynamic": None},
                    {"op": "CONV_2D", "shape": "c", "int8": 9.0, "dynamic": 7.0},
                    {"op": "DEQUANTIZE", "shape": "d", "int8": None, "dynamic": 2.0}]
    assert op_profile.side_by_side([a]) == []


# -- the command, on the real shipped model -----------------------------------------------------

def test_command_writes_the_profile(tmp_path, capsys):
    code = op_profile.main([str(SHIPPED), "--quick", "--out_dir", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "op_profile.json").read_text())
    (profile,) = result["profiles"]
    n = len(op_profile.operators(SHIPPED.read_bytes()))
    assert len(profile["ops"]) == n and len(profile["prefix_us"]) == n + 1
    assert profile["invoke_us"] > 0 and profile["invoke_original_file_us"] > 0
    # the rows' times add up to the whole graph minus the empty one
    assert sum(r["us"] for r in profile["ops"]) == pytest.approx(profile["invoke_us"] - profile["empty_graph_us"], abs=0.01)
    assert profile["macs"] == sum(r["macs"] for r in profile["ops"])
    md = (tmp_path / "op_profile.md").read_text()
    assert "--quick run" in md and "| CONV_2D |" in md
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_command_errors_are_one_line(tmp_path, capsys):
    assert op_profile.main([str(tmp_path / "missing.tflite"), "--quick", "--out_dir", str(tmp_path)]) == 4
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 4 + b"TFL3" + b"\x07" * 100)
    assert op_profile.main([str(bad), "--quick", "--out_dir", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "Traceback" not in err
    assert not (tmp_path / "op_profile.json").exists()


# -- the measured peak: a cached model is used only when it is what it claims -------------------------

def test_peak_cache_uses_only_a_readable_one_operator_model(shipped, tmp_path):
    one_op = tmp_path / "one.tflite"
    one_op.write_bytes(op_profile.cut_after(shipped, 1))
    first = op_profile.operators(shipped)[0]["op"]
    assert cpu_peak._usable(one_op, first)
    assert not cpu_peak._usable(one_op, "FULLY_CONNECTED")  # another layer's file
    whole = tmp_path / "whole.tflite"
    whole.write_bytes(shipped)
    assert not cpu_peak._usable(whole, first)  # more than one operator
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(shipped[:1000])
    assert not cpu_peak._usable(damaged, first)
    assert not cpu_peak._usable(tmp_path / "missing.tflite", first)
