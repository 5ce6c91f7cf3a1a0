"""`python -m edge_runtime bench`: how fast and how big a model is on this device.

    python -m edge_runtime bench                       # the deployed model, 1 and 2 threads
    python -m edge_runtime bench --model models/       # every .tflite in a directory
    python -m edge_runtime bench --model a.tflite --model b.tflite --json
    python -m edge_runtime bench --quick               # a handful of iterations: a smoke test

For each model: file size, accuracy as recorded by the converter (only when
the FlatBuffer's SHA-256 matches its metadata), single-image latency of
`Classifier.predict` (warm-up, then many runs: median, p95, p99) per thread
count, batch throughput when the model has a dynamic batch axis, end-to-end
latency of a 640x480 BGR camera frame (photo preprocessing + inference +
top-k), and the peak resident memory of a separate process that loads the
runtime and the model and classifies (so nothing this process loaded is
counted). Also the machine, and an estimate of how close the int8 model gets
to this CPU's int8 arithmetic peak.

The measuring functions are plain functions of their arguments, shared with
the workstation benchmark (`tools/bench.py`). This module never imports
TensorFlow; numpy, OpenCV and the interpreter are imported when used.
Runs on Python 3.9+ and numpy 1.23+ (what a Raspberry Pi has).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from .argtypes import count, thread_list
from .deployed import MODEL_FILENAME, VARIANTS
from .errors import EdgeError, UsageError
from .metadata import sha256
from .synthetic import synthetic_frame
from .timing import latency_stats, summarize, time_calls

PROBE_MARKER = "BENCH_MEMORY "  # the memory probe's result line on stdout

# Iteration counts: (full run, --quick). Full runs take a few seconds per model
# on a workstation and well under a minute on a Raspberry Pi 4.
ITERATIONS = {
    "runs": (2000, 20),  # timed single-image calls per measurement
    "warmup": (200, 5),  # untimed calls first (allocations, caches, CPU clock)
    "frame_runs": (300, 10),  # timed end-to-end camera frames
    "batch_images": (4096, 256),  # images per throughput measurement
    "batch_repeats": (5, 2),  # throughput measurements (the median is kept)
    "memory_runs": (50, 5),  # frames the memory probe classifies
}


# -- throughput -----------------------------------------------------------------------

def throughput(fn: Callable[[], object], images: int, repeats: int) -> dict:
    """Images per second of fn() processing `images` images: one untimed call, then the
    median of `repeats` timed ones."""
    times = time_calls(fn, max(1, repeats), warmup=1)
    median_s = summarize(times)["median_us"] / 1e6
    return {"images": int(images), "repeats": len(times), "images_per_s": round(images / median_s, 1)}


# -- inputs ----------------------------------------------------------------------------

def model_input_for_timing(size: tuple[int, int] = (28, 28)):
    """The single image every latency is measured on: the synthetic frame, preprocessed."""
    from .photo import photo_to_input
    return photo_to_input(synthetic_frame(), size)


def batch_for_timing(n: int, size: tuple[int, int] = (28, 28)):
    """`n` deterministic uint8 model inputs (content doesn't change TFLite timings)."""
    import numpy as np
    rng = np.random.Generator(np.random.PCG64(7))
    return rng.integers(0, 256, size=(n, *size), dtype=np.uint8)


# -- the machine -----------------------------------------------------------------------

ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd40": "Neoverse-V1",
             "0xd4f": "Neoverse-V2", "0xd49": "Neoverse-N2", "0xc07": "Cortex-A7", "0xb76": "ARM1176"}


