"""This core's int8 arithmetic peak, MEASURED through the runtime the benchmark uses, and the
ISA ESTIMATE it replaces (kept as a side note).

    python -m tools.cpu_peak              # measure: GMAC/s of each peak layer, 1 thread
    python -m tools.cpu_peak --threads 2 --quick

The measurement: single-layer models with known MACs (a 3x3 CONV_2D and a
FULLY_CONNECTED over a batch of rows, three sizes each), converted by
TensorFlow twice, full-integer (int8 activations: XNNPACK's qs8 kernels,
those the deployed int8 model runs) and dynamic-range (int8 weights,
activations quantized on the fly: its qd8 kernels, those the dynamic model
runs). Both do int8 x int8 multiply-accumulates with VNNI where the CPU has
it. Each is timed with the same interpreter (ai-edge-litert, XNNPACK) and
thread count as the benchmark; the measured peak is the fastest of them,
MACs / median time. The sizes show the plateau: a small layer pays fixed
costs, a large one has none left to hide.

The models are built once, in a child process that imports TensorFlow
(the benchmark process never does), and cached in .cache/int8_peak/ (not
in git); a missing or damaged one is rebuilt.

The device benchmark (`python -m edge_runtime bench`) does not carry this:
it is the workstation's reading aid for results.md, not a device figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from edge_runtime import process
from edge_runtime.bench import cpuinfo
from edge_runtime.errors import EdgeError, ModelError

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".cache" / "int8_peak"
# name, operator, dims: CONV_2D (height = width, input channels, output channels), 3x3, same padding;
# FULLY_CONNECTED (rows, input features, output features). The first conv is the edge model's largest layer.
PEAK_LAYERS = (
    ("conv_14x14x64_to_64", "CONV_2D", (14, 64, 64)),
    ("conv_28x28x64_to_64", "CONV_2D", (28, 64, 64)),
    ("conv_28x28x128_to_128", "CONV_2D", (28, 128, 128)),
    ("fc_16x256_to_256", "FULLY_CONNECTED", (16, 256, 256)),
    ("fc_64x512_to_512", "FULLY_CONNECTED", (64, 512, 512)),
    ("fc_256x1024_to_1024", "FULLY_CONNECTED", (256, 1024, 1024)),
)  # larger ones leave the plateau: 512x2048x2048's 4 MB of weights fill the core's 2 MB L2 (242 and 108 GMAC/s in two runs)
PEAK_MODES = {
    "int8": "full-integer (int8 activations; the int8 model's kernels)",
    "dynamic": "dynamic-range (int8 weights, activations quantized per run; the dynamic model's kernels)",
}
TIME_BUDGET_S = (0.25, 0.02)  # timed seconds per model and round: (full run, --quick)
ROUNDS = (5, 2)


def layer_macs(op: str, dims: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one peak layer. Pure."""
    if op == "CONV_2D":
        size, c_in, c_out = dims
        return size * size * c_out * 3 * 3 * c_in
    if op == "FULLY_CONNECTED":
        rows, n_in, n_out = dims
        return rows * n_in * n_out
    raise ValueError(f"unknown peak layer operator {op!r}")


def peak_model_file(name: str, mode: str) -> str:
    return f"{name}.{mode}.tflite"


