"""The conversion run: export every variant, check each against Keras on the
whole test set, and deploy the int8 model only if it passed the gate.

Everything is first written to a hidden staging directory inside the output
directory and evaluated from there; only a passing run moves its files into
place (one atomic rename each, the deployed int8 model last), so a failed or
killed conversion never touches the deployed model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime import dataset, metadata
from edge_runtime.metadata import sha256
from edge_runtime.classifier import DEFAULT_THRESHOLD, Classifier
from edge_runtime.contract import CLASS_NAMES, CONTRACT
from edge_runtime.deployed import DEPLOYED_VARIANT, MODELS_DIR, VARIANTS, model_filename
from edge_runtime.errors import ModelError
from train.rundir import LATEST, RunDir

from . import check, export, graph
from .diagnose import DIAGNOSIS, diagnose_gate, float_layer_cost
from .errors import GateError

REPORT = "conversion_report"  # .json and .md beside the models


@dataclass
class ConvertConfig:
    run_dir: str = field(default=f"runs/{LATEST}", metadata={"help": "training run to convert (its model.keras)"})
    out_dir: str = field(default=MODELS_DIR, metadata={"help": "where the models and the report go"})
    variants: str = field(default=",".join(VARIANTS), metadata={"help": "comma-separated; int8 is always included"})
    calibration_size: int = field(default=500, metadata={"help": "training images for int8 calibration (class-stratified)"})
    max_drop: float = field(default=0.5, metadata={"help": "gate: largest allowed int8 top-1 drop vs Keras, percentage points"})
    max_class_drop: float = field(default=2.0, metadata={"help": "gate: largest allowed drop for any one class, percentage points"})
    photo_calibration: int = field(default=100, metadata={"help": "training photos added to the int8 calibration images (runs trained on photos)"})
    latency_runs: int = field(default=200, metadata={"help": "timed single-image runs per variant"})
    float_layers: str = field(default="", metadata={"help": "comma-separated layer names (or TFLite op types such as MUL) kept in float inside the int8 model, as the gate's diagnosis suggests; costs size and latency"})
    seed: int = 0
    data_dir: str | None = field(default=None, metadata={"help": "Fashion-MNIST directory (default: $FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist, ~/.keras/datasets/fashion-mnist)"})

    def variant_list(self) -> list[str]:
        chosen = [v.strip() for v in self.variants.split(",") if v.strip()]
        for v in chosen:
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
        return [v for v in VARIANTS if v in chosen or v == DEPLOYED_VARIANT]

    def float_layer_list(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.float_layers.split(",") if name.strip())


def _versions() -> dict:
    from edge_runtime.interpreter import find_interpreter
    from train.trainer import library_versions
    choice = find_interpreter()
    return {**library_versions(), choice.package: choice.version}


def build_metadata(variant: str, flatbuffer: bytes, run_dir: Path, class_names: list[str]) -> dict:
    model_in, model_outs = export.io_spec(flatbuffer)
    run = RunDir(run_dir)
    training = {"run": run.name}
    if run.config.exists():
        training["config"] = json.loads(run.config.read_text())
        training["config_sha256"] = sha256(run.config.read_bytes())
    if run.metrics.exists():
        m = json.loads(run.metrics.read_text())
        training["keras_test_accuracy"] = m.get("test_accuracy")
        training["parameters"] = m.get("parameters")
        training["macs_per_image"] = m.get("macs_per_image")
    training["keras_sha256"] = sha256(run.model.read_bytes())
    return {
        "format": metadata.FORMAT,
        "variant": variant,
        "labels": list(class_names),
        "input": {**model_in, "pixels": "0..255, garment bright on black"},
        "output": {**model_outs[0], "kind": "probabilities"},
        **({"embedding": {**model_outs[1], "output": 1, "kind": "embedding",
                          "layer": f"the input of `{graph.EMBEDDING_LAYER_INPUT}`"}} if len(model_outs) > 1 else {}),
        "preprocessing": {"contract": CONTRACT, "photo": "edge_runtime.photo.photo_to_input"},
        "flatbuffer_sha256": sha256(flatbuffer),
        "training": training,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run(config: ConvertConfig, calibration: np.ndarray | None = None) -> dict:
    """Convert, check, gate, deploy. Returns the report; raises GateError when int8 fails.

    `calibration` overrides the stratified training sample (tests pass
    deliberately bad calibration to prove the gate works).
    """
    import keras

    from train.reports import confusion_matrix
    from train.trainer import classification_metrics

    run_dir = Path(config.run_dir)
    keras_path = RunDir(run_dir).model
    if not keras_path.is_file():
        raise ModelError(f"{keras_path} not found; train a model first (make train)")
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out_dir)
    staging = out_dir / f".staging-{os.getpid()}"
    staging.mkdir()
    print(f"converting {keras_path.resolve()}\nconfig: {json.dumps(asdict(config))}", flush=True)
    try:
        data = dataset.load(config.data_dir)
        model = keras.models.load_model(keras_path)
        class_names = list(CLASS_NAMES)
        if calibration is None:
            calibration = export.stratified_sample(data.train_images, data.train_labels,
                                                   config.calibration_size, config.seed)
        photo = _run_photos(run_dir)
        calibration = with_photos(calibration, photo, config.photo_calibration, config.seed)
        labels = data.test_labels
        t = time.perf_counter()
        keras_probs = model.predict(data.test_images[..., None], batch_size=512, verbose=0)
        keras_seconds = time.perf_counter() - t
        reference = keras_probs.argmax(1)
        rows = [{"variant": "keras", "accuracy": float((reference == labels).mean()),
                 "size_bytes": keras_path.stat().st_size, "batch_seconds_10k": round(keras_seconds, 2)}]
        if photo is not None:
            keras_photo_probs = model.predict(photo.val_x[..., None], verbose=0)
            rows[0]["unknown_threshold"] = check.unknown_threshold(keras_photo_probs, photo.val_y, photo.val_source)
            rows[0]["photos"] = _photo_figures(keras_photo_probs, photo, rows[0]["unknown_threshold"] or DEFAULT_THRESHOLD)
        predictions = {}
        for variant in config.variant_list():
            t = time.perf_counter()
            is_int8 = variant == DEPLOYED_VARIANT
            flatbuffer = export.convert(model, variant, calibration if is_int8 else None,
                                        config.float_layer_list() if is_int8 else ())
            meta = build_metadata(variant, flatbuffer, run_dir, class_names)
            path = staging / model_filename(variant)
            path.write_bytes(metadata.embed(flatbuffer, meta))
            clf = Classifier(path, num_threads=1, batch_size=256)
            predicted = clf.predict(data.test_images).argmax(1)
            predictions[variant] = predicted
            figures = check.compare(labels, reference, predicted, class_names)
            row = {"variant": variant, **figures, "size_bytes": len(flatbuffer), "flatbuffer_sha256": sha256(flatbuffer),
                   "tensor_types": export.tensor_types(flatbuffer), "graph": graph_figures(flatbuffer),
                   "latency": check.single_image_latency_us(Classifier(path, num_threads=1), data.test_images[0],
                                                            runs=config.latency_runs),
                   "seconds": round(time.perf_counter() - t, 1)}
            if is_int8 and config.float_layer_list():
                row["float_layers"] = cost = float_layer_cost(model, calibration, config.float_layer_list(),
                                                              config.latency_runs)
                print(f"  int8 keeps {', '.join(cost['layers'])} in float: {cost['size_cost_bytes'] / 1024:+.1f} KB, "
                      f"{cost['latency_cost_us']:+.0f} µs against full int8", flush=True)
            if photo is not None:
                photo_probs = clf.predict(photo.val_x)
                row["unknown_threshold"] = check.unknown_threshold(photo_probs, photo.val_y, photo.val_source)
                row["photos"] = _photo_figures(photo_probs, photo, row["unknown_threshold"] or DEFAULT_THRESHOLD)
            rows.append(row)
            # final metadata: the figures this exact FlatBuffer earned
            meta["accuracy"] = {k: row[k] for k in ("accuracy", "change_pp", "agreement", "worst_class",
                                                    "worst_class_change_pp")}
            meta["accuracy"]["keras_accuracy"] = rows[0]["accuracy"]
            meta["accuracy"]["test_images"] = int(len(labels))
            meta["graph"] = row["graph"]
            if row.get("unknown_threshold") is not None:
                # Calibrated on held-out photos: the runtime's default --threshold for this model.
                meta["unknown_threshold"] = row["unknown_threshold"]
                meta["accuracy"]["photos"] = row["photos"]
            path.write_bytes(metadata.embed(flatbuffer, meta))
            metadata.sidecar_path(path).write_text(json.dumps(meta, indent=2))
            print(f"  {variant:8s} top-1 {row['accuracy']:.4f} ({row['change_pp']:+.2f} pp)  agreement "
                  f"{row['agreement']:.4f}  {row['size_bytes'] / 1024:7.1f} KB  "
                  f"{row['latency']['median_us']:7.1f} µs  [{row['seconds']}s]"
                  + "".join(f"  photos ({k}) {v['accuracy']:.4f}" for k, v in (row.get("photos") or {}).items()
                            if v["accuracy"] is not None), flush=True)

        int8 = next(r for r in rows if r["variant"] == DEPLOYED_VARIANT)
        failures = check.gate_failures(int8, check.Gate(config.max_drop, config.max_class_drop), class_names)
        report = {"config": asdict(config), "keras_model": str(keras_path.resolve()),
                  "keras_sha256": sha256(keras_path.read_bytes()),
                  "test_images": int(len(labels)), "passed": not failures, "failures": failures,
                  "variants": rows, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if failures:
            report["diagnosis"] = diagnose_gate(model, calibration, data, config.float_layer_list(), config.seed, staging)
        table = check.markdown_table(rows) + graph_table(rows) + check.photo_table(rows)
        (staging / f"{REPORT}.json").write_text(json.dumps(report, indent=2))
        (staging / f"{REPORT}.md").write_text(_markdown(report, table))
        cm_diff = (np.array(classification_metrics(labels, predictions[DEPLOYED_VARIANT])["confusion_matrix"])
                   - np.array(classification_metrics(labels, reference)["confusion_matrix"]))
        confusion_matrix(cm_diff, staging / "confusion_diff_int8.png",
                         "int8 minus Keras float: confusion matrix change (test set)", diverging=True)
        print("\n" + table, flush=True)

        if failures:
            print(report["diagnosis"].get("text") or report["diagnosis"]["error"], flush=True)
            rejected = out_dir / "rejected"
            shutil.rmtree(rejected, ignore_errors=True)
            os.replace(staging, rejected)
            raise GateError(f"int8 model not deployed: {'; '.join(failures)}. "
                            f"The deployed model is unchanged; the rejected one, its report and the per-layer "
                            f"diagnosis ({DIAGNOSIS}) are in {rejected}/")
        _deploy(staging, out_dir)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def with_photos(calibration: np.ndarray, photo, count: int, seed: int) -> np.ndarray:
    """The calibration images plus `count` of the run's training photos (seeded), for a run
    trained on photos: photos reach other activation ranges than Fashion-MNIST. Pure."""
    if photo is None or not count or not len(photo.train_x):
        return calibration
    pick = np.random.default_rng(seed).permutation(len(photo.train_x))[:count]
    return np.concatenate([calibration, photo.train_x[np.sort(pick)]])


def calibration_images(run_dir: Path, data, config: ConvertConfig = ConvertConfig()) -> np.ndarray:
    """The int8 calibration images the converter uses for `run_dir` under `config`: class-stratified
    training images plus training photos. Training data only, never the test set; other tools
    (the peers' quantizers) calibrate on exactly these."""
    calibration = export.stratified_sample(data.train_images, data.train_labels, config.calibration_size, config.seed)
    return with_photos(calibration, _run_photos(Path(run_dir)), config.photo_calibration, config.seed)


def graph_figures(flatbuffer: bytes) -> dict:
    """The operators in order and the XNNPACK partitions they make (convert/graph.py)."""
    ops = graph.op_names(flatbuffer)
    return {"ops": ops, "xnnpack_partitions": len(graph.partitions(ops)),
            "interpreter_ops": sorted(set(ops) - graph.XNNPACK_OPS)}


def graph_table(rows: list[dict]) -> str:
    """One line per variant: its operators, and how many XNNPACK partitions they make. Pure."""
    lines = ["", "Graphs (operators in order; the interpreter runs any op XNNPACK does not take, between partitions):", ""]
    for r in rows:
        g = r.get("graph")
        if g is None:  # the Keras reference row
            continue
        lines.append(f"- {r['variant']}: {', '.join(g['ops'])}: **{g['xnnpack_partitions']} XNNPACK partition"
                     f"{'s' if g['xnnpack_partitions'] != 1 else ''}**"
                     + (f" (interpreter: {', '.join(g['interpreter_ops'])})" if g["interpreter_ops"] else ""))
    return "\n".join(lines) + "\n"


def _run_photos(run_dir: Path):
    """The run's held-out photos as model inputs, as training made them, or None for a run
    trained on Fashion-MNIST alone."""
    from train.config import TrainConfig
    from train.trainer import training_photos
    config_path = RunDir(run_dir).config
    if not config_path.is_file():
        return None
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    if not (config.photo_dir or config.photos):
        return None
    return training_photos(config)


def _photo_figures(probabilities: np.ndarray, photo, threshold: float) -> dict:
    """Held-out photo figures per source at `threshold` (train/photos.evaluate)."""
    from train.photos import evaluate
    return {source: evaluate(probabilities[photo.val_source == source], photo.val_y[photo.val_source == source],
                             threshold) for source in photo.counts}


def _deploy(staging: Path, out_dir: Path) -> None:
    """Move each staged file into place with one atomic rename; the deployed model last,
    so its report and siblings are never older than it."""
    deployed = model_filename()
    names = sorted(p.name for p in staging.iterdir())
    names.sort(key=lambda n: (n == deployed, n))
    for name in names:
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(out_dir / "rejected", ignore_errors=True)


def _remove_stale_staging(out_dir: Path) -> None:
    """Staging directories of conversions that were killed (their process is gone)."""
    for old in out_dir.glob(".staging-*"):
        try:
            os.kill(int(old.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _markdown(report: dict, table: str) -> str:
    verdict = "passed" if report["passed"] else "FAILED: " + "; ".join(report["failures"])
    c = report["config"]
    return (f"# Conversion report\n\nModel: `{report['keras_model']}`  \n"
            f"Test images: {report['test_images']} (all of them), each variant run through "
            "`edge_runtime.Classifier.predict`, the code path the device uses.  \n"
            f"Gate (int8): top-1 drop ≤ {c['max_drop']} pp, any class drop ≤ {c['max_class_drop']} pp: **{verdict}**\n\n"
            f"{table}\n`dynamic` is dynamic-range quantization (int8 weights, float activations); "
            "only `int8` is full-integer.\nSizes are of the bare FlatBuffer (the deployed file adds a few KB of metadata).\n"
            "Latency: median of single-image `predict` calls on this machine, one thread.\n\n"
            "![int8 vs float confusion change](confusion_diff_int8.png)\n"
            + "".join(f"\nint8 keeps {', '.join(r['float_layers']['layers'])} in float: "
                      f"{r['float_layers']['size_cost_bytes'] / 1024:+.1f} KB, {r['float_layers']['latency_cost_us']:+.0f} µs "
                      "against full int8 (--float_layers)\n" for r in report["variants"] if r.get("float_layers"))
            + (f"\nWhy, layer by layer, and what to try: [{DIAGNOSIS}]({DIAGNOSIS})\n"
               if report.get("diagnosis", {}).get("text") else ""))