def parse_cpuinfo(text: str) -> dict:
    """The fields a benchmark needs from /proc/cpuinfo text. Pure.

    x86 has `model name`, `flags` and `cpu MHz`; ARM has `Features` and
    `CPU part` (and sometimes `Model`, e.g. "Raspberry Pi 4 Model B").
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Processor") or ""
    part = fields.get("CPU part", "").lower()
    if part in ARM_PARTS and ARM_PARTS[part] not in model:
        model = f"{model} {ARM_PARTS[part]}".strip() if model and "ARMv" not in model else ARM_PARTS[part]
    mhz = None
    try:
        mhz = float(fields["cpu MHz"]) if "cpu MHz" in fields else None
    except ValueError:
        pass
    return {"model": model or None, "flags": flags, "cpu_part": part or None, "board": fields.get("Model"),
            "mhz": mhz}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").strip("\x00\n ")
    except OSError:
        return None


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


def machine_info() -> dict:
    """CPU model, cores, clock, ISA, OS, Python and the packages the runtime uses."""
    import numpy as np
    info = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    board = _read("/proc/device-tree/model") or info["board"]
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz and max_khz.isdigit():
        clock_ghz, clock_source = round(int(max_khz) / 1e6, 3), "cpufreq max"
    elif info["mhz"]:
        clock_ghz, clock_source = round(info["mhz"] / 1e3, 3), "/proc/cpuinfo cpu MHz (current)"
    else:
        clock_ghz, clock_source = None, "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    try:
        import cv2
        opencv, opencv_threads = cv2.__version__, cv2.getNumThreads()
    except Exception:  # noqa: BLE001 - reported, not needed here
        opencv = opencv_threads = None
    from .interpreter import find_interpreter
    backend = find_interpreter()
    cpu = info["model"] or platform.processor() or platform.machine()
    return {
        "cpu": cpu, "board": board, "machine": platform.machine(),
        "cores": os.cpu_count(), "cores_usable": usable,
        "clock_ghz": clock_ghz, "clock_source": clock_source,
        "int8_peak": int8_peak(info["flags"], platform.machine(), clock_ghz),
        "load_average": load,
        "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "opencv": opencv, "opencv_threads": opencv_threads, "interpreter": {"package": backend.package, "version": backend.version},
    }


def describe_machine(m: dict) -> str:
    """One line: CPU, cores, clock, interpreter. Pure."""
    clock = f" @ {m['clock_ghz']:.2f} GHz" if m.get("clock_ghz") else ""
    board = f" ({m['board']})" if m.get("board") else ""
    cores = m.get("cores_usable") or m.get("cores")
    interp = m.get("interpreter") or {}
    return (f"{m.get('cpu')}{board}{clock}, {cores} cores usable ({m.get('machine')}), "
            f"{interp.get('package')} {interp.get('version')}, Python {m.get('python')}")


# -- memory: a separate process --------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MB (VmHWM; getrusage where /proc is missing)."""
    status = _read("/proc/self/status")
    if status:
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KB elsewhere


def memory_probe(model: str | Path, threads: int = 1, runs: int = 20) -> dict:
    """In THIS process: import the runtime, load the model, classify frames; report peak RSS per stage.

    Meant to run in a fresh child process (`measure_memory`), where it is all
    the process does.
    """
    stages = {"python": peak_rss_mb()}
    import numpy  # noqa: F401
    import cv2  # noqa: F401
    from .classifier import Classifier
    from .interpreter import find_interpreter
    backend = find_interpreter(allow_tensorflow=False)
    stages["imports"] = peak_rss_mb()
    clf = Classifier(model, num_threads=threads)
    stages["model_loaded"] = peak_rss_mb()
    frame = synthetic_frame()
    for _ in range(max(1, runs)):
        result = clf.classify(frame)
    stages["classified"] = peak_rss_mb()
    return {"peak_rss_mb": stages["classified"], "stages_mb": stages, "frames": max(1, runs),
            "label": result.best.label, "interpreter": f"{backend.package} {backend.version}",
            "tensorflow_imported": "tensorflow" in sys.modules, "pid": os.getpid()}


