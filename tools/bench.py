"""`make bench`: size, accuracy and speed of every way to run the model, side by side.

    python -m tools.bench                 # runs/latest/model.keras and models/*.tflite -> benchmarks/
    python -m tools.bench --quick         # a handful of iterations: checks everything runs
    python -m tools.bench --threads 1 --keras_ways function --variants int8

Rows: the Keras float model called three ways (`model.predict(x[None])` as
tutorials do, `model(x[None], training=False)`, and that call compiled with
`tf.function`), and each TFLite variant through `edge_runtime.Classifier`.
Columns: file size, parameters, MACs per image, top-1 on the full test set,
single-image latency (median, p95, p99) per thread count, batch throughput,
end-to-end latency of a 640x480 BGR camera frame (photo preprocessing,
inference, top-k), and the peak memory of a process running the runtime.
Then where the time goes: this core's int8 peak measured through the same
interpreter (`tools/cpu_peak.py`), the per-operator profile of the int8,
dynamic and float32 models (`tools/op_profile.py`, also written to
benchmarks/op_profile.{json,md}), and the camera frame's preprocessing
steps (`tools/frame_profile.py`, when present).

Where the figures come from:
- TFLite timings run in this process, which never imports TensorFlow;
- Keras runs in one child process per thread count (`tools/bench_keras.py`),
  because TensorFlow fixes its thread pools at start-up;
- peak memory is measured in a fresh child that imports only the runtime;
- accuracy is taken from `models/conversion_report.json` when the model
  file's FlatBuffer is the one that report measured (SHA-256 checked through
  the model's metadata), else evaluated here on the 10,000 test images
  through `Classifier.predict`, the device's code path.

Writes `benchmarks/results.json` (with the previous run's figures and the
ratios now/previous), `benchmarks/results.md` and `benchmarks/latency.png`,
each atomically. Timings depend on the machine and on what else it is
doing: quote the ratios between rows of one run, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from edge_runtime import atomic, process
from edge_runtime import bench as rt
from edge_runtime.bench import BenchSettings
from edge_runtime.argtypes import count
from edge_runtime.deployed import VARIANTS, model_filename
from edge_runtime.errors import EdgeError, ModelError, UsageError
from edge_runtime.metadata import sha256

from . import cpu_peak, op_profile

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "fashion-edge-bench/1"
KERAS_WAYS = ("predict", "call", "function")
KERAS_ITERATIONS = {"keras_runs": (200, 5), "keras_frame_runs": (50, 3)}
KERAS_LABELS = {
    "predict": "Keras `model.predict(x[None])` (tutorial way)",
    "call": "Keras `model(x[None], training=False)`",
    "function": "Keras call in `tf.function`",
}
# Targets from the issue, for the default edge model on the build machine, one thread.
TARGETS = (
    # key, what, comparison, limit, unit
    ("int8_latency", "int8 single-image latency, 1 thread (median)", "<=", 100.0, "µs"),
    ("frame_latency", "camera frame end to end (640x480 BGR -> top-k), int8, 1 thread (median): the device budget",
     "<=", 2000.0, "µs"),
    ("frame_latency_build", "the same camera frame on the build machine: closer to the hardware", "<=", 1000.0, "µs"),
    ("int8_speedup", "int8 runtime vs fastest Keras call, per image, 1 thread", ">=", 10.0, "x"),
    ("runtime_memory", "peak memory of the runtime process (int8)", "<=", 150.0, "MB"),
    ("int8_vs_peak", "int8 single image, 1 thread, vs the time its MACs take at the measured int8 peak",
     "<=", 1.5, "x"),
    ("int8_fastest_tflite", "int8 faster than dynamic and float32, 1 thread (the faster one's median / int8's)",
     ">", 1.0, "x"),
    ("int8_vs_peers", "LiteRT int8 at least as fast as every peer runtime, 1 thread (fastest peer's median / "
     "int8's, tools.peers)", ">=", 1.0, "x"),
)
PROFILED_VARIANTS = ("int8", "dynamic", "float32")  # per-operator profiles, int8 against the other two
PEAK_MODE_NAMES = {"int8": "full-int8", "dynamic": "dynamic-range"}
TOP_OPS = 5  # operators shown in results.md (all of them are in op_profile.md)
SAME_WITHIN = 0.05  # changes vs the previous run smaller than this fraction are "same"


# -- pure helpers: accuracy provenance, ratios, targets, previous run --------------------

def report_accuracy(facts: dict, report: dict | None) -> tuple[float | None, str]:
    """Top-1 from the conversion report if it measured exactly this FlatBuffer (SHA-256). Pure.
    Returns (accuracy or None, why)."""
    if not report:
        return None, "no conversion report"
    row = next((r for r in report.get("variants", []) if r.get("variant") == facts.get("variant")), None)
    if row is None or row.get("accuracy") is None:
        return None, f"variant {facts.get('variant')} not in the conversion report"
    if row.get("flatbuffer_sha256") != facts["flatbuffer_sha256"]:
        return None, "conversion report is for another FlatBuffer (SHA-256 differs)"
    return float(row["accuracy"]), "conversion report (FlatBuffer SHA-256 matches)"


def keras_report_accuracy(keras_sha256: str, report: dict | None) -> tuple[float | None, str]:
    """Keras top-1 from the conversion report if that conversion was of this .keras file. Pure."""
    if not report:
        return None, "no conversion report"
    row = next((r for r in report.get("variants", []) if r.get("variant") == "keras"), None)
    if row is None or row.get("accuracy") is None:
        return None, "no Keras row in the conversion report"
    if report.get("keras_sha256") != keras_sha256:
        return None, "conversion report is for another Keras model file (SHA-256 differs)"
    return float(row["accuracy"]), "conversion report (Keras file SHA-256 matches)"


def median_at(row: dict, threads: int, what: str = "latency") -> float | None:
    stats = (row.get(what) or {}).get(str(threads))
    return stats["median_us"] if stats else None


def fastest_keras(rows: list[dict], threads: int) -> dict | None:
    """The Keras row with the lowest single-image median at `threads`. Pure."""
    keras_rows = [r for r in rows if r["kind"] == "keras" and median_at(r, threads)]
    return min(keras_rows, key=lambda r: median_at(r, threads)) if keras_rows else None


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b, or None when either is missing or b is 0. Pure."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def same_run_ratios(rows: list[dict], threads: list[int]) -> dict:
    """The figures to quote: ratios between rows measured in this run. Pure."""
    by = {r["name"]: r for r in rows}
    int8, f32 = by.get("int8"), by.get("float32")
    out: dict = {}
    for t in threads:
        fast = fastest_keras(rows, t)
        for r in rows:
            r.setdefault("speedup_vs_fastest_keras", {})[str(t)] = (
                ratio(median_at(fast, t), median_at(r, t), 2) if fast else None)
        if int8:
            out[f"int8_speedup_vs_fastest_keras_{t}t"] = ratio(median_at(fast, t), median_at(int8, t), 2) if fast else None
            out[f"fastest_keras_way_{t}t"] = fast["name"] if fast else None
            if "keras_predict" in by:
                out[f"int8_speedup_vs_keras_predict_{t}t"] = ratio(median_at(by["keras_predict"], t), median_at(int8, t), 1)
            if f32:
                out[f"int8_speedup_vs_float32_{t}t"] = ratio(median_at(f32, t), median_at(int8, t), 2)
            pre = (int8.get("preprocess") or {}).get("median_us")
            out[f"frame_preprocessing_share_int8_{t}t"] = ratio(pre, median_at(int8, t, "frame"), 3)
    if int8 and 1 in threads:
        others = [median_at(by[n], 1) for n in ("dynamic", "float32") if n in by and median_at(by[n], 1)]
        if others:
            out["int8_speedup_vs_faster_of_dynamic_float32_1t"] = ratio(min(others), median_at(int8, 1), 3)
        if "dynamic" in by:
            out["int8_speedup_vs_dynamic_1t"] = ratio(median_at(by["dynamic"], 1), median_at(int8, 1), 3)
    if int8 and len(threads) > 1:
        out[f"int8_speedup_{threads[1]}t_vs_{threads[0]}t"] = ratio(median_at(int8, threads[0]), median_at(int8, threads[1]), 2)
    if int8 and f32:
        out["int8_size_vs_float32"] = ratio(int8["size_bytes"], f32["size_bytes"], 3)
    keras_row = next((r for r in rows if r["kind"] == "keras"), None)
    if int8 and keras_row:
        out["int8_size_vs_keras_file"] = ratio(int8["size_bytes"], keras_row["size_bytes"], 4)
        if int8.get("accuracy") is not None and keras_row.get("accuracy") is not None:
            out["int8_accuracy_change_pp_vs_keras"] = round((int8["accuracy"] - keras_row["accuracy"]) * 100, 3)
    return out


def check_target(what: str, value: float | None, op: str, limit: float, unit: str) -> dict:
    """Met or missed, and by how much (as a fraction of the limit and as value/limit). Pure."""
    out = {"what": what, "op": op, "limit": limit, "unit": unit, "value": value}
    if value is None:
        return {**out, "met": None, "verdict": "not measured"}
    if op in ("<=", "<"):
        met = value <= limit if op == "<=" else value < limit
        margin = (limit - value) / limit  # > 0: headroom
    elif op in (">=", ">"):
        met = value >= limit if op == ">=" else value > limit
        margin = (value - limit) / limit
    else:
        raise ValueError(f"unknown comparison {op!r}")
    fv = _fmt_value(value, unit)
    fl = _fmt_value(limit, unit)
    below = op.startswith("<")
    if met:
        verdict = (f"met: {fv} {op} {fl}, {margin:.0%} headroom" if below
                   else f"met: {fv} {op} {fl}, {value / limit:.2f}x the target")
    else:
        worse = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}[op]
        verdict = (f"MISSED: {fv} {worse} {fl}, {value / limit:.2f}x the limit" if below
                   else f"MISSED: {fv} {worse} {fl}, {value / limit:.0%} of the target")
    return {**out, "met": met, "margin": round(margin, 4), "value_over_limit": round(value / limit, 4),
            "verdict": verdict}


def _fmt_value(value: float, unit: str) -> str:
    if unit == "µs":
        return rt.fmt_us(value)
    if unit == "x":
        return f"{value:.2f}x" if abs(value) < 10 else f"{value:.1f}x"
    return f"{value:.1f} {unit}"


def int8_against_peak(rows: list[dict], peak: dict | None) -> dict | None:
    """The 1-thread int8 latency (`Classifier.predict`, and `invoke()` alone) against the time its
    MACs take at the measured peak. Pure."""
    int8 = next((r for r in rows if r["name"] == "int8"), None)
    if not int8 or not peak or median_at(int8, 1) is None:
        return None
    out = cpu_peak.against_measured_peak(int8.get("macs_per_image"), median_at(int8, 1), peak)
    if out:
        invoke = median_at(int8, 1, "invoke")
        inv = cpu_peak.against_measured_peak(int8.get("macs_per_image"), invoke, peak) if invoke else None
        out["invoke_us"] = invoke
        out["invoke_times_peak_time"] = inv and inv["times_peak_time"]
        full_int8 = (peak.get("per_mode") or {}).get("int8")
        if full_int8:
            own = cpu_peak.against_measured_peak(int8.get("macs_per_image"), median_at(int8, 1), full_int8)
            out["full_int8_kernels_gmacs_per_s"] = full_int8["gmacs_per_s"]
            out["times_full_int8_kernels_peak_time"] = own and own["times_peak_time"]
    return out


def targets(rows: list[dict], ratios: dict, peak: dict | None = None, peers: dict | None = None) -> list[dict]:
    """Each target of the issue against this run (1 thread). Pure."""
    int8 = next((r for r in rows if r["name"] == "int8"), None) or {}
    vs_peak = int8_against_peak(rows, peak)
    values = {
        "int8_latency": median_at(int8, 1) if int8 else None,
        "frame_latency": median_at(int8, 1, "frame") if int8 else None,
        "int8_speedup": ratios.get("int8_speedup_vs_fastest_keras_1t"),
        "runtime_memory": (int8.get("memory") or {}).get("peak_rss_mb"),
        "int8_vs_peak": vs_peak and vs_peak["times_peak_time"],
        "int8_fastest_tflite": ratios.get("int8_speedup_vs_faster_of_dynamic_float32_1t"),
        "int8_vs_peers": (((peers or {}).get("verdict") or {}).get("per_thread") or {}).get("1", {}).get(
            "fastest_peer_vs_reference"),
    }
    values["frame_latency_build"] = values["frame_latency"]
    return [{"key": key, **check_target(what, values[key], op, limit, unit)}
            for key, what, op, limit, unit in TARGETS]


def key_figures(results: dict) -> dict:
    """Flat {name: number} of the figures worth comparing between runs. Pure."""
    figs: dict = {}
    for r in results.get("rows", []):
        n = r["name"]
        for what in ("latency", "frame"):
            for t, s in (r.get(what) or {}).items():
                if s:
                    figs[f"{n}.{what}_{t}t.median_us"] = s["median_us"]
                    figs[f"{n}.{what}_{t}t.p95_us"] = s["p95_us"]
        for t, b in (r.get("batch") or {}).items():
            if b:
                figs[f"{n}.batch_{t}t.images_per_s"] = b["images_per_s"]
        for key in ("accuracy", "size_bytes"):
            if r.get(key) is not None:
                figs[f"{n}.{key}"] = r[key]
        mem = (r.get("memory") or {}).get("peak_rss_mb")
        if mem is not None:
            figs[f"{n}.memory_mb"] = mem
    for k, v in (results.get("ratios") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            figs[f"ratios.{k}"] = v
    peak = results.get("measured_peak") or {}
    if peak.get("gmacs_per_s"):
        figs["measured_peak.gmacs_per_s"] = peak["gmacs_per_s"]
    for variant, p in (results.get("op_profile") or {}).items():
        figs[f"op_profile.{variant}.invoke_us"] = p["invoke_us"]
    return figs


def better_when(key: str) -> str | None:
    """'lower', 'higher' or None (no direction) for a key figure. Pure."""
    if key.startswith("measured_peak."):
        return None  # a property of the machine, not of the model
    if key.endswith(("_us", "_mb", "size_bytes")) or "_size_vs_" in key or "preprocessing_share" in key:
        return "lower"
    if key.endswith(("images_per_s", "accuracy")) or "_speedup" in key:
        return "higher"
    return None


def compare_runs(current: dict, previous: dict, same_within: float = SAME_WITHIN) -> dict:
    """{key: previous, current, ratio (current/previous), verdict} for keys in both runs. Pure.

    The verdict is 'better' or 'worse' by the figure's direction when the
    ratio is outside 1 +/- same_within, else 'same'; differences of
    percentage points (e.g. accuracy change) are compared as they are.
    """
    out = {}
    for key in sorted(set(current) & set(previous)):
        cur, prev = current[key], previous[key]
        r = ratio(cur, prev, 4) if prev else None
        direction = better_when(key)
        if r is None or direction is None or abs(r - 1) <= same_within:
            verdict = "same" if r is not None and abs(r - 1) <= same_within else "-"
        else:
            verdict = "better" if (r < 1) == (direction == "lower") else "worse"
        out[key] = {"previous": prev, "current": cur, "ratio": r, "verdict": verdict}
    return out


def previous_block(old: dict | None) -> dict | None:
    """What a new results file keeps of the last one: its figures, not its own history. Pure."""
    if not old or old.get("schema") != SCHEMA:
        return None
    return {"created": old.get("created"), "command": old.get("command"), "quick": old.get("quick"),
            "machine": rt.describe_machine(old.get("machine") or {}), "figures": key_figures(old)}


# -- measuring ---------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    return sha256(path.read_bytes())


def run_keras(keras_path: Path, threads: int, ways: list[str], settings: BenchSettings, keras_it: dict,
              accuracy: bool, data_dir: str | None) -> dict:
    """One `tools.bench_keras` child process; its JSON result."""
    cmd = [sys.executable, "-m", "tools.bench_keras", "--model", str(keras_path), "--threads", str(threads),
           "--ways", ",".join(ways), "--runs", str(keras_it["keras_runs"]),
           "--warmup", str(max(1, settings.warmup // 10)), "--frame_runs", str(keras_it["keras_frame_runs"]),
           "--batch_size", str(settings.batch_size), "--batch_images", str(settings.batch_images),
           "--batch_repeats", str(settings.batch_repeats)]
    if accuracy:
        cmd.append("--accuracy")
    if data_dir:
        cmd += ["--data_dir", data_dir]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_KERAS "):
            return json.loads(line[len("BENCH_KERAS "):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
    raise EdgeError(f"Keras benchmark ({threads} thread(s)) failed with exit status {proc.returncode}: {tail}")


def keras_rows(per_thread: dict[int, dict], keras_path: Path, accuracy: float | None, source: str) -> list[dict]:
    """One row per Keras way from the per-thread child results. Pure."""
    first = per_thread[next(iter(per_thread))]
    if accuracy is None and first.get("accuracy") is not None:
        accuracy, source = first["accuracy"], "evaluated now (model.predict on the full test set)"
    rows = []
    for way in first["ways"]:
        rows.append({
            "name": f"keras_{way}", "kind": "keras", "way": way, "label": KERAS_LABELS[way],
            "path": str(keras_path), "size_bytes": first["size_bytes"], "parameters": first["parameters"],
            "macs_per_image": first["macs_per_image"], "accuracy": accuracy, "accuracy_source": source,
            "latency": {str(t): r["ways"][way]["latency"] for t, r in per_thread.items()},
            "batch": {str(t): r["ways"][way]["batch"] for t, r in per_thread.items()},
            "frame": {str(t): r["ways"][way]["frame"] for t, r in per_thread.items()},
            "memory": {"peak_rss_mb": first["peak_rss_mb"],
                       "note": "the TensorFlow benchmark process (model loaded, all ways measured)"},
            "versions": {"tensorflow": first["tensorflow"], "keras": first["keras"]},
        })
    return rows


class TestSet:
    """The Fashion-MNIST test set, loaded on first use (only when an accuracy must be computed)."""

    def __init__(self, data_dir: str | None):
        self.data_dir, self._data = data_dir, None

    def get(self):
        if self._data is None:
            from edge_runtime import dataset
            self._data = dataset.load(self.data_dir)
        return self._data


def evaluate_tflite(path: Path, test: TestSet) -> float:
    from edge_runtime.classifier import Classifier
    data = test.get()
    clf = Classifier(path, num_threads=max(1, min(4, os.cpu_count() or 1)), batch_size=256)
    return float((clf.predict(data.test_images).argmax(1) == data.test_labels).mean())


# -- output --------------------------------------------------------------------------------

def _label(r: dict) -> str:
    return r.get("label") or f"TFLite {r['name']}" + (" (deployed)" if r["name"] == "int8" else "")


def _num(n, fmt="{:,}") -> str:
    return "-" if n is None else fmt.format(n)


def _fig(v: float) -> str:
    """A figure for the change table: '1,691,815', '47.33', '0.7378'. Pure."""
    if float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"


def markdown(results: dict) -> str:
    """results.md: the tables, targets, ratios, the int8 estimate and the change since last run. Pure."""
    rows, threads = results["rows"], results["config"]["threads"]
    lines = rt.results_header("Benchmarks", results, "other work slows every row alike")
    model = results.get("model_name")
    if model:
        lines.append(f"Model: `{model}` ({results['config']['run_dir']}, {results['config']['models_dir']})")
    lines += ["", "## Size, accuracy, memory", "",
              "| | file size | parameters | MACs / image | top-1 (10,000 test images) | peak memory |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc = f"{r['accuracy']:.2%}" if r.get("accuracy") is not None else "-"
        mem = (r.get("memory") or {}).get("peak_rss_mb")
        mem_text = "-" if mem is None else (f"{mem:.0f} MB (TensorFlow process)" if r["kind"] == "keras" else f"{mem:.0f} MB")
        lines.append(f"| {_label(r)} | {rt.fmt_bytes(r['size_bytes'])} | {_num(r.get('parameters'))} | "
                     f"{_num(r.get('macs_per_image') and r['macs_per_image'] / 1e6, '{:.2f} M')} | {acc} | {mem_text} |")
    lines += ["", "## Speed", "",
              "| | threads | 1 image: median | p95 | p99 | vs fastest Keras | batch images/s | camera frame: median | p95 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for i, t in enumerate(threads):
            k = str(t)
            lat, frame, batch = (r.get("latency") or {}).get(k), (r.get("frame") or {}).get(k), (r.get("batch") or {}).get(k)
            sp = (r.get("speedup_vs_fastest_keras") or {}).get(k)
            lines.append(f"| {_label(r) if i == 0 else ''} | {t} | {rt.fmt_us(lat and lat['median_us'])} | "
                         f"{rt.fmt_us(lat and lat['p95_us'])} | {rt.fmt_us(lat and lat['p99_us'])} | "
                         f"{'-' if sp is None else f'{sp:.2f}x'} | {_num(batch and batch['images_per_s'], '{:,.0f}')} | "
                         f"{rt.fmt_us(frame and frame['median_us'])} | {rt.fmt_us(frame and frame['p95_us'])} |")
    lines += ["", "## Targets (1 thread; set for the default `edge` model on the build machine)", "",
              "| target | limit | measured | verdict |", "|---|---:|---:|---|"]
    for tg in results["targets"]:
        measured = "-" if tg["value"] is None else _fmt_value(tg["value"], tg["unit"])
        lines.append(f"| {tg['what']} | {tg['op']} {_fmt_value(tg['limit'], tg['unit'])} | {measured} | {tg['verdict']} |")
    if model and model != "edge":
        lines.append(f"\nThis run's model is `{model}`, not `edge`: the targets are shown for reference.")
    lines += ["", "## Ratios measured in this run (the figures to quote)", ""]
    for k, v in results["ratios"].items():
        lines.append(f"- `{k}`: {'-' if v is None else v}")
    lines += where_the_time_goes(results)
    prev = results.get("previous")
    lines += ["", "## Change since the previous run", ""]
    if not prev:
        lines.append("No previous run in this directory.")
    else:
        lines.append(f"Previous: {prev['created']} on {prev['machine']}"
                     + (" (a --quick run)" if prev.get("quick") else "") + ". Ratio = now / previous.")
        lines += ["", "| figure | previous | now | ratio | |", "|---|---:|---:|---:|---|"]
        for key, c in results["change_vs_previous"].items():
            if ".p95_us" in key or c["ratio"] is None:
                continue
            mark = f"**{c['verdict']}**" if c["verdict"] == "worse" else c["verdict"]
            lines.append(f"| `{key}` | {_fig(c['previous'])} | {_fig(c['current'])} | {c['ratio']:.2f} | {mark} |")
    lines += ["", "## Notes", "",
              "- Latency: wall time of one call on one 28x28 image after a warm-up (TFLite: `Classifier.predict`, "
              "input conversion and dequantization included); p95/p99 are nearest-rank percentiles.",
              "- Camera frame: a synthetic 640x480 BGR photo of a shirt on a floor through `Classifier.classify` "
              "(`photo_to_input`, inference, top-3); the Keras rows use the same preprocessing.",
              "- Peak memory: VmHWM of a fresh process that imports the runtime, loads the model and classifies "
              "frames; TensorFlow is never imported there.",
              "- Accuracy sources: " + "; ".join(f"{r['name']}: {r.get('accuracy_source') or '-'}" for r in rows) + ".",
              "", "![latency](latency.png)", ""]
    return "\n".join(lines)


def where_the_time_goes(results: dict) -> list[str]:
    """results.md's section on the measured peak, the int8 operators and the camera frame's steps. Pure."""
    lines = ["", "## Where the time goes (1 thread)", ""]
    peak, vs = results.get("measured_peak"), results.get("int8_vs_peak")
    if peak:
        modes = peak.get("per_mode") or {}
        lines.append(f"Measured int8 peak of one core through the same interpreter: **{peak['gmacs_per_s']:.0f} GMAC/s** "
                     f"(`{peak['best']}`, the fastest of {len(peak['layers'])} single-layer models; "
                     + ", ".join(f"{PEAK_MODE_NAMES.get(mode, mode)} kernels' plateau {m['gmacs_per_s']:.0f}"
                                 for mode, m in modes.items())
                     + "; `python -m tools.cpu_peak`).  ")
    elif results.get("measured_peak_error"):
        lines.append(f"Measured int8 peak: not measured ({results['measured_peak_error']}).  ")
    if vs:
        lines.append(f"int8 = **{vs['times_peak_time']:.2f}x the measured-peak time**: {vs['macs']:,} MACs take "
                     f"{rt.fmt_us(vs['peak_time_us'])} at {vs['peak_gmacs_per_s']:.0f} GMAC/s, one image takes "
                     f"{rt.fmt_us(vs['latency_us'])} (`Classifier.predict`; `invoke()` alone {rt.fmt_us(vs['invoke_us'])}, "
                     f"{vs['invoke_times_peak_time']:.2f}x), {vs['achieved_gmacs_per_s']:.0f} GMAC/s"
                     + (f"; against the full-int8 kernels' own plateau ({vs['full_int8_kernels_gmacs_per_s']:.0f} GMAC/s) "
                        f"{vs['times_full_int8_kernels_peak_time']:.2f}x" if vs.get("times_full_int8_kernels_peak_time") else "")
                     + ".  ")
    eff, est = results.get("int8_efficiency"), (results.get("machine") or {}).get("int8_peak")
    if est and est.get("gmacs_per_s_per_core"):
        lines.append(f"Side note, the ISA estimate it replaces: {est['gmacs_per_s_per_core']:.0f} GMAC/s ({est['isa']}: "
                     f"{est['assumption']}, at {est['clock_ghz']} GHz from /proc/cpuinfo)"
                     + (f", which this run's {eff['achieved_gmacs_per_s']:.0f} GMAC/s would put at "
                        f"{cpu_peak.peak_verdict(eff['fraction_of_peak'])}" if eff and eff.get("fraction_of_peak") else "")
                     + ".")
    profiles = results.get("op_profile") or {}
    int8 = profiles.get("int8")
    if int8:
        others = [v for v in PROFILED_VARIANTS if v != "int8" and v in profiles]
        matched = {v: {(r["op"], r["shape"]): r["us"] for r in profiles[v]["ops"]} for v in others}
        lines += ["", f"int8 operators by time (prefix models, `invoke()` medians: whole graph "
                      f"{rt.fmt_us(int8['invoke_us'])}; every operator of every variant: op_profile.md):", "",
                  "| int8 operator | shape | µs | share | GMAC/s | " + " | ".join(f"{v} µs" for v in others) + " |",
                  "|---|---|---:|---:|---:|" + "---:|" * len(others)]
        for r in op_profile.top_ops(int8, TOP_OPS):
            same = [matched[v].get((r["op"], r["shape"])) for v in others]
            lines.append(f"| {r['op']} | {r['shape']} | {r['us']:.1f} | "
                         + ("-" if r["share"] is None else f"{r['share']:.0%}") + " | "
                         + ("-" if r["gmacs_per_s"] is None else f"{r['gmacs_per_s']:.0f}") + " | "
                         + " | ".join("-" if u is None else f"{u:.1f}" for u in same) + " |")
    frame = results.get("frame_profile")
    if frame:
        int8_row = next((r for r in results["rows"] if r["name"] == "int8"), None) or {}
        total = median_at(int8_row, 1, "frame")
        lines += ["", "Camera frame (the synthetic 640x480 BGR frame): `photo_to_input`'s steps "
                  "(`tools/frame_profile.py`, medians)"
                  + (f", against the int8 frame's {rt.fmt_us(total)} end to end:" if total else ":"), "",
                  "| step | median | share of the frame |", "|---|---:|---:|"]
        for step, us in frame["steps"].items():
            share = f"{us / total:.0%}" if total else "-"
            lines.append(f"| {step} | {rt.fmt_us(us)} | {share} |")
        if frame.get("total_us"):
            lines.append(f"| `photo_to_input` as one call | {rt.fmt_us(frame['total_us'])} | "
                         + (f"{frame['total_us'] / total:.0%}" if total else "-") + " |")
    elif results.get("frame_profile_error"):
        lines += ["", f"Camera frame steps: {results['frame_profile_error']}."]
    return lines


def frame_steps(size: tuple[int, int]) -> tuple[dict | None, str | None]:
    """The synthetic camera frame's preprocessing steps from `tools.frame_profile` when it exists:
    ({"steps": {step: median µs}, "total_us": photo_to_input's median or None}, None); else (None, why)."""
    try:
        from .frame_profile import frame_profile
    except ImportError as e:
        return None, f"not measured (tools.frame_profile: {e})"
    from edge_runtime.synthetic import synthetic_frame
    return frame_steps_of(frame_profile(synthetic_frame(), size)), None


def frame_steps_of(profile: dict) -> dict:
    """frame_profile's answer as {"steps": {step: µs}, "total_us"}: it is either that shape
    ({"steps": ..., "total_us": ...}) or the flat {step: µs}. Pure."""
    steps = profile.get("steps") if isinstance(profile.get("steps"), dict) else profile
    return {"steps": {k: float(v["median_us"] if isinstance(v, dict) else v) for k, v in steps.items()},
            "total_us": profile.get("total_us") if "steps" in profile else None}


def plot(results: dict, path: Path) -> None:
    """latency.png: single-image and camera-frame medians per row and thread count (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    rows, threads = results["rows"], results["config"]["threads"]
    names = [_label(r).replace("`", "") for r in rows]
    y = np.arange(len(rows))
    h = 0.8 / max(1, len(threads))
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.55 * len(rows) + 2), sharey=True)
    limits = {key: limit for key, _, _, limit, _ in TARGETS}
    for ax, what, title, limit in ((axes[0], "latency", "one 28x28 image", limits["int8_latency"]),
                                   (axes[1], "frame", "640x480 camera frame, end to end", limits["frame_latency"])):
        for i, t in enumerate(threads):
            med = np.array([median_at(r, t, what) or np.nan for r in rows])
            p95 = np.array([((r.get(what) or {}).get(str(t)) or {}).get("p95_us", np.nan) for r in rows])
            ax.barh(y + i * h, med, h, xerr=[np.zeros_like(med), np.nan_to_num(p95 - med)], capsize=2,
                    label=f"{t} thread{'s' if t > 1 else ''} (median, whisker p95)")
        ax.axvline(limit, color="k", ls="--", lw=1)
        ax.text(limit, 0.01, f" target {rt.fmt_us(limit)}", fontsize=8, va="bottom",
                transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ax.set_xlabel("µs (log scale)")
        ax.set_title(title)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].set_yticks(y + h * (len(threads) - 1) / 2, names)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{results['created'][:10]} · {rt.describe_machine(results['machine'])}"
                 + (" · QUICK RUN" if results.get("quick") else ""), fontsize=9)
    fig.tight_layout()
    with atomic.atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# -- command line --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run_dir", default="runs/latest", help="training run whose model.keras is benchmarked")
    p.add_argument("--models_dir", default="models", help="converted models and conversion_report.json")
    p.add_argument("--out_dir", default="benchmarks", help="where results.json, results.md and latency.png go")
    p.add_argument("--variants", default=",".join(VARIANTS), help="TFLite variants to benchmark")
    p.add_argument("--keras_ways", default=",".join(KERAS_WAYS), help="Keras calls to benchmark, or 'none'")
    p.add_argument("--threads", type=rt.thread_list, default="1,2", help="thread counts, comma-separated")
    p.add_argument("--batch_size", type=count(1), default=256, help="batch size for throughput")
    rt.add_iteration_arguments(p)
    p.add_argument("--keras_runs", type=count(1), default=argparse.SUPPRESS,
                   help=f"timed single-image Keras calls per way (default: {KERAS_ITERATIONS['keras_runs'][0]}; "
                        f"{KERAS_ITERATIONS['keras_runs'][1]} with --quick)")
    p.add_argument("--keras_frame_runs", type=count(1), default=argparse.SUPPRESS,
                   help=f"timed Keras camera frames per way (default: {KERAS_ITERATIONS['keras_frame_runs'][0]}; "
                        f"{KERAS_ITERATIONS['keras_frame_runs'][1]} with --quick)")
    p.add_argument("--no_peak", action="store_true", help="skip measuring the int8 peak (tools.cpu_peak)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the same model through ONNX Runtime and OpenCV DNN (tools.peers: peers.{json,md})")
    p.add_argument("--no_op_profile", action="store_true",
                   help="skip the per-operator profiles (tools.op_profile) and benchmarks/op_profile.*")
    p.add_argument("--data_dir", default=None, help="Fashion-MNIST directory (default: $FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist, ~/.keras/datasets/fashion-mnist)")
    return p


def _keras_iterations(args) -> dict:
    """The Keras rows' counts: a flag given wins, else the full-run or --quick count."""
    it = {}
    for name, (full, quick) in KERAS_ITERATIONS.items():
        given = getattr(args, name, None)
        it[name] = given if given is not None else (quick if args.quick else full)
    return it


def _choices(text: str, allowed: tuple, what: str) -> list[str]:
    chosen = [v.strip() for v in text.split(",") if v.strip() and v.strip() != "none"]
    bad = [v for v in chosen if v not in allowed]
    if bad:
        raise UsageError(f"unknown {what}: {', '.join(bad)}; choose from {', '.join(allowed)}")
    return [v for v in allowed if v in chosen]


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def measure_where_time_goes(args, paths: dict, rows: list[dict]) -> dict:
    """The measured peak, the per-operator profiles and the camera frame's steps (1 thread)."""
    out: dict = {}
    if not args.no_peak:
        print("int8 peak: single-layer models through the interpreter, 1 thread", flush=True)
        try:
            out["measured_peak"] = cpu_peak.measured_peak(threads=1, quick=args.quick)
        except EdgeError as e:  # no TensorFlow to build the models with, or the build failed
            out["measured_peak"], out["measured_peak_error"] = None, str(e)
            print(f"warning: {e}", flush=True)
        out["int8_vs_peak"] = int8_against_peak(rows, out["measured_peak"])
    if not args.no_op_profile:
        it = {name: counts[1 if args.quick else 0] for name, counts in op_profile.ITERATIONS.items()}
        out["op_profile_iterations"] = it
        out["op_profile"] = {}
        for v in PROFILED_VARIANTS:
            if v in paths:
                print(f"per-operator profile: {v} (every prefix of the graph, 1 thread)", flush=True)
                out["op_profile"][v] = op_profile.profile_model(paths[v], threads=1, **it)
    int8 = next((r for r in rows if r["name"] == "int8"), None)
    if int8:
        print("camera frame: preprocessing steps", flush=True)
        from edge_runtime.classifier import Classifier
        out["frame_profile"], error = frame_steps(Classifier(paths["int8"], num_threads=1).input_size)
        if error:
            out["frame_profile_error"] = error
    return out


def write_op_profile(results: dict, out_dir: Path) -> None:
    """benchmarks/op_profile.{json,md} from this run's profiles, in tools.op_profile's format."""
    profile = {"schema": op_profile.SCHEMA, "created": results["created"], "command": results["command"],
               "quick": results["quick"], "machine": results["machine"],
               "iterations": results.get("op_profile_iterations"),
               "profiles": list(results["op_profile"].values()), "measured_peak": results.get("measured_peak")}
    atomic.write_text(out_dir / "op_profile.json", json.dumps(profile, indent=2, ensure_ascii=False) + "\n")
    atomic.write_text(out_dir / "op_profile.md", op_profile.markdown(profile))


def run(args, argv: list[str]) -> dict:
    settings = BenchSettings.from_args(args)  # memory is always measured here
    keras_it = _keras_iterations(args)
    variants = _choices(args.variants, VARIANTS, "variants")
    ways = _choices(args.keras_ways, KERAS_WAYS, "Keras ways")
    run_dir, models_dir, out_dir = Path(args.run_dir), Path(args.models_dir), Path(args.out_dir)
    keras_path = run_dir / "model.keras"
    command = f"python -m tools.bench {shlex.join(argv)}".strip()
    config = {"run_dir": str(run_dir), "models_dir": str(models_dir), "out_dir": str(out_dir), "variants": variants,
              "keras_ways": ways, "data_dir": args.data_dir, **settings.to_dict(), **keras_it}
    print(f"bench config: {json.dumps(config)}", flush=True)
    machine = rt.machine_info()
    machine["int8_peak"] = cpu_peak.int8_peak_here(machine)
    print(f"machine: {rt.describe_machine(machine)}; load average {machine.get('load_average')}", flush=True)

    paths = {v: models_dir / model_filename(v) for v in variants}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ModelError(f"missing {', '.join(missing)}; run `make convert` or pass --models_dir / --variants")
    report = _load_json(models_dir / "conversion_report.json")
    test = TestSet(args.data_dir)
    say = lambda s: print(s, flush=True)  # noqa: E731

    rows = []
    for v, path in paths.items():
        print(f"TFLite {v}: {path}", flush=True)
        row = rt.bench_tflite(path, settings, say)
        accuracy, why = report_accuracy(row, report)
        if accuracy is None:
            print(f"  accuracy: {why}; evaluating on the full test set", flush=True)
            accuracy, why = evaluate_tflite(path, test), f"evaluated now ({why})"
        row["accuracy"], row["accuracy_source"] = accuracy, why
        rows.append(row)

    keras = []
    if ways and not keras_path.is_file():
        print(f"warning: {keras_path} not found; Keras rows skipped (pass --run_dir)", flush=True)
    elif ways:
        k_acc, k_why = keras_report_accuracy(sha256_file(keras_path), report)
        per_thread = {}
        for i, t in enumerate(args.threads):
            print(f"Keras, {t} thread(s), in a TensorFlow child process: {', '.join(ways)}", flush=True)
            per_thread[t] = run_keras(keras_path, t, ways, settings, keras_it,
                                      accuracy=(i == 0 and k_acc is None), data_dir=args.data_dir)
        if k_acc is None:
            print(f"  Keras accuracy: {k_why}; evaluated in the child process", flush=True)
        keras = keras_rows(per_thread, keras_path, k_acc, k_why)
    rows = keras + rows

    ratios = same_run_ratios(rows, args.threads)
    int8 = next((r for r in rows if r["name"] == "int8"), None)
    estimate = None
    if int8 and "1" in int8["latency"]:  # one thread: comparable with one core's peak
        estimate = cpu_peak.efficiency(int8.get("macs_per_image"), int8["latency"]["1"]["median_us"], machine["int8_peak"])
        if estimate:
            inv = int8["invoke"]["1"]["median_us"]
            estimate["invoke_latency_us"] = inv
            estimate["invoke_gmacs_per_s"] = round(int8["macs_per_image"] / (inv * 1e-6) / 1e9, 2)
    results = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
        "quick": bool(args.quick), "config": config, "machine": machine,
        "model_name": next((r.get("model") for r in rows if r.get("model")), None),
        "rows": rows, "ratios": ratios, "int8_efficiency": estimate,
    }
    results.update(measure_where_time_goes(args, paths, rows))
    if results.get("int8_vs_peak"):
        ratios["int8_times_measured_peak_time_1t"] = results["int8_vs_peak"]["times_peak_time"]
    peer_results = None
    if args.peers:
        from tools import peers  # ONNX Runtime, tf2onnx: benchmark-only dependencies
        print("peers: the same model through ONNX Runtime and OpenCV DNN (tools.peers)", flush=True)
        peer_results = peers.run_peers(run_dir, args.threads, settings, models_dir=models_dir,
                                       data_dir=args.data_dir, command=command, say=say)
        results["peers"] = peer_results["verdict"]
    results["targets"] = targets(rows, ratios, results.get("measured_peak"), peer_results)
    results["previous"] = previous_block(_load_json(out_dir / "results.json"))
    results["change_vs_previous"] = (compare_runs(key_figures(results), results["previous"]["figures"])
                                     if results["previous"] else {})
    out_dir.mkdir(parents=True, exist_ok=True)
    if peer_results is not None:
        peers.write_results(peer_results, out_dir)
    if results.get("op_profile"):
        write_op_profile(results, out_dir)
    plot(results, out_dir / "latency.png")
    atomic.write_text(out_dir / "results.md", markdown(results))
    atomic.write_text(out_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


@process.command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    results = run(args, argv)
    print()
    print(rt.text_table([r for r in results["rows"]], args.threads))
    print()
    for tg in results["targets"]:
        print(f"target: {tg['what']}: {tg['verdict']}")
    out = Path(args.out_dir)
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'latency.png'}")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