def build_peak_models(out_dir: Path, wanted: list[tuple[str, str]]) -> None:
    """Convert the (layer name, mode) peak models into out_dir with TensorFlow (child process only)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import contextlib
    import io
    import warnings

    import keras
    import numpy as np
    import tensorflow as tf

    from edge_runtime import atomic
    layers = {name: (op, dims) for name, op, dims in PEAK_LAYERS}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, mode in wanted:
        op, dims = layers[name]
        keras.utils.set_random_seed(0)
        if op == "CONV_2D":
            size, c_in, c_out = dims
            inp = keras.Input((size, size, c_in), batch_size=1)
            model = keras.Model(inp, keras.layers.Conv2D(c_out, 3, padding="same", activation="relu")(inp))
            shape = (1, size, size, c_in)
        else:
            rows, n_in, n_out = dims
            inp = keras.Input((n_in,), batch_size=rows)
            model = keras.Model(inp, keras.layers.Dense(n_out)(inp))
            shape = (rows, n_in)
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(4):
                yield [rng.standard_normal(shape).astype(np.float32)]
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "int8":
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flatbuffer = converter.convert()
        atomic.write_bytes(out_dir / peak_model_file(name, mode), flatbuffer)
        print(f"built {peak_model_file(name, mode)}", flush=True)


def _usable(path: Path, op: str) -> bool:
    """A cached peak model is used only if it is a readable TFLite model of exactly that one operator."""
    from .op_profile import operators
    try:
        return [o["op"] for o in operators(path.read_bytes())] == [op]
    except (OSError, ModelError):  # missing, damaged, truncated, not a model: rebuilt
        return False


def ensure_peak_models(cache: Path = CACHE_DIR, modes=tuple(PEAK_MODES)) -> dict[tuple[str, str], Path]:
    """The peak models, built in a TensorFlow child process where missing or unusable."""
    ops = {name: op for name, op, _ in PEAK_LAYERS}
    paths = {(name, mode): cache / peak_model_file(name, mode) for name, _, _ in PEAK_LAYERS for mode in modes}
    missing = [key for key, path in paths.items() if not _usable(path, ops[key[0]])]
    if missing:
        print(f"int8 peak: building {len(missing)} model(s) in {cache} (TensorFlow child process)", flush=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        cmd = [sys.executable, "-m", "tools.cpu_peak", "--build", str(cache),
               "--models", ",".join(f"{name}.{mode}" for name, mode in missing)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        except subprocess.TimeoutExpired as e:
            raise EdgeError(f"building the int8 peak models took over {e.timeout:.0f} s; stopped") from e
        still = [key for key in missing if not _usable(paths[key], ops[key[0]])]
        if proc.returncode != 0 or still:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise EdgeError(f"building the int8 peak models failed (exit status {proc.returncode}): {tail}")
    return paths


def time_peak_models(paths: dict[tuple[str, str], Path], threads: int = 1, quick: bool = False) -> list[dict]:
    """Median invoke() of each peak model (interleaved rounds, median of the rounds' medians) and its GMAC/s."""
    from edge_runtime.timing import summarize, time_calls

    from .op_profile import _ready_interpreter
    budget, rounds = TIME_BUDGET_S[1 if quick else 0], ROUNDS[1 if quick else 0]
    layers = {name: (op, dims) for name, op, dims in PEAK_LAYERS}
    ready = []
    for (name, mode), path in paths.items():
        interpreter = _ready_interpreter(path.read_bytes(), threads)
        first = summarize(time_calls(interpreter.invoke, 3, warmup=2))["median_us"]
        ready.append((name, mode, interpreter, max(3, int(budget * 1e6 / max(first, 1.0)))))
    medians: dict[tuple[str, str], list[float]] = {(n, m): [] for n, m, _, _ in ready}
    for _ in range(rounds):
        for name, mode, interpreter, runs in ready:
            medians[(name, mode)].append(summarize(time_calls(interpreter.invoke, runs, warmup=1))["median_us"])
    out = []
    for name, mode, _, runs in ready:
        op, dims = layers[name]
        macs = layer_macs(op, dims)
        us = summarize(medians[(name, mode)])["median_us"]
        out.append({"layer": name, "op": op, "mode": mode, "macs": macs, "median_us": us, "runs_per_round": runs,
                    "rounds": rounds, "gmacs_per_s": round(macs / (us * 1e-6) / 1e9, 1)})
    return out


def summarize_peak(rows: list[dict], threads: int) -> dict:
    """The measured peak (the fastest layer), and each mode's plateau (its fastest layer). Pure."""
    if not rows:
        raise ValueError("no peak measurements")
    best = max(rows, key=lambda r: r["gmacs_per_s"])
    per_mode = {}
    for r in rows:
        if r["gmacs_per_s"] > per_mode.get(r["mode"], {}).get("gmacs_per_s", -1):
            per_mode[r["mode"]] = {"gmacs_per_s": r["gmacs_per_s"], "layer": r["layer"]}
    return {"gmacs_per_s": best["gmacs_per_s"], "best": f"{best['layer']}.{best['mode']}", "threads": threads,
            "per_mode": per_mode, "layers": rows,
            "note": "MEASURED: MACs / median invoke() of single-layer int8 models through the same interpreter "
                    "and thread count; the fastest layer and kernel family is the peak."}


def measured_peak(threads: int = 1, quick: bool = False, cache: Path = CACHE_DIR) -> dict:
    """Build (once) and time the peak models: summarize_peak of the timings."""
    return summarize_peak(time_peak_models(ensure_peak_models(cache), threads, quick), threads)


def against_measured_peak(macs: int | None, latency_us: float | None, peak: dict | None) -> dict | None:
    """One image's MACs at the measured peak: the time that would take, and how many times it the
    measured latency is. Pure."""
    if not macs or not latency_us or not peak or not peak.get("gmacs_per_s"):
        return None
    peak_time_us = macs / (peak["gmacs_per_s"] * 1e9) * 1e6
    return {"macs": int(macs), "latency_us": latency_us, "peak_gmacs_per_s": peak["gmacs_per_s"],
            "peak_time_us": round(peak_time_us, 2), "times_peak_time": round(latency_us / peak_time_us, 3),
            "achieved_gmacs_per_s": round(macs / (latency_us * 1e-6) / 1e9, 1),
            "fraction_of_peak": round(peak_time_us / latency_us, 4)}


def int8_peak(flags: set, machine: str, clock_ghz: float | None) -> dict | None:
    """An ESTIMATE of one core's int8 multiply-accumulate peak from its ISA. Pure.

    MACs per cycle assume the widest int8 dot-product instruction the flags
    advertise issued every cycle on the stated number of vector units; real
    parts differ (e.g. some have two 512-bit units, some split 512-bit work
    into two 256-bit halves), so this is an order of magnitude, not a spec.
    """
    m = machine.lower()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        isa, per_cycle, how = "AVX-512 VNNI", 64, "one 512-bit VPDPBUSD (64 int8 MACs) per cycle"
    elif "avx_vnni" in flags:
        isa, per_cycle, how = "AVX-VNNI", 64, "two 256-bit VPDPBUSD (32 int8 MACs each) per cycle"
    elif "avx2" in flags:
        isa, per_cycle, how = "AVX2", 32, "two 256-bit VPMADDUBSW (+VPMADDWD) per cycle, ~32 int8 MACs"
    elif "i8mm" in flags:
        isa, per_cycle, how = "NEON I8MM", 64, "two 128-bit SMMLA (32 int8 MACs each) per cycle"
    elif "asimddp" in flags:
        isa, per_cycle, how = "NEON dot product", 32, "two 128-bit SDOT (16 int8 MACs each) per cycle"
    elif m in ("aarch64", "arm64") or "asimd" in flags or "neon" in flags:
        isa, per_cycle, how = "NEON", 8, "one 128-bit SMLAL (8 int8 MACs via int16) per cycle, as on a Cortex-A72"
    elif "sse4_1" in flags or "ssse3" in flags:
        isa, per_cycle, how = "SSSE3/SSE4", 16, "one 128-bit PMADDUBSW (16 int8 MACs) per cycle"
    else:
        return None
    out = {"isa": isa, "macs_per_cycle_per_core": per_cycle, "assumption": how, "clock_ghz": clock_ghz,
           "gmacs_per_s_per_core": round(per_cycle * clock_ghz, 1) if clock_ghz else None}
    return out


def efficiency(macs_per_image: int | None, latency_us: float | None, peak: dict | None) -> dict | None:
    """Achieved MAC rate of one single-thread image and its share of the estimated peak. Pure."""
    if not macs_per_image or not latency_us:
        return None
    achieved = macs_per_image / (latency_us * 1e-6) / 1e9
    per_core = (peak or {}).get("gmacs_per_s_per_core")
    return {"macs_per_image": int(macs_per_image), "latency_us": latency_us,
            "achieved_gmacs_per_s": round(achieved, 2),
            "peak_gmacs_per_s_per_core": per_core,
            "fraction_of_peak": round(achieved / per_core, 4) if per_core else None,
            "note": "ESTIMATE: MACs per image / measured 1-thread latency, against a peak "
                    "inferred from the CPU's ISA flags and clock (see 'peak.assumption')."}


def peak_verdict(fraction_of_peak: float) -> str:
    """How to read a measured share of the estimated peak, for people. Pure.

    A share above 1 can't be a real efficiency: the estimate assumed fewer
    int8 MACs per cycle, or a lower clock, than this core delivers (one seen
    here: an AMD EPYC that /proc/cpuinfo reports at 2.6 GHz ran this
    model at 1.6-1.7x one 512-bit VNNI instruction per cycle at that clock,
    in three runs). Saying "164% of peak" would read as a measurement error.
    """
    if fraction_of_peak <= 1.0:
        return f"about {fraction_of_peak:.0%} of peak"
    return (f"{fraction_of_peak:.1f}x the estimated peak: this core does more int8 MACs per cycle, "
            "or runs at a higher clock, than the estimate assumes, so the estimate is too low for it")


def int8_peak_here(machine: dict) -> dict | None:
    """int8_peak for this machine, at the clock `edge_runtime.bench.machine_info` found."""
    return int8_peak(cpuinfo()["flags"], machine.get("machine") or "", machine.get("clock_ghz"))


# -- command line --------------------------------------------------------------------------

@process.command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.cpu_peak", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--quick", action="store_true", help="a handful of iterations: checks everything runs")
    p.add_argument("--cache", type=Path, default=CACHE_DIR, help="where the peak models are kept")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)  # the TensorFlow child
    p.add_argument("--models", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.build is not None:
        build_peak_models(args.build, [tuple(m.rsplit(".", 1)) for m in args.models.split(",") if m])
        return 0
    peak = measured_peak(args.threads, args.quick, args.cache)
    if args.json:
        print(json.dumps(peak, indent=2))
        return 0
    for r in peak["layers"]:
        print(f"{r['layer']:24s} {r['mode']:8s} {r['macs'] / 1e6:8.1f} M MACs {r['median_us']:10.1f} µs "
              f"{r['gmacs_per_s']:7.1f} GMAC/s")
    print(f"measured int8 peak, {args.threads} thread(s): {peak['gmacs_per_s']:.0f} GMAC/s ({peak['best']})")
    for mode, best in peak["per_mode"].items():
        print(f"  {PEAK_MODES[mode]}: {best['gmacs_per_s']:.0f} GMAC/s ({best['layer']})")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