def measure_memory(model: str | Path, threads: int = 1, runs: int = 20, timeout: float = 300) -> dict:
    """Peak resident memory of a fresh `python -m edge_runtime bench --memory_probe` process, MB.

    The child imports nothing but the runtime (never TensorFlow: only
    ai-edge-litert or tflite-runtime are allowed), loads the model and
    classifies `runs` camera frames, then prints its peak RSS (VmHWM).
    """
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "edge_runtime", "bench", "--memory_probe", "--model", str(model),
           "--threads", str(threads), "--memory_runs", str(runs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(PROBE_MARKER):
            return json.loads(line[len(PROBE_MARKER):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    raise EdgeError(f"memory probe for {model} failed (exit status {proc.returncode}): {tail}")


# -- one TFLite model ------------------------------------------------------------------

def model_facts(path: str | Path) -> dict:
    """Size, hash and what the metadata says about a .tflite model (no interpreter needed)."""
    from .metadata import flatbuffer_part, read_metadata
    path = Path(path)
    data = path.read_bytes()
    flatbuffer = flatbuffer_part(data)
    meta = read_metadata(path)
    digest = sha256(flatbuffer)
    training = meta.get("training") or {}
    hash_ok = meta.get("flatbuffer_sha256") == digest
    accuracy = (meta.get("accuracy") or {}).get("accuracy") if hash_ok else None
    return {
        "name": meta.get("variant") or path.stem, "kind": "tflite", "variant": meta.get("variant"),
        "path": str(path), "size_bytes": len(data), "flatbuffer_bytes": len(flatbuffer),
        "flatbuffer_sha256": digest, "hash_matches_metadata": hash_ok,
        "model": (training.get("config") or {}).get("model"),
        "parameters": training.get("parameters"), "macs_per_image": training.get("macs_per_image"),
        "accuracy": accuracy,
        "accuracy_source": "model metadata (converter, FlatBuffer hash verified)" if accuracy is not None else None,
    }


def bench_tflite(path: str | Path, threads: Iterable[int] = (1, 2), runs: int = 2000, warmup: int = 200,
                 frame_runs: int = 300, batch_size: int = 256, batch_images: int = 4096,
                 batch_repeats: int = 5, memory_runs: int = 50, memory: bool = True,
                 say: Callable[[str], None] = lambda s: None) -> dict:
    """Everything measurable about one .tflite model with the runtime alone."""
    import numpy as np

    from .classifier import Classifier
    from .photo import photo_to_input
    row = model_facts(path)
    frame = synthetic_frame()
    image = None
    row.update({"latency": {}, "invoke": {}, "batch": {}, "frame": {}})
    for t in threads:
        key = str(t)
        say(f"  {row['name']}: {t} thread{'s' if t > 1 else ''}: single image, camera frame, batch")
        clf = Classifier(path, num_threads=t)
        if image is None:
            image = photo_to_input(frame, clf.input_size)
            row["input_dtype"] = np.dtype(clf.input.dtype).name
            row["dynamic_batch"] = bool(clf.input.dynamic_batch)
            row["preprocess"] = latency_stats(lambda: photo_to_input(frame, clf.input_size), frame_runs,
                                              max(1, warmup // 10))
        row["latency"][key] = latency_stats(lambda: clf.predict(image), runs, warmup)
        row["invoke"][key] = _invoke_stats(clf, image, runs, warmup)
        row["frame"][key] = latency_stats(lambda: clf.classify(frame, k=3), frame_runs, max(1, warmup // 10))
        if clf.input.dynamic_batch:
            batched = Classifier(path, num_threads=t, batch_size=batch_size)
            images = batch_for_timing(batch_images, clf.input_size)
            row["batch"][key] = {"batch_size": batch_size,
                                 **throughput(lambda: batched.predict(images), len(images), batch_repeats)}
        else:
            row["batch"][key] = None  # fixed batch of 1: images/s is 1e6 / the single-image median
    if memory:
        say(f"  {row['name']}: peak memory of a runtime process")
        row["memory"] = measure_memory(path, threads=1, runs=memory_runs)
    return row


def _invoke_stats(clf, image, runs: int, warmup: int) -> dict:
    """interpreter.invoke() alone, input already set: the compute without Python around it."""
    clf.predict(image)  # leaves the interpreter at batch 1 with this input set
    interpreter = clf.interpreter
    return latency_stats(interpreter.invoke, runs, warmup)


# -- table ---------------------------------------------------------------------------------

def fmt_us(us: float | None) -> str:
    """Microseconds for people: '47 µs', '1.23 ms', '2.5 s', '-' for None. Pure."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} µs" if us >= 10 else f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms" if us < 1e4 else f"{us / 1e3:.1f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.2f} MB"


def text_table(rows: list[dict], threads: list[int]) -> str:
    """A plain-text table, one line per model and thread count. Pure."""
    head = ["model", "size", "top-1", "threads", "median", "p95", "p99", "batch img/s", "frame median",
            "frame p95", "peak MB"]
    lines = [head]
    for r in rows:
        for i, t in enumerate(threads):
            k = str(t)
            lat, frame, batch = r["latency"].get(k), r["frame"].get(k), r["batch"].get(k)
            mem = (r.get("memory") or {}).get("peak_rss_mb") if i == 0 else None
            lines.append([r["name"] if i == 0 else "", fmt_bytes(r["size_bytes"]) if i == 0 else "",
                          (f"{r['accuracy']:.2%}" if r.get("accuracy") is not None else "-") if i == 0 else "",
                          str(t), fmt_us(lat and lat["median_us"]), fmt_us(lat and lat["p95_us"]),
                          fmt_us(lat and lat["p99_us"]), f"{batch['images_per_s']:,.0f}" if batch else "-",
                          fmt_us(frame and frame["median_us"]), fmt_us(frame and frame["p95_us"]),
                          f"{mem:.1f}" if mem else ""])
    widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) if c < 4 else cell.rjust(w) for c, (cell, w) in
                               enumerate(zip(line, widths))).rstrip() for line in lines)


# -- command line ------------------------------------------------------------------------

def resolve_iterations(args, names: Iterable[str] = tuple(ITERATIONS)) -> dict:
    """Explicit flags win; otherwise the full-run or --quick default."""
    quick = bool(getattr(args, "quick", False))
    return {name: (getattr(args, name, None) if getattr(args, name, None) is not None
                   else ITERATIONS[name][1 if quick else 0]) for name in names}


def add_iteration_arguments(parser: argparse.ArgumentParser) -> None:
    helps = {"runs": "timed single-image calls per measurement", "warmup": "untimed calls before timing",
             "frame_runs": "timed 640x480 camera frames (end to end)",
             "batch_images": "images per throughput measurement", "batch_repeats": "throughput measurements",
             "memory_runs": "frames the memory-probe process classifies"}
    for name, (full, quick) in ITERATIONS.items():
        parser.add_argument(f"--{name}", type=count(0 if name == "warmup" else 1),
                            default=argparse.SUPPRESS,  # absent: the full or the --quick value
                            help=f"{helps[name]} (default: {full}; {quick} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a handful of iterations: checks that everything runs, figures are not meaningful")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, action="append", default=argparse.SUPPRESS,
                        help="a .tflite model with metadata, or a directory of them; repeat for several "
                             f"(default: $EDGE_MODEL or models/{MODEL_FILENAME})")
    parser.add_argument("--threads", type=thread_list, default="1,2", help="interpreter thread counts, comma-separated")
    parser.add_argument("--batch_size", type=count(1), default=256, help="batch size for the throughput measurement")
    add_iteration_arguments(parser)
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--memory_probe", action="store_true", help=argparse.SUPPRESS)


def models_to_bench(paths: list[Path] | None) -> list[Path]:
    """Files as given, directories expanded to their .tflite files (float32, float16, dynamic, int8 first)."""
    from .deployed import default_model_path
    from .classifier import require_model_file
    found: list[Path] = []
    for p in paths or [default_model_path()]:
        if p.is_dir():
            inside = sorted((f for f in p.glob("*.tflite") if f.is_file()),  # not a directory named x.tflite
                            key=lambda f: (next((i for i, v in enumerate(VARIANTS) if f.stem.endswith(v)),
                                                len(VARIANTS)), f.name))
            if not inside:
                raise UsageError(f"{p}: no .tflite models in this directory")
            found += inside
        else:
            found.append(require_model_file(p))  # before any measuring, as `info` and `classify` do
    return list(dict.fromkeys(found))


def run(args) -> int:
    chosen = getattr(args, "model", None)
    if args.memory_probe:  # the child side of measure_memory: nothing else in this process
        model = chosen[0] if chosen else models_to_bench(None)[0]
        result = memory_probe(model, threads=args.threads[0],
                              runs=getattr(args, "memory_runs", ITERATIONS["memory_runs"][0]))
        print(PROBE_MARKER + json.dumps(result), flush=True)
        return 0
    it = resolve_iterations(args)
    models = models_to_bench(chosen)
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.json else (lambda s: None)
    machine = machine_info()
    config = {"models": [str(m) for m in models], "threads": args.threads, "batch_size": args.batch_size,
              "memory": not args.no_memory, **it}
    say(f"bench config: {json.dumps(config)}\nmachine: {describe_machine(machine)}")
    rows = []
    for model in models:
        rows.append(bench_tflite(model, args.threads, it["runs"], it["warmup"], it["frame_runs"],
                                 args.batch_size, it["batch_images"], it["batch_repeats"], it["memory_runs"],
                                 memory=not args.no_memory, say=say))
    estimate = None
    int8 = next((r for r in rows if r.get("variant") == "int8"), None)
    if int8 is not None:
        t1 = int8["latency"].get("1") or next(iter(int8["latency"].values()))
        estimate = efficiency(int8.get("macs_per_image"), t1["median_us"], machine["int8_peak"])
    result = {"machine": machine, "config": config, "quick": bool(args.quick), "models": rows,
              "int8_efficiency": estimate, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\n{describe_machine(machine)}\n")
    print(text_table(rows, args.threads))
    if estimate and estimate.get("fraction_of_peak") is not None:
        peak = machine["int8_peak"]
        print(f"\nint8: {estimate['achieved_gmacs_per_s']:.1f} GMAC/s on one thread against an estimated "
              f"{peak['gmacs_per_s_per_core']:.0f} GMAC/s per core ({peak['isa']}): "
              f"{peak_verdict(estimate['fraction_of_peak'])}")
    if args.quick:
        print("\n--quick: a handful of iterations; these figures are not meaningful.")
    return 0
