"""Where one inference's time goes, operator by operator, through the runtime's own interpreter.

    python -m tools.op_profile models/fashion_mnist_int8.tflite models/fashion_mnist_dynamic.tflite
    python -m tools.op_profile MODEL... --threads 1 --rounds 15 --runs 300 --out_dir benchmarks

Neither Python API of ai-edge-litert 2.3 (`Interpreter`, `CompiledModel`)
can attach a profiler: the C library has one (`LiteRtCompiledModelGetProfiler`),
but no binding reaches it. So the time of each operator is measured with
prefix models: the converted FlatBuffer cut after operator i (operators
0..i kept byte for byte, same tensors, same quantization, the subgraph's
output set to operator i's output, later operators dropped), each prefix
timed with the same interpreter, XNNPACK and thread count as the benchmark;
operator i's time is the difference between the prefix ending at i and the
one before it. Prefix 0 (no operators, output = input) is what `invoke()`
costs around the work. The prefixes are timed in interleaved rounds, so a
change in the machine's load falls on every prefix alike, and each figure is
the median of the rounds' medians.

What a difference includes: the operator's kernel, and the change in what
the interpreter does around it (e.g. writing the new last tensor out of
XNNPACK instead of the previous one). Differences of a microsecond or two are
within the noise of a loaded machine; a negative one says so.

Writes `benchmarks/op_profile.json` and `benchmarks/op_profile.md`, atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

from edge_runtime import atomic, process
from edge_runtime import bench as rt
from edge_runtime.argtypes import count
from edge_runtime.errors import ModelError
from edge_runtime.metadata import flatbuffer_part

SCHEMA = "fashion-edge-op-profile/1"
ITERATIONS = {"rounds": (15, 3), "runs": (300, 20), "warmup": (50, 5)}  # (full, --quick)
FILE_IDENTIFIER = b"TFL3"

# Operators whose multiply-accumulates are counted; the others move, compare or
# rescale values (QUANTIZE, MAX_POOL_2D, RESHAPE, SOFTMAX): 0 MACs here.
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


# -- the FlatBuffer: operators, MACs, prefixes (pure) ------------------------------------

def _schema():
    # The TFLite schema bindings shipped with the interpreter package: no TensorFlow needed.
    from ai_edge_litert import schema_py_generated
    return schema_py_generated


def _unpack(flatbuffer: bytes):
    fb = _schema()
    buf = bytearray(flatbuffer_part(flatbuffer))
    if len(buf) < 8 or not fb.Model.ModelBufferHasIdentifier(buf, 0):
        raise ModelError("not a TFLite FlatBuffer (no TFL3 identifier)")
    try:
        model = fb.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:  # a damaged FlatBuffer fails anywhere in the generated reader
        raise ModelError(f"damaged TFLite FlatBuffer: {type(e).__name__}: {e}") from e
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise ModelError(f"expected a model with one subgraph, found {len(model.subgraphs or [])}")
    return model


def _pack(model) -> bytes:
    import flatbuffers
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _op_name(model, op) -> str:
    fb = _schema()
    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)  # the schema keeps codes < 127 in both
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(number, f"BUILTIN_{number}") if number != fb.BuiltinOperator.CUSTOM else f"CUSTOM:{code.customCode}"


def op_macs(op: str, input_shapes: list[list[int]], output_shapes: list[list[int]]) -> int:
    """Multiply-accumulates of one operator for its shapes as stored (batch 1 for a dynamic batch). Pure.

    CONV_2D: output elements x kernel height x width x input channels;
    DEPTHWISE_CONV_2D: output elements x kernel height x width;
    FULLY_CONNECTED: rows x output features x input features; others 0.
    """
    def size(shape):
        return math.prod(max(1, int(d)) for d in shape)  # -1 (dynamic batch) counts as 1
    if op == "CONV_2D":
        _, kh, kw, cin = input_shapes[1]
        return size(output_shapes[0]) * kh * kw * cin
    if op == "DEPTHWISE_CONV_2D":
        _, kh, kw, _ = input_shapes[1]
        return size(output_shapes[0]) * kh * kw
    if op == "FULLY_CONNECTED":
        n_out, n_in = input_shapes[1][0], input_shapes[1][-1]
        rows = size(output_shapes[0]) // n_out
        return rows * n_out * n_in
    return 0


def operators(flatbuffer: bytes) -> list[dict]:
    """Each operator of the model's subgraph, in execution order: name, shapes, dtypes, MACs. Pure."""
    fb = _schema()
    model = _unpack(flatbuffer)
    graph = model.subgraphs[0]
    types = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}

    def shape(i):
        t = graph.tensors[i]
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        return [int(d) for d in (sig if sig is not None else [])]

    out = []
    for index, op in enumerate(graph.operators or []):
        name = _op_name(model, op)
        ins = [int(i) for i in op.inputs if i >= 0]
        outs = [int(i) for i in op.outputs]
        in_shapes, out_shapes = [shape(i) for i in ins], [shape(i) for i in outs]
        out.append({"index": index, "op": name,
                    "inputs": [{"shape": s, "dtype": types.get(graph.tensors[i].type, "?")} for i, s in zip(ins, in_shapes)],
                    "outputs": [{"shape": s, "dtype": types.get(graph.tensors[i].type, "?")} for i, s in zip(outs, out_shapes)],
                    "macs": op_macs(name, in_shapes, out_shapes)})
    return out


