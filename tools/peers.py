"""`python -m tools.peers`: the same model through other runtimes, side by side with LiteRT.

    python -m tools.peers                         # runs/latest, models/ -> benchmarks/peers.{json,md}
    python -m tools.peers --run_dir runs/t1 --threads 1,2
    python -m tools.peers --quick                 # a handful of iterations: checks that everything runs
    python -m tools.peers models --tflite M --out DIR   # only the ONNX models (what `make pi-check` runs)

The same Keras model (`RUN_DIR/model.keras`), the same 10,000 test images and
the same single image, at the same thread counts, through:

- LiteRT: the converter's int8 and float32 .tflite (`MODELS_DIR`), through
  `edge_runtime.Classifier.predict`, the device's code path; LiteRT int8 is
  the reference every ratio is taken against;
- ONNX Runtime: an ONNX export of the Keras model (Keras'
  `Model.export(format="onnx")`, which runs tf2onnx), checked against Keras
  on every test image before anything is timed; float32, and int8 made by
  ONNX Runtime's own static quantizer in QDQ and QOperator formats,
  calibrated on the images the TFLite converter calibrates on;
- OpenCV DNN: `cv2.dnn.readNet` on each ONNX and on the two .tflite files;
  where it refuses a model, the one-line reason is recorded instead.

For each: top-1 on the test set, single-image latency (median, p95) per
thread count, the peak memory of a fresh process that loads and runs it
(`python -m tools.peers probe`), and the ratio to LiteRT int8 measured in the
same run. Latencies are taken in interleaved rounds (every runtime a share of
its calls in turn), so load that comes and goes falls on all of them alike.

The export runs in a TensorFlow child process (`python -m tools.peers
export`), cached under `.cache/peers/` by what decides it; this process never
imports TensorFlow. Peers are benchmark-only dependencies (the `peers` extra
of pyproject.toml), never the device's.

`run_peers(run_dir, threads, settings)` returns the results and
`markdown(results)` renders them; `write_results` writes
`benchmarks/peers.json` and `benchmarks/peers.md` atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge_runtime import atomic, process
from edge_runtime import bench as rt
from edge_runtime.argtypes import count
from edge_runtime.bench import BenchSettings
from edge_runtime.errors import EdgeError, ModelError, UsageError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "fashion-edge-peers/1"
CACHE = ROOT / ".cache" / "peers"
REFERENCE = "litert_int8"
# ONNX Runtime float32 against Keras, every test image: the largest difference of
# one probability. The export is the same float maths in another order (~1e-6).
EXPORT_TOLERANCE = 1e-5
# A peer whose top-1 is within this of LiteRT int8's (10 of 10,000 images) is "as accurate".
AS_ACCURATE_PP = 0.1
# Medians within 5% are a tie: that much moves between runs on a shared machine.
SAME_WITHIN = 0.05
ROUNDS = 5  # interleaved timing rounds per thread count
# ONNX Runtime's static quantizer, one model per scheme: (format, activation type).
# Weights int8 per channel, as the TFLite converter quantizes convolutions;
# MinMax calibration, as the TFLite converter calibrates.
INT8_SCHEMES = {
    "qdq_s8s8": ("QDQ", "QInt8"),  # the quantizer's default and ONNX Runtime's advice for x86-64
    "qdq_u8s8": ("QDQ", "QUInt8"),
    "qoperator_u8s8": ("QOperator", "QUInt8"),  # QOperator with int8 activations is slow on x86-64 (ORT warns)
}
RUNTIME_NAMES = {"litert": "LiteRT", "onnxruntime": "ONNX Runtime", "opencv": "OpenCV DNN"}
RUNTIME_MODULES = {"litert": "edge_runtime.classifier", "onnxruntime": "onnxruntime", "opencv": "cv2"}
# The distribution each runtime would add to the device (installed size measured here).
RUNTIME_DISTRIBUTIONS = {"litert": "ai-edge-litert", "onnxruntime": "onnxruntime", "opencv": "opencv-python-headless"}


@dataclass(frozen=True)
class Peer:
    """One runtime on one model file."""

    name: str  # e.g. ort_int8_qdq_s8s8
    runtime: str  # litert | onnxruntime | opencv
    model: str  # what the file is: "TFLite int8", "ONNX float32", "ONNX int8 QDQ s8s8"
    path: Path

    @property
    def label(self) -> str:
        return f"{RUNTIME_NAMES[self.runtime]} · {self.model}"


# -- pure helpers ---------------------------------------------------------------------------

def one_line(error: BaseException, limit: int = 240) -> str:
    """An exception as one short line: its last non-empty line, OpenCV's source path trimmed. Pure.

    OpenCV says `OpenCV(5.1.0) /io/opencv/modules/dnn/src/x.cpp:42: error: (-215:...) what`;
    the build's directory says nothing to a reader, the file and line do.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    text = re.sub(r"^OpenCV\(([\d.]+)\) \S*?/modules/(\S+): error: ", r"OpenCV \1, \2 ", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def chunk_sizes(runs: int, rounds: int) -> list[int]:
    """`runs` calls split into at most `rounds` near-equal chunks. Pure."""
    rounds = max(1, min(rounds, runs))
    return [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]


