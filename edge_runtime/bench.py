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
runtime and the model and classifies (`edge_runtime.memory`, so nothing this
process loaded is counted). Also the machine it ran on.

What to measure is one `BenchSettings`; `bench_tflite(path, settings)` is
shared with the workstation benchmark (`tools/bench.py`), which adds the
Keras rows and the CPU-peak estimate. This module never imports TensorFlow;
numpy, OpenCV and the interpreter are imported when used. Runs on Python
3.10+ and numpy 1.23+ (what a Raspberry Pi has).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .argtypes import count, thread_list
from .deployed import VARIANTS
from .errors import UsageError
from .metadata import sha256
from .synthetic import synthetic_frame
from .timing import latency_stats, summarize, time_calls

# Iteration counts: (full run, --quick). Full runs take a few seconds per model
# on a workstation and well under a minute on a Raspberry Pi 4.
ITERATIONS = {
    "runs": (2000, 20),  # timed single-image calls per measurement
    "warmup": (200, 5),  # untimed calls first (allocations, caches, CPU clock)
    "frame_runs": (300, 10),  # timed end-to-end camera frames
    "batch_images": (4096, 256),  # images per throughput measurement
    "batch_repeats": (5, 2),  # throughput measurements (the median is kept)
    "memory_runs": (50, 5),  # frames the memory-probe process classifies
}


@dataclass(frozen=True)
class BenchSettings:
    """What one benchmark run measures, and how many times."""

    threads: tuple[int, ...] = (1, 2)
    runs: int = ITERATIONS["runs"][0]
    warmup: int = ITERATIONS["warmup"][0]
    frame_runs: int = ITERATIONS["frame_runs"][0]
    batch_size: int = 256
    batch_images: int = ITERATIONS["batch_images"][0]
    batch_repeats: int = ITERATIONS["batch_repeats"][0]
    memory_runs: int = ITERATIONS["memory_runs"][0]
    memory: bool = True  # measure peak memory in a separate process
    quick: bool = False  # iterations default to the --quick counts

    @classmethod
    def from_args(cls, args: argparse.Namespace, memory: bool = True) -> "BenchSettings":
        """From parsed flags: an iteration flag given wins, else the full-run or --quick count."""
        quick = bool(getattr(args, "quick", False))
        counts = {name: getattr(args, name, None) if getattr(args, name, None) is not None
                  else ITERATIONS[name][1 if quick else 0] for name in ITERATIONS}
        return cls(threads=tuple(args.threads), batch_size=args.batch_size, memory=memory, quick=quick, **counts)

    def to_dict(self) -> dict:
        return {**asdict(self), "threads": list(self.threads)}


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


def cpuinfo() -> dict:
    """This machine's /proc/cpuinfo, parsed (empty fields where there is none)."""
    return parse_cpuinfo(_read("/proc/cpuinfo") or "")


def machine_info() -> dict:
    """CPU model, cores, clock, OS, Python and the packages the runtime uses."""
    import numpy as np
    info = cpuinfo()
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


def results_header(title: str, results: dict, load_note: str) -> list[str]:
    """The first lines of a results Markdown file: title, date and machine, command, load
    average (at start, and at the end when recorded) with `load_note`, and a --quick warning. Pure."""
    m = results["machine"]
    lines = [f"# {title}", "", f"{results['created'][:10]} · {describe_machine(m)}  ",
             f"Command: `{results['command']}`  "]
    if m.get("load_average"):
        end = results.get("load_average_end")
        lines.append(f"Load average at start: {', '.join(str(x) for x in m['load_average'])}"
                     + (f"; at the end: {', '.join(str(x) for x in end)}" if end else "")
                     + f" (on {m.get('cores_usable')} cores; {load_note})  ")
    if results.get("quick"):
        lines.append("**--quick run: a handful of iterations; the figures only show that everything runs.**  ")
    return lines


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


def bench_tflite(path: str | Path, settings: BenchSettings = BenchSettings(),
                 say: Callable[[str], None] = lambda s: None) -> dict:
    """Everything measurable about one .tflite model with the runtime alone."""
    import numpy as np

    from .classifier import Classifier
    from .memory import measure_memory
    from .photo import photo_to_input
    row = model_facts(path)
    frame = synthetic_frame()
    image = None
    frame_warmup = max(1, settings.warmup // 10)
    row.update({"latency": {}, "invoke": {}, "batch": {}, "frame": {}})
    for t in settings.threads:
        key = str(t)
        say(f"  {row['name']}: {t} thread{'s' if t > 1 else ''}: single image, camera frame, batch")
        clf = Classifier(path, num_threads=t)
        if image is None:
            image = photo_to_input(frame, clf.input_size)
            row["input_dtype"] = np.dtype(clf.input.dtype).name
            row["dynamic_batch"] = bool(clf.input.dynamic_batch)
            row["preprocess"] = latency_stats(lambda: photo_to_input(frame, clf.input_size), settings.frame_runs,
                                              frame_warmup)
        row["latency"][key] = latency_stats(lambda: clf.predict(image), settings.runs, settings.warmup)
        row["invoke"][key] = _invoke_stats(clf, image, settings.runs, settings.warmup)
        row["frame"][key] = latency_stats(lambda: clf.classify(frame, k=3), settings.frame_runs, frame_warmup)
        if clf.input.dynamic_batch:
            batched = Classifier(path, num_threads=t, batch_size=settings.batch_size)
            images = batch_for_timing(settings.batch_images, clf.input_size)
            row["batch"][key] = {"batch_size": settings.batch_size,
                                 **throughput(lambda: batched.predict(images), len(images), settings.batch_repeats)}
        else:
            row["batch"][key] = None  # fixed batch of 1: images/s is 1e6 / the single-image median
    if settings.memory:
        say(f"  {row['name']}: peak memory of a runtime process")
        row["memory"] = measure_memory(path, threads=1, runs=settings.memory_runs)
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
                             "(default: the model the other commands use; `info` says which)")
    parser.add_argument("--threads", type=thread_list, default="1,2", help="interpreter thread counts, comma-separated")
    parser.add_argument("--batch_size", type=count(1), default=256, help="batch size for the throughput measurement")
    add_iteration_arguments(parser)
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


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
    settings = BenchSettings.from_args(args, memory=not args.no_memory)
    models = models_to_bench(getattr(args, "model", None))
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.json else (lambda s: None)
    machine = machine_info()
    config = {"models": [str(m) for m in models], **settings.to_dict()}
    say(f"bench config: {json.dumps(config)}\nmachine: {describe_machine(machine)}")
    rows = [bench_tflite(model, settings, say) for model in models]
    result = {"machine": machine, "config": config, "quick": settings.quick, "models": rows,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\n{describe_machine(machine)}\n")
    print(text_table(rows, list(settings.threads)))
    if settings.quick:
        print("\n--quick: a handful of iterations; these figures are not meaningful.")
    return 0