def frontier(graph_inputs: list[int], graph_outputs: list[int], ops_io: list[tuple[list[int], list[int]]],
             n_ops: int) -> list[int]:
    """The tensors the first `n_ops` operators hand on: the last one's outputs, then every other
    tensor they produce that a later operator reads or that the graph outputs. Pure.

    Making all of them outputs keeps every kept operator live (XNNPACK drops a
    node whose outputs nobody reads). For a chain it is the last operator's
    output; with no operators, the graph's inputs.
    """
    if n_ops == 0:
        return list(graph_inputs)
    if n_ops == len(ops_io):
        return list(graph_outputs)
    produced = [t for _, outs in ops_io[:n_ops] for t in outs]
    read_later = {t for ins, _ in ops_io[n_ops:] for t in ins} | set(graph_outputs)
    out = list(ops_io[n_ops - 1][1])
    out += [t for t in produced if t in read_later and t not in out]
    return out


def cut_after(flatbuffer: bytes, n_ops: int) -> bytes:
    """The model of the first `n_ops` operators, its outputs their `frontier`. Pure.

    The kept operators, tensors, buffers and quantization are the original's;
    later operators are dropped, and so are the signatures (they name the
    original outputs). n_ops = 0 gives a model whose output is its input;
    n_ops = the operator count keeps the original outputs.
    """
    model = _unpack(flatbuffer)
    graph = model.subgraphs[0]
    ops = list(graph.operators or [])
    if not 0 <= n_ops <= len(ops):
        raise ValueError(f"n_ops must be 0..{len(ops)}, got {n_ops}")
    ops_io = [([int(i) for i in op.inputs if i >= 0], [int(i) for i in op.outputs]) for op in ops]
    graph.outputs = frontier([int(i) for i in graph.inputs], [int(i) for i in graph.outputs], ops_io, n_ops)
    graph.operators = ops[:n_ops]
    model.signatureDefs = None
    return _pack(model)


def prefixes(flatbuffer: bytes) -> list[bytes]:
    """cut_after for 0..N operators: N + 1 models, the last one the whole graph repacked. Pure."""
    n = len(_unpack(flatbuffer).subgraphs[0].operators or [])
    return [cut_after(flatbuffer, k) for k in range(n + 1)]


def differences(prefix_us: list[float]) -> list[float]:
    """Per-operator time from the prefixes' times: t[i] - t[i-1] for i = 1..N. Pure."""
    return [round(b - a, 3) for a, b in zip(prefix_us, prefix_us[1:])]


def profile_rows(ops: list[dict], prefix_us: list[float]) -> list[dict]:
    """One row per operator: µs, share of the work's time (prefix N - prefix 0), MACs, GMAC/s. Pure."""
    if len(prefix_us) != len(ops) + 1:
        raise ValueError(f"need {len(ops) + 1} prefix times for {len(ops)} operators, got {len(prefix_us)}")
    work = prefix_us[-1] - prefix_us[0]
    rows = []
    for op, us in zip(ops, differences(prefix_us)):
        gmacs = round(op["macs"] / (us * 1e-6) / 1e9, 1) if op["macs"] and us > 0 else None
        rows.append({"index": op["index"], "op": op["op"], "shape": _shape_text(op), "us": us,
                     "share": round(us / work, 4) if work > 0 else None, "macs": op["macs"], "gmacs_per_s": gmacs})
    return rows