def median_at(row: dict, threads: int) -> float | None:
    stats = (row.get("latency") or {}).get(str(threads))
    return stats["median_us"] if stats else None


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def add_ratios(rows: list[dict], threads: list[int], reference: str = REFERENCE) -> None:
    """Each row's latency, memory and top-1 against the reference row of the same run. Pure (in place)."""
    ref = next((r for r in rows if r["name"] == reference), None)
    if ref is None:
        return
    for r in rows:
        out = {f"latency_{t}t": ratio(median_at(r, t), median_at(ref, t)) for t in threads}
        out["memory"] = ratio((r.get("memory") or {}).get("peak_rss_mb"), (ref.get("memory") or {}).get("peak_rss_mb"))
        out["accuracy_pp"] = (round((r["accuracy"] - ref["accuracy"]) * 100, 2)
                              if r.get("accuracy") is not None and ref.get("accuracy") is not None else None)
        r["vs_reference"] = out


def verdict(rows: list[dict], threads: list[int], reference: str = REFERENCE,
            same_within: float = SAME_WITHIN, as_accurate_pp: float = AS_ACCURATE_PP) -> dict:
    """Is LiteRT int8 at least as fast as every peer measured, per thread count? Pure.

    A peer is faster when its median is more than `same_within` below the
    reference's; within that it is a tie. A faster peer is "as accurate" when
    its top-1 is no more than `as_accurate_pp` below the reference's.
    """
    ref = next((r for r in rows if r["name"] == reference), None)
    peers = [r for r in rows if r["runtime"] != "litert" and r.get("status") == "ok"]
    if ref is None or not peers:
        return {"met": None, "text": "not measured: no reference or no peer ran", "per_thread": {}, "faster": []}
    per_thread, faster = {}, []
    for t in threads:
        ref_us = median_at(ref, t)
        timed = [r for r in peers if median_at(r, t) is not None]
        if ref_us is None or not timed:
            continue
        fastest = min(timed, key=lambda r: median_at(r, t))
        ties = [r["name"] for r in timed if abs(median_at(r, t) / ref_us - 1) <= same_within]
        for r in timed:
            if median_at(r, t) < ref_us * (1 - same_within):
                pp = (r["accuracy"] - ref["accuracy"]) * 100
                faster.append({"name": r["name"], "label": r["label"], "runtime": r["runtime"], "threads": t,
                               "median_us": median_at(r, t), "reference_us": ref_us,
                               "speedup": round(ref_us / median_at(r, t), 2), "accuracy_pp": round(pp, 2),
                               "as_accurate": pp >= -as_accurate_pp})
        per_thread[str(t)] = {"reference_us": ref_us, "fastest_peer": fastest["name"],
                              "fastest_peer_label": fastest["label"], "fastest_peer_us": median_at(fastest, t),
                              "fastest_peer_vs_reference": ratio(median_at(fastest, t), ref_us),
                              "ties": ties, "met": not any(f["threads"] == t for f in faster)}
    met = all(p["met"] for p in per_thread.values()) if per_thread else None
    if met:
        text = ("met: LiteRT int8 is at least as fast as every peer measured at "
                + ", ".join(f"{t} thread{'s' if t != '1' else ''}" for t in per_thread)
                + (f" (ties within {same_within:.0%}: " + "; ".join(f"{t}t {', '.join(p['ties'])}"
                   for t, p in per_thread.items() if p["ties"]) + ")" if any(p["ties"] for p in per_thread.values())
                   else ""))
    elif met is None:
        text = "not measured"
    else:
        text = "MISSED: " + "; ".join(f"{f['label']} is {f['speedup']:.2f}x as fast at {f['threads']}t "
                                      f"({f['accuracy_pp']:+.2f} pp top-1{', as accurate' if f['as_accurate'] else ''})"
                                      for f in faster)
    return {"met": met, "text": text, "per_thread": per_thread, "faster": faster,
            "same_within": same_within, "as_accurate_pp": as_accurate_pp}


def int8_formats(rows: list[dict], threads: list[int]) -> dict:
    """ONNX Runtime's int8 schemes by speed per thread count: which format is fastest. Pure."""
    out = {}
    for t in threads:
        timed = {r["name"].removeprefix("ort_int8_"): median_at(r, t) for r in rows
                 if r["name"].startswith("ort_int8_") and median_at(r, t) is not None}
        if timed:
            best = min(timed, key=timed.get)
            out[str(t)] = {"medians_us": timed, "fastest": best, "format": INT8_SCHEMES[best][0]}
    return out


# -- the ONNX models --------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def calibration_settings(keras_sha: str, models_dir: Path | None) -> dict:
    """The int8 calibration the TFLite converter used for this Keras file: from its conversion
    report when that report is of this file, else the converter's defaults."""
    from convert.pipeline import ConvertConfig
    defaults = ConvertConfig()
    settings = {"size": defaults.calibration_size, "photos": defaults.photo_calibration, "seed": defaults.seed,
                "source": "the converter's defaults (no conversion report of this Keras file)"}
    report_path = (models_dir or Path("models")) / "conversion_report.json"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return settings
    if report.get("keras_sha256") == keras_sha:
        c = report.get("config") or {}
        settings.update(size=int(c.get("calibration_size", settings["size"])),
                        photos=int(c.get("photo_calibration", settings["photos"])),
                        seed=int(c.get("seed", settings["seed"])), source=f"{report_path} (same Keras file)")
    return settings


def calibration_images(data, run_dir: Path, size: int, photos: int, seed: int):
    """The TFLite converter's int8 calibration images (convert.pipeline.calibration_images):
    `size` class-stratified training images plus `photos` of the run's training photos.
    Training data only, never the test set."""
    from convert.pipeline import ConvertConfig, calibration_images as converter_calibration
    config = ConvertConfig(calibration_size=size, photo_calibration=photos, seed=seed)
    return converter_calibration(Path(run_dir), data, config)