def _shape_text(op: dict) -> str:
    """'28x28x1 -> 28x28x16 (3x3)': the first input and output without the batch axis. Pure."""
    def dims(s):
        return "x".join(str(d) for d in s[1:]) if len(s) > 1 else "x".join(str(d) for d in s)
    text = f"{dims(op['inputs'][0]['shape'])} -> {dims(op['outputs'][0]['shape'])}" if op["inputs"] and op["outputs"] else ""
    if op["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op["inputs"]) > 1:
        kh, kw = op["inputs"][1]["shape"][1:3]
        text += f" ({kh}x{kw})"
    return text


def top_ops(profile: dict, n: int = 4) -> list[dict]:
    """The n operators taking the most time, slowest first. Pure."""
    return sorted(profile["ops"], key=lambda r: r["us"], reverse=True)[:n]


# -- measuring ---------------------------------------------------------------------------

def timing_input(detail: dict):
    """A model input for timing: the benchmark's image where it fits (pixels as the Classifier feeds
    them), else deterministic values of the input's dtype and shape."""
    import numpy as np
    shape = [max(1, int(d)) for d in detail["shape"]]
    dtype = np.dtype(detail["dtype"])
    if len(shape) == 4 and tuple(shape[1:]) == (28, 28, 1) and dtype in (np.uint8, np.float32):
        return rt.model_input_for_timing()[None, ..., None].astype(dtype)
    rng = np.random.Generator(np.random.PCG64(7))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def _ready_interpreter(flatbuffer: bytes, threads: int):
    from edge_runtime.interpreter import find_interpreter
    try:
        interpreter = find_interpreter().factory(model_content=flatbuffer, num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"the interpreter can't run this model: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from e
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], timing_input(detail))
    return interpreter