def export_onnx(model, path: Path) -> dict:
    """Write the Keras model as ONNX (Keras' own exporter: tf2onnx); returns what was used.

    Flatten becomes a reshape with a constant shape first, as for TFLite
    (convert.graph.static_flatten): the same outputs, without the run-time
    shape ops in the graph.
    """
    import contextlib
    import io
    import warnings

    import numpy as np

    from convert.graph import static_flatten
    model = static_flatten(model)
    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)  # the exporter needs a called model
    with atomic.atomic_path(path, keep_suffix=True) as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model.export(str(tmp), format="onnx", verbose=False)
    import onnx
    proto = onnx.load(str(path))
    return {"exporter": "keras Model.export(format='onnx')", "opset": next(
        (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "ops": [n.op_type for n in proto.graph.node]}


def compare_with_keras(keras_probs, onnx_probs, tolerance: float = EXPORT_TOLERANCE) -> dict:
    """Largest probability difference and top-1 agreement of the ONNX export against Keras. Pure."""
    import numpy as np
    diff = float(np.abs(np.asarray(onnx_probs, np.float64) - np.asarray(keras_probs, np.float64)).max())
    agreement = float((np.asarray(onnx_probs).argmax(1) == np.asarray(keras_probs).argmax(1)).mean())
    return {"images": int(len(keras_probs)), "max_abs_diff": diff, "tolerance": tolerance,
            "top1_agreement": agreement, "ok": diff <= tolerance}


def quantize_int8(float_path: Path, out_path: Path, calibration, scheme: str, work_dir: Path) -> Path:
    """ONNX Runtime's static int8 quantization of the float ONNX model, one scheme of INT8_SCHEMES."""
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    fmt, activations = INT8_SCHEMES[scheme]
    prepared = work_dir / "float32.prepared.onnx"
    if not prepared.is_file() or prepared.stat().st_mtime < float_path.stat().st_mtime:
        # What ONNX Runtime's docs ask for first: shape inference and graph optimization.
        with atomic.atomic_path(prepared, keep_suffix=True) as tmp:
            quant_pre_process(str(float_path), str(tmp), skip_symbolic_shape=True)
    input_name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        """One image per batch, float32 raw pixels: what the TFLite converter's representative dataset yields."""

        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(calibration):
                return None
            self.i += 1
            return {input_name: calibration[self.i - 1][None, :, :, None].astype("float32")}

        def rewind(self):
            self.i = 0

    reader = Reader()
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer's advice is in INT8_SCHEMES' comments
    try:
        with atomic.atomic_path(out_path, keep_suffix=True) as tmp:
            quantize_static(str(prepared), str(tmp), reader, quant_format=getattr(QuantFormat, fmt),
                            activation_type=getattr(QuantType, activations), weight_type=QuantType.QInt8,
                            per_channel=True)
    finally:
        quiet.setLevel(level)
    return out_path


def export_key(keras_sha: str, config_sha: str | None, calibration: dict) -> str:
    """What decides an export and its calibration images: cached under it. Pure given the versions.
    (Not where Fashion-MNIST was read from: the loader checks its content's SHA-256.)"""
    from importlib import metadata
    versions = {}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    blob = json.dumps({"v": 1, "keras": keras_sha, "config": config_sha, "calibration":
                       {k: calibration[k] for k in ("size", "photos", "seed")}, "versions": versions},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def onnx_models(run_dir: Path, models_dir: Path | None, data_dir: str | None, work_dir: Path | None = None,
                say: Callable[[str], None] = print, fresh: bool = False) -> dict:
    """The ONNX float32 export (checked against Keras) and an int8 model per scheme.

    The export and its calibration images come from a TensorFlow child process
    and are cached in `work_dir` (default .cache/peers/<key>/); quantizing
    needs only ONNX Runtime and is redone every time.
    """
    keras_path = run_dir / "model.keras"
    if not keras_path.is_file():
        raise ModelError(f"{keras_path} not found; train a model first (make train) or pass --run_dir")
    keras_sha = sha256_file(keras_path)
    calibration = calibration_settings(keras_sha, models_dir)
    config_path = run_dir / "config.json"
    key = export_key(keras_sha, sha256_file(config_path) if config_path.is_file() else None, calibration)
    work_dir = Path(work_dir) if work_dir else CACHE / key
    work_dir.mkdir(parents=True, exist_ok=True)
    report_path = work_dir / "export.json"
    report = None
    if not fresh and report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            report = None
        if report and (report.get("key") != key or not (work_dir / "float32.onnx").is_file()):
            report = None
    if report is None:
        say(f"ONNX export of {keras_path} in a TensorFlow child process (cached in {work_dir})")
        cmd = [sys.executable, "-m", "tools.peers", "export", "--run_dir", str(run_dir), "--out", str(work_dir),
               "--key", key, "--calibration", json.dumps(calibration)]
        if data_dir:
            cmd += ["--data_dir", str(data_dir)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0 or not report_path.is_file():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise EdgeError(f"ONNX export failed (exit status {proc.returncode}): {tail}")
        report = json.loads(report_path.read_text())
    else:
        say(f"ONNX export: cached ({work_dir})")
    check = report["check"]
    if not check["ok"]:
        raise ModelError(f"the ONNX export differs from Keras by up to {check['max_abs_diff']:.2e} in a probability "
                         f"(tolerance {check['tolerance']:.0e}); nothing was timed")
    import numpy as np
    images = np.load(work_dir / "calibration.npy")
    paths = {"float32": work_dir / "float32.onnx"}
    for scheme in INT8_SCHEMES:
        say(f"  int8 {scheme}: onnxruntime.quantization.quantize_static on {len(images)} calibration images")
        paths[f"int8_{scheme}"] = quantize_int8(paths["float32"], work_dir / f"int8_{scheme}.onnx", images, scheme,
                                                work_dir)
    return {"report": report, "paths": paths, "work_dir": str(work_dir), "keras_sha256": keras_sha}


def export_child(args) -> int:
    """`python -m tools.peers export`: in this (TensorFlow) process, export, check against Keras
    on every test image, and save the calibration images. Writes OUT/export.json last."""
    import keras
    import numpy as np
    import onnxruntime as ort

    from edge_runtime import dataset
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(args.run_dir)
    calibration = json.loads(args.calibration)
    data = dataset.load(args.data_dir)
    model = keras.models.load_model(run_dir / "model.keras")
    export = export_onnx(model, out / "float32.onnx")
    keras_probs = model.predict(data.test_images[..., None].astype(np.float32), batch_size=512, verbose=0)
    session = ort.InferenceSession(str(out / "float32.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    onnx_probs = np.concatenate([session.run(None, {name: data.test_images[i:i + 500, ..., None].astype(np.float32)})[0]
                                 for i in range(0, len(data.test_images), 500)])
    check = compare_with_keras(keras_probs, onnx_probs)
    images = calibration_images(data, run_dir, calibration["size"], calibration["photos"], calibration["seed"])
    with atomic.atomic_path(out / "calibration.npy", keep_suffix=True) as tmp:
        np.save(tmp, images)
    from importlib import metadata
    import tensorflow as tf
    report = {"key": args.key, "keras_model": str(run_dir / "model.keras"), **export, "check": check,
              "keras_accuracy": float((keras_probs.argmax(1) == data.test_labels).mean()),
              "calibration": {**calibration, "images": int(len(images)),
                              "photos_used": int(len(images) - min(calibration["size"], len(images)))},
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                           "tf2onnx": metadata.version("tf2onnx"), "onnx": metadata.version("onnx"),
                           "onnxruntime": ort.__version__}}
    atomic.write_text(out / "export.json", json.dumps(report, indent=2) + "\n")
    print(f"exported: max |prob diff| vs Keras {check['max_abs_diff']:.2e} on {check['images']} test images")
    return 0


# -- running a model ----------------------------------------------------------------------------

def open_runner(runtime: str, path: Path, threads: int, batch: int = 256) -> Callable:
    """predict(uint8 images (N, 28, 28)) -> float32 probabilities (N, 10), through `runtime`."""
    import numpy as np
    path = Path(path)
    if runtime == "litert":
        from edge_runtime.classifier import Classifier
        return Classifier(path, num_threads=threads, batch_size=batch).predict
    if runtime == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # as LiteRT's num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        dtype = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}[spec.type]
        name = spec.name

        def predict(images):
            x = np.asarray(images)[..., None].astype(dtype)
            return np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
                                  ).astype(np.float32, copy=False)
        return predict
    if runtime == "opencv":
        import cv2
        cv2.setNumThreads(threads)  # process-wide: OpenCV has no per-network thread count
        net = cv2.dnn.readNet(str(path))
        nchw = path.suffix == ".tflite"  # OpenCV's TFLite importer takes NCHW blobs, its ONNX one the model's NHWC

        def predict(images):
            x = np.asarray(images).astype(np.float32)
            x = x[:, None] if nchw else x[..., None]
            out = []
            for i in range(len(x)):  # one image at a time: the .tflite graphs have a batch of 1
                net.setInput(x[i:i + 1])
                out.append(np.asarray(net.forward(), np.float32).reshape(-1))
            return np.stack(out)
        return predict
    raise ValueError(f"unknown runtime {runtime!r}")


def try_runner(peer: Peer, threads: int, image) -> tuple[Callable | None, str | None]:
    """(predict, None), or (None, why) when a peer's runtime refuses the model: loading it or
    running it once raised. LiteRT's own errors are not a peer's refusal and propagate."""
    import numpy as np
    if peer.runtime == "litert":
        predict = open_runner(peer.runtime, peer.path, threads)
        predict(image[None])
        return predict, None
    quiet = _quiet_opencv() if peer.runtime == "opencv" else None
    try:
        predict = open_runner(peer.runtime, peer.path, threads)
        probs = predict(image[None])
        if probs.shape != (1, 10) or not np.isfinite(probs).all():
            return None, f"ran but gave {probs.shape} output{'' if np.isfinite(probs).all() else ' with NaN'}"
        return predict, None
    except Exception as e:  # noqa: BLE001 - a refusal is a result to record, whatever the runtime raises
        return None, one_line(e)
    finally:
        if quiet:
            quiet()


def _quiet_opencv() -> Callable[[], None]:
    """Silence OpenCV's own error log (its importers print before raising); returns the undo."""
    from cv2.utils import logging as cvlog
    level = cvlog.getLogLevel()
    cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
    return lambda: cvlog.setLogLevel(level)


def interleaved_latency(calls: dict[str, Callable[[], object]], runs: int, warmup: int,
                        rounds: int = ROUNDS) -> dict[str, dict]:
    """Single-call latency of each callable: `warmup` untimed calls each, then `runs` timed calls
    each, taken in `rounds` turns so every callable sees the same stretches of machine load."""
    from edge_runtime.timing import summarize, time_calls
    for fn in calls.values():
        time_calls(fn, 1, warmup)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for size in chunk_sizes(runs, rounds):
        for name, fn in calls.items():
            samples[name] += time_calls(fn, size)
    return {name: summarize(s) for name, s in samples.items()}


# -- peak memory in a fresh process ----------------------------------------------------------------

PROBE_MARKER = "PEERS_MEMORY "


def memory_probe(runtime: str, path: str, threads: int, runs: int) -> dict:
    """In THIS process (a fresh one): import the runtime, load the model, run it `runs` times
    on one image; peak RSS after each stage."""
    from edge_runtime.memory import peak_rss_mb
    stages = {"python": peak_rss_mb()}
    import importlib

    import numpy as np
    importlib.import_module(RUNTIME_MODULES[runtime])
    stages["runtime_imported"] = peak_rss_mb()
    image = np.random.default_rng(7).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    predict = open_runner(runtime, Path(path), threads)
    stages["model_loaded"] = peak_rss_mb()
    for _ in range(max(1, runs)):
        predict(image)
    stages["ran"] = peak_rss_mb()
    return {"peak_rss_mb": stages["ran"], "stages_mb": stages, "runs": max(1, runs),
            "tensorflow_imported": "tensorflow" in sys.modules, "cv2_imported": "cv2" in sys.modules}


def measure_memory(peer: Peer, threads: int, runs: int, timeout: float = 300) -> dict:
    from edge_runtime.memory import child_result
    return child_result("tools.peers", ["probe", peer.runtime, peer.path, threads, runs], PROBE_MARKER,
                        peer.label, ROOT, timeout)


# -- the benchmark ----------------------------------------------------------------------------------

def peers_for(tflite: dict[str, Path], onnx: dict[str, Path]) -> list[Peer]:
    """Every runtime on every model file it is asked to run, the reference first. Pure."""
    peers = [Peer(f"litert_{v}", "litert", f"TFLite {v}", p) for v, p in tflite.items()]
    for v, p in onnx.items():
        model = "ONNX " + v.replace("int8_", "int8 ").replace("_", " ")
        peers.append(Peer(f"ort_{v}", "onnxruntime", model, p))
    for v, p in onnx.items():
        peers.append(Peer(f"opencv_onnx_{v}", "opencv", "ONNX " + v.replace("int8_", "int8 ").replace("_", " "), p))
    for v, p in tflite.items():
        peers.append(Peer(f"opencv_tflite_{v}", "opencv", f"TFLite {v}", p))
    return peers


def installed_mb(distribution: str) -> float | None:
    """Disk size of an installed distribution's files, MB; None if it isn't installed."""
    from importlib import metadata
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for f in files:
        try:
            total += f.locate().stat().st_size
        except OSError:
            pass
    return round(total / 2 ** 20, 1)


def versions() -> dict:
    from importlib import metadata
    out = {}
    for name in ("ai-edge-litert", "onnxruntime", "onnx", "tf2onnx", "opencv-python-headless", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_peers(run_dir: Path, threads: list[int], settings: BenchSettings, *, models_dir: Path = Path("models"),
              data_dir: str | None = None, work_dir: Path | None = None, fresh: bool = False,
              command: str = "python -m tools.peers", say: Callable[[str], None] = print) -> dict:
    """Measure every runtime on the same model, images and thread counts; the results dict.

    `settings` is the benchmark's (edge_runtime.bench.BenchSettings): its
    `runs`, `warmup`, `memory_runs`, `memory` and `quick` are used.
    """
    from edge_runtime import dataset
    from edge_runtime.deployed import model_filename
    from edge_runtime.metadata import read_metadata
    run_dir, models_dir = Path(run_dir), Path(models_dir)
    threads = list(threads)
    machine = rt.machine_info()
    say(f"machine: {rt.describe_machine(machine)}; load average {machine.get('load_average')}")
    tflite = {v: models_dir / model_filename(v) for v in ("int8", "float32")}
    if not tflite["int8"].is_file():
        raise ModelError(f"{tflite['int8']} not found; run `make convert` or pass --models_dir")
    tflite = {v: p for v, p in tflite.items() if p.is_file()}
    keras_path = run_dir / "model.keras"
    if not keras_path.is_file():
        raise ModelError(f"{keras_path} not found; train a model first (make train) or pass --run_dir")
    keras_sha = sha256_file(keras_path)
    for v, p in tflite.items():
        converted_from = (read_metadata(p).get("training") or {}).get("keras_sha256")
        if converted_from != keras_sha:
            raise ModelError(f"{p} was not converted from {keras_path} (its metadata names another Keras file); "
                             "compare the same model: pass the --run_dir it came from, or `make convert` this run")

    onnx = onnx_models(run_dir, models_dir, data_dir, work_dir, say, fresh)
    data = dataset.load(data_dir)
    image = rt.model_input_for_timing()
    peers = peers_for(tflite, onnx["paths"])
    rows: dict[str, dict] = {}
    predictions = {}
    opencv_threads = None
    try:
        import cv2
        opencv_threads = cv2.getNumThreads()
    except ImportError:
        pass
    try:
        for i, t in enumerate(threads):
            runners = {}
            for peer in peers:
                if i and rows[peer.name]["status"] != "ok":
                    continue
                predict, why = try_runner(peer, t, image)
                if i == 0:
                    rows[peer.name] = {"name": peer.name, "runtime": peer.runtime, "model": peer.model,
                                       "label": peer.label, "path": str(peer.path),
                                       "size_bytes": peer.path.stat().st_size,
                                       "status": "ok" if predict else "refused", "reason": why, "latency": {}}
                    if predict is None:
                        say(f"  {peer.label}: refused: {why}")
                        continue
                    say(f"  {peer.label}: top-1 on {len(data.test_images):,} test images")
                    if peer.runtime == "opencv":
                        import cv2
                        cv2.setNumThreads(max(threads))
                    probs = predict(data.test_images)
                    predictions[peer.name] = probs.argmax(1)
                    rows[peer.name]["accuracy"] = float((predictions[peer.name] == data.test_labels).mean())
                    if peer.runtime == "opencv":
                        cv2.setNumThreads(t)
                if predict is None:
                    rows[peer.name].update(status="failed", reason=f"at {t} threads: {why}")
                    continue
                runners[peer.name] = predict
            if any(p.runtime == "opencv" for p in peers):
                import cv2
                cv2.setNumThreads(t)
            say(f"{t} thread{'s' if t != 1 else ''}: {len(runners)} runtimes x {settings.runs} single-image calls, "
                f"{ROUNDS} interleaved rounds")
            stats = interleaved_latency({n: (lambda p=p: p(image[None])) for n, p in runners.items()},
                                        settings.runs, settings.warmup)
            for name, s in stats.items():
                rows[name]["latency"][str(t)] = s
    finally:
        if opencv_threads is not None:
            import cv2
            cv2.setNumThreads(opencv_threads)
    reference = predictions.get(REFERENCE)
    for name, predicted in predictions.items():
        rows[name]["agreement_with_reference"] = float((predicted == reference).mean())
    if settings.memory:
        for peer in peers:
            if rows[peer.name]["status"] == "ok":
                say(f"  {peer.label}: peak memory of a fresh process")
                rows[peer.name]["memory"] = measure_memory(peer, threads=1, runs=settings.memory_runs)
    rows_list = list(rows.values())
    add_ratios(rows_list, threads)
    try:
        load_end = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load_end = None
    report = onnx["report"]
    return {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
        "quick": bool(settings.quick),
        "config": {"run_dir": str(run_dir), "models_dir": str(models_dir), "threads": threads, "runs": settings.runs,
                   "warmup": settings.warmup, "rounds": ROUNDS, "memory_runs": settings.memory_runs,
                   "work_dir": onnx["work_dir"], "data_dir": data_dir},
        "machine": machine, "load_average_end": load_end, "versions": {**versions(), **report.get("versions", {})},
        "model": {"keras": str(keras_path), "keras_sha256": keras_sha, "keras_accuracy": report.get("keras_accuracy"),
                  "name": (read_metadata(tflite["int8"]).get("training") or {}).get("config", {}).get("model")},
        "export": {k: report[k] for k in ("exporter", "opset", "ops", "check")},
        "calibration": report["calibration"],
        "int8_schemes": {k: {"format": f, "activations": a, "weights": "QInt8 per channel", "calibration": "MinMax"}
                         for k, (f, a) in INT8_SCHEMES.items()},
        "reference": REFERENCE, "rows": rows_list,
        "int8_formats": int8_formats(rows_list, threads),
        "verdict": verdict(rows_list, threads),
        "installed_mb": {runtime: {"distribution": d, "mb": installed_mb(d)} for runtime, d in RUNTIME_DISTRIBUTIONS.items()},
    }


# -- output ------------------------------------------------------------------------------------------

# What adopting each runtime on the device would cost besides its speed (wheel availability
# checked with `pip download --platform ... --only-binary=:all:` against PyPI; see docs/benchmarks.md).
ADOPTION = {
    "onnxruntime": ("a new device dependency (onnxruntime, {mb} MB installed here, against {litert_mb} MB for "
                    "ai-edge-litert); PyPI has cp311 wheels for aarch64 (64-bit Pi OS) but none for armv7l "
                    "(32-bit Pi OS); and a second model format: the converter would export and quantize ONNX "
                    "(tf2onnx, onnxruntime.quantization) and gate that model too, and the metadata now embedded "
                    "in the .tflite would need a home in the .onnx"),
    "opencv": ("no new dependency (OpenCV is already the runtime's), but only the float models load: "
               "its TFLite importer refuses the int8 model and its int8 ONNX path is less accurate"),
}


def _us(v: float | None) -> str:
    return rt.fmt_us(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def markdown(results: dict) -> str:
    """peers.md: machine and load, the export check, accuracy/size/memory, speed, refusals, verdict. Pure."""
    rows, threads = results["rows"], results["config"]["threads"]
    lines = rt.results_header("Peers: the same model through other runtimes", results,
                              "the rounds are interleaved, so load falls on every runtime alike")
    model, export, cal = results["model"], results["export"], results["calibration"]
    v = results["versions"]
    lines.append(f"Model: `{model.get('name')}`, `{model['keras']}` (Keras top-1 "
                 f"{_pct(model.get('keras_accuracy'))}), `{results['config']['models_dir']}`  ")
    lines.append("Versions: " + ", ".join(f"{k} {v[k]}" for k in ("ai-edge-litert", "onnxruntime", "onnx", "tf2onnx",
                                                                   "opencv-python-headless", "tensorflow", "keras")
                                           if v.get(k)))
    check = export["check"]
    lines += ["", "## How the models were made", "",
              f"- ONNX float32: {export['exporter']} (tf2onnx, opset {export['opset']}), Flatten as a constant "
              f"reshape as for TFLite. Checked against Keras on all {check['images']:,} test images before timing: "
              f"largest probability difference **{check['max_abs_diff']:.1e}** (tolerance {check['tolerance']:.0e}), "
              f"top-1 agreement {check['top1_agreement']:.2%}.",
              f"- ONNX int8: `onnxruntime.quantization.quantize_static` after `quant_pre_process`, weights int8 per "
              f"channel, MinMax calibration on the TFLite converter's calibration images: {cal['images']} "
              f"({cal['size']} stratified training images + {cal['photos_used']} training photos, seed {cal['seed']}; "
              f"never the test set). Schemes: "
              + "; ".join(f"`{k}` {s['format']} with {s['activations']} activations"
                          for k, s in results["int8_schemes"].items()) + ".",
              "- TFLite: the converter's files in the models directory, run through `edge_runtime.Classifier.predict` "
              "(the device's path); OpenCV DNN reads the same files with `cv2.dnn.readNet`.",
              "", "## Accuracy, size, memory", "",
              "| runtime · model | file size | top-1 (10,000 test images) | vs LiteRT int8 | same top-1 as LiteRT int8 "
              "| peak memory | vs LiteRT int8 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            continue
        vs = r.get("vs_reference") or {}
        mem = (r.get("memory") or {}).get("peak_rss_mb")
        pp = vs.get("accuracy_pp")
        lines.append(f"| {_row_label(r)} | {rt.fmt_bytes(r['size_bytes'])} | {_pct(r.get('accuracy'))} | "
                     f"{'-' if pp is None else f'{pp:+.2f} pp'} | {_pct(r.get('agreement_with_reference'))} | "
                     f"{'-' if mem is None else f'{mem:.0f} MB'} | {_x(vs.get('memory'))} |")
    lines += ["", f"## Speed: one image, {results['config']['runs']:,} calls after {results['config']['warmup']} "
                  f"warm-up, in {results['config']['rounds']} interleaved rounds", "",
              "| runtime · model | threads | median | p95 | vs LiteRT int8 (time) |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            continue
        for i, t in enumerate(threads):
            s = (r.get("latency") or {}).get(str(t))
            lines.append(f"| {_row_label(r) if i == 0 else ''} | {t} | {_us(s and s['median_us'])} | "
                         f"{_us(s and s['p95_us'])} | {_x((r.get('vs_reference') or {}).get(f'latency_{t}t'))} |")
    refused = [r for r in rows if r["status"] != "ok"]
    if refused:
        lines += ["", "## Refused (recorded, not run)", ""]
        lines += [f"- {r['label']}: {r['reason']}" for r in refused]
    vd = results["verdict"]
    lines += ["", "## Verdict", "",
              "Target: LiteRT int8 at least as fast as every peer measured, or the faster peer's figures and the plan.",
              "", f"**{vd['text']}**", ""]
    for t, p in vd.get("per_thread", {}).items():
        lines.append(f"- {t} thread{'s' if t != '1' else ''}: LiteRT int8 {_us(p['reference_us'])}; fastest peer "
                     f"{p['fastest_peer_label']} {_us(p['fastest_peer_us'])} ({_x(p['fastest_peer_vs_reference'])} "
                     "LiteRT int8's time)")
    fmt = results.get("int8_formats") or {}
    if fmt:
        lines.append("- ONNX Runtime int8, fastest scheme: " + "; ".join(
            f"{t}t `{f['fastest']}` ({f['format']}: " + ", ".join(f"{k} {_us(u)}" for k, u in f["medians_us"].items())
            + ")" for t, f in fmt.items()))
    sizes = results.get("installed_mb") or {}
    adoptable = [f for f in vd.get("faster", []) if f["as_accurate"]]
    for runtime in dict.fromkeys(f["runtime"] for f in adoptable):
        text = ADOPTION[runtime].format(mb=(sizes.get(runtime) or {}).get("mb"),
                                        litert_mb=(sizes.get("litert") or {}).get("mb"))
        lines.append(f"- Faster and as accurate: {RUNTIME_NAMES[runtime]}. Adopting it would cost {text}.")
    lines += ["", "## Notes", "",
              f"- Latency: wall time of one call on one 28x28 image (the synthetic camera frame, preprocessed), input "
              f"conversion included (uint8 to the model's input type) and output as float32 probabilities; median "
              f"and nearest-rank p95. Within {vd.get('same_within', SAME_WITHIN):.0%} of LiteRT int8 is a tie.",
              "- Threads: LiteRT `num_threads`; ONNX Runtime `intra_op_num_threads`, one inter-op thread, sequential "
              "execution, default spinning; OpenCV `cv2.setNumThreads` (process-wide).",
              "- Peak memory: VmHWM of a fresh process (`python -m tools.peers probe`) that imports the runtime, loads "
              "the model and runs one image "
              f"{results['config']['memory_runs']} times, one thread. Not the camera-frame process of `results.md`, "
              "so its LiteRT figure differs from that one.",
              f"- Top-1 \"as accurate\": within {vd.get('as_accurate_pp', AS_ACCURATE_PP)} pp of LiteRT int8.",
              "- Installed size on this machine: " + ", ".join(f"{d['distribution']} {d['mb']} MB" for d in sizes.values()
                                                               if d.get("mb") is not None) + ".", ""]
    return "\n".join(lines)


def _row_label(r: dict) -> str:
    label = r["label"]
    return f"**{label}** (reference)" if r["name"] == REFERENCE else label


def write_results(results: dict, out_dir: Path) -> tuple[Path, Path]:
    """benchmarks/peers.json and peers.md, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "peers.md", out_dir / "peers.json"
    atomic.write_text(md, markdown(results))
    atomic.write_text(js, json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    return js, md


def text_summary(results: dict) -> str:
    """A few lines for the terminal. Pure."""
    threads = results["config"]["threads"]
    out = []
    for r in results["rows"]:
        if r["status"] != "ok":
            out.append(f"{r['label']:42s} refused: {r['reason']}")
            continue
        lat = "  ".join(f"{t}t {_us(median_at(r, t)):>9s} ({_x((r.get('vs_reference') or {}).get(f'latency_{t}t'))})"
                        for t in threads)
        mem = (r.get("memory") or {}).get("peak_rss_mb")
        out.append(f"{r['label']:42s} top-1 {_pct(r.get('accuracy')):>7s}  {lat}  "
                   f"{'' if mem is None else f'{mem:.0f} MB'}")
    out.append(f"target: {results['verdict']['text']}")
    return "\n".join(out)


# -- command line ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.peers", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run_dir", default="runs/latest", help="training run whose model.keras is compared")
    p.add_argument("--models_dir", default="models", help="the converter's .tflite files of that run")
    p.add_argument("--out_dir", default="benchmarks", help="where peers.json and peers.md go")
    p.add_argument("--threads", type=rt.thread_list, default="1,2", help="thread counts, comma-separated")
    full, quick = rt.ITERATIONS["runs"]
    p.add_argument("--runs", type=count(1), default=None, help=f"timed single-image calls per runtime (default: {full}; {quick} with --quick)")
    full_w, quick_w = rt.ITERATIONS["warmup"]
    p.add_argument("--warmup", type=count(0), default=None, help=f"untimed calls first (default: {full_w}; {quick_w} with --quick)")
    full_m, quick_m = rt.ITERATIONS["memory_runs"]
    p.add_argument("--memory_runs", type=count(1), default=None,
                   help=f"images the memory-probe process runs (default: {full_m}; {quick_m} with --quick)")
    p.add_argument("--no_memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--quick", action="store_true", help="a handful of iterations: checks that everything runs")
    p.add_argument("--work_dir", default=None, help="where the ONNX models go (default: .cache/peers/<key>/)")
    p.add_argument("--fresh", action="store_true", help="export again even when a cached export matches")
    p.add_argument("--data_dir", default=None, help="Fashion-MNIST directory (default: the loader's search)")
    return p


def settings_from(args) -> BenchSettings:
    def pick(name):
        given = getattr(args, name)
        return given if given is not None else rt.ITERATIONS[name][1 if args.quick else 0]
    return BenchSettings(threads=tuple(args.threads), runs=pick("runs"), warmup=pick("warmup"),
                         memory_runs=pick("memory_runs"), memory=not args.no_memory, quick=args.quick)


def models_command(argv: list[str]) -> int:
    """`python -m tools.peers models --out DIR (--run_dir R | --tflite M)`: write float32.onnx and
    the int8 models into DIR (the emulated Pi check runs them)."""
    import shutil

    from edge_runtime.metadata import read_metadata
    p = argparse.ArgumentParser(prog="python -m tools.peers models", description=models_command.__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--run_dir", default=None, help="the training run (default: runs/<the run named in --tflite's metadata>)")
    p.add_argument("--tflite", default=None, help="a converted model: its Keras file must be the run's")
    p.add_argument("--models_dir", default="models")
    p.add_argument("--data_dir", default=None)
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.tflite:
        training = read_metadata(Path(args.tflite)).get("training") or {}
        if run_dir is None:
            if not training.get("run"):
                raise UsageError(f"{args.tflite}: its metadata names no training run; pass --run_dir")
            run_dir = ROOT / "runs" / training["run"]
        keras = run_dir / "model.keras"
        if not keras.is_file():
            raise ModelError(f"{keras} not found: {args.tflite} was converted from run {training.get('run')!r}; "
                             "pass --run_dir")
        if sha256_file(keras) != training.get("keras_sha256"):
            raise ModelError(f"{args.tflite} was not converted from {keras} (another Keras file); pass --run_dir")
    if run_dir is None:
        raise UsageError("pass --run_dir or --tflite")
    onnx = onnx_models(run_dir, Path(args.models_dir), args.data_dir, say=lambda s: print(s, file=sys.stderr))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in onnx["paths"].items():
        shutil.copyfile(path, out / f"{name}.onnx")
    atomic.write_text(out / "export.json", json.dumps(onnx["report"], indent=2) + "\n")
    print(f"wrote {', '.join(sorted(f'{n}.onnx' for n in onnx['paths']))} to {out}")
    return 0


@process.command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["probe"]:  # the memory child: python -m tools.peers probe RUNTIME MODEL THREADS RUNS
        runtime, model, threads, runs = argv[1:5]
        print(PROBE_MARKER + json.dumps(memory_probe(runtime, model, int(threads), int(runs))), flush=True)
        return 0
    if argv[:1] == ["export"]:  # the TensorFlow child of onnx_models
        p = argparse.ArgumentParser(prog="python -m tools.peers export")
        for flag in ("--run_dir", "--out", "--key", "--calibration"):
            p.add_argument(flag, required=True)
        p.add_argument("--data_dir", default=None)
        return export_child(p.parse_args(argv[1:]))
    if argv[:1] == ["models"]:
        return models_command(argv[1:])
    args = build_parser().parse_args(argv)
    command = f"python -m tools.peers {shlex.join(argv)}".strip()
    results = run_peers(Path(args.run_dir), args.threads, settings_from(args), models_dir=Path(args.models_dir),
                        data_dir=args.data_dir, work_dir=Path(args.work_dir) if args.work_dir else None,
                        fresh=args.fresh, command=command, say=lambda s: print(s, flush=True))
    js, md = write_results(results, Path(args.out_dir))
    print()
    print(text_summary(results))
    print(f"\nwrote {js}, {md}")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