def time_models(flatbuffers: list[bytes], threads: int = 1, rounds: int = ITERATIONS["rounds"][0],
                runs: int = ITERATIONS["runs"][0], warmup: int = ITERATIONS["warmup"][0]) -> list[dict]:
    """invoke() of each model, in interleaved rounds: per model the median of the rounds' medians
    (µs), and the spread of those round medians."""
    from edge_runtime.timing import summarize, time_calls
    interpreters = [_ready_interpreter(f, threads) for f in flatbuffers]
    for it in interpreters:
        time_calls(it.invoke, 1, warmup)
    per_round: list[list[float]] = [[] for _ in interpreters]
    for _ in range(rounds):
        for i, it in enumerate(interpreters):
            per_round[i].append(summarize(time_calls(it.invoke, runs, max(1, warmup // 10)))["median_us"])
    return [{"median_us": round(summarize(r)["median_us"], 3), "round_min_us": min(r), "round_max_us": max(r)}
            for r in per_round]


def profile_model(path: Path, threads: int = 1, rounds: int = ITERATIONS["rounds"][0],
                  runs: int = ITERATIONS["runs"][0], warmup: int = ITERATIONS["warmup"][0]) -> dict:
    """The per-operator profile of one .tflite model (see the module docstring)."""
    from edge_runtime.bench import model_facts
    data = Path(path).read_bytes()
    ops = operators(data)
    models = prefixes(data) + [flatbuffer_part(data)]  # the file itself last: repacking must not change its time
    timed = time_models(models, threads, rounds, runs, warmup)
    prefix_us = [t["median_us"] for t in timed[:-1]]
    facts = model_facts(path)
    return {"model": str(path), "variant": facts.get("variant") or Path(path).stem, "threads": threads,
            "rounds": rounds, "runs_per_round": runs, "macs": sum(op["macs"] for op in ops),
            "invoke_us": prefix_us[-1], "invoke_original_file_us": timed[-1]["median_us"],
            "empty_graph_us": prefix_us[0], "prefix_us": prefix_us,
            "prefix_round_spread_us": [[t["round_min_us"], t["round_max_us"]] for t in timed[:-1]],
            "ops": profile_rows(ops, prefix_us)}


# -- output ------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    """op_profile.md: one table per model, and the same operators side by side. Pure."""
    m = results["machine"]
    lines = ["# Per-operator profile", "",
             f"{results['created'][:10]} · {rt.describe_machine(m)}  ",
             f"Command: `{results['command']}`  "]
    if m.get("load_average"):
        lines.append(f"Load average at start: {', '.join(str(x) for x in m['load_average'])} "
                     f"(on {m.get('cores_usable')} cores)  ")
    if results.get("quick"):
        lines.append("**--quick run: a handful of iterations; the figures only show that everything runs.**  ")
    lines += ["", "Method: prefix models (the FlatBuffer cut after each operator, timed with the same "
              "interpreter, XNNPACK, 1 thread; an operator's time is the difference of consecutive prefixes; "
              "see `tools/op_profile.py`). Times are `invoke()` medians; the share is of the operators' "
              "total (whole graph minus the empty graph)."]
    for p in results["profiles"]:
        lines += ["", f"## {p['variant']} (`{p['model']}`), {p['threads']} thread(s)", "",
                  f"Whole graph {rt.fmt_us(p['invoke_us'])} (the file as converted: "
                  f"{rt.fmt_us(p['invoke_original_file_us'])}), empty graph {rt.fmt_us(p['empty_graph_us'])}, "
                  f"{p['macs']:,} MACs.", "",
                  "| # | operator | shape | µs | share | MACs | GMAC/s |", "|---:|---|---|---:|---:|---:|---:|"]
        for r in p["ops"]:
            share = "-" if r["share"] is None else f"{r['share']:.0%}"
            gmacs = "-" if r["gmacs_per_s"] is None else f"{r['gmacs_per_s']:.0f}"
            lines.append(f"| {r['index']} | {r['op']} | {r['shape']} | {r['us']:.1f} | {share} | {r['macs']:,} | {gmacs} |")
    side = side_by_side(results["profiles"])
    if side:
        names = [p["variant"] for p in results["profiles"]]
        lines += ["", "## The same operators side by side (µs)", "",
                  "| operator | shape | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        for row in side:
            lines.append(f"| {row['op']} | {row['shape']} | "
                         + " | ".join("-" if row[n] is None else f"{row[n]:.1f}" for n in names) + " |")
    peak = results.get("measured_peak")
    if peak:
        lines += ["", f"Measured int8 peak of one core through the same runtime: **{peak['gmacs_per_s']:.0f} GMAC/s** "
                  f"(`{peak['best']}`; see results.md)."]
    return "\n".join(lines) + "\n"


def side_by_side(profiles: list[dict]) -> list[dict]:
    """Operators matched across models by (op, shape), in the first model's order; µs per variant. Pure.

    QUANTIZE operators exist only in the int8 graph: they appear with '-' elsewhere.
    """
    if len(profiles) < 2:
        return []
    keyed = [{(r["op"], r["shape"]): r["us"] for r in p["ops"]} for p in profiles]
    order, seen = [], set()
    for p in profiles:
        for r in p["ops"]:
            key = (r["op"], r["shape"])
            if key not in seen:
                seen.add(key)
                order.append(key)
    return [{"op": op, "shape": shape, **{p["variant"]: k.get((op, shape)) for p, k in zip(profiles, keyed)}}
            for op, shape in order]


# -- command line --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.op_profile", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("models", nargs="+", type=Path, help=".tflite models to profile")
    p.add_argument("--threads", type=count(1), default=1, help="interpreter threads")
    p.add_argument("--quick", action="store_true", help="a handful of iterations: checks everything runs")
    for name, (full, quick) in ITERATIONS.items():
        p.add_argument(f"--{name}", type=count(1), default=None, help=f"default {full}; {quick} with --quick")
    p.add_argument("--peak", action="store_true", help="also measure the int8 peak (tools.cpu_peak) for the table")
    p.add_argument("--out_dir", type=Path, default=Path("benchmarks"), help="where op_profile.{json,md} go")
    return p


def iterations(args) -> dict:
    return {name: getattr(args, name) if getattr(args, name) is not None else ITERATIONS[name][1 if args.quick else 0]
            for name in ITERATIONS}


@process.command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    it = iterations(args)
    for path in args.models:
        if not path.is_file():
            raise ModelError(f"model {path} not found")
    machine = rt.machine_info()
    profiles = []
    for path in args.models:
        print(f"{path}: {len(operators(path.read_bytes()))} operators, timing every prefix", flush=True)
        profiles.append(profile_model(path, args.threads, **it))
    results = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "command": f"python -m tools.op_profile {shlex.join(argv)}", "quick": args.quick,
               "machine": machine, "iterations": it, "profiles": profiles}
    if args.peak:
        from . import cpu_peak
        results["measured_peak"] = cpu_peak.measured_peak(threads=args.threads, quick=args.quick)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out_dir / "op_profile.json", json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    atomic.write_text(args.out_dir / "op_profile.md", text)
    print(text)
    print(f"wrote {args.out_dir / 'op_profile.json'}, {args.out_dir / 'op_profile.md'}")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
