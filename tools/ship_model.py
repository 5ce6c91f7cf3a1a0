"""`make ship-model` (python -m tools.ship_model): ship a converted int8 model inside edge_runtime.

    python -m tools.ship_model                      # models/ as `make convert` left it
    python -m tools.ship_model --models_dir other/  # another conversion's output directory

The runtime falls back to the model in edge_runtime/shipped/ when there is no
models/ (a fresh clone, `pip install ./edge_runtime`). This command refreshes
it from a finished conversion, and refuses unless:

- `conversion_report.json` beside the model says the gate passed, and its
  int8 row measured exactly this FlatBuffer (SHA-256);
- the model loads with the runtime's interpreter and carries its metadata;
- run again on the 10,000 Fashion-MNIST test images through
  `Classifier.predict`, it scores the report's int8 accuracy within
  TOLERANCE_PP.

Then it writes, each file atomically, into edge_runtime/shipped/: the model
(metadata and labels embedded), its sidecar JSON, and `gate.json`: float and
int8 test accuracy, size, SHA-256, the unknown threshold, the gate, and the
training run it came from. `tests/test_shipped_model.py` checks the shipped
files against gate.json and `python -m tools.readme_figures` the README
against gate.json and the benchmark results; run both after shipping.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from edge_runtime import atomic, process
from edge_runtime.argtypes import HelpFormatter
from edge_runtime.deployed import MODEL_FILENAME, MODELS_DIR, SHIPPED_DIR, SHIPPED_GATE, model_filename
from edge_runtime.errors import ModelError, UsageError
from edge_runtime.metadata import flatbuffer_part, read_metadata, sha256, sidecar_path

SCHEMA = "fashion-edge-shipped/1"
REPORT = "conversion_report.json"
# The shipped model, run again here or on another machine, may move a handful of the
# 10,000 test images: other interpreter builds round some int8 kernels differently.
# 0.05 pp is 5 images; the same interpreter on the same CPU gives the identical figure.
TOLERANCE_PP = 0.05


def accuracy_on_test_set(model: Path, data_dir: str | None = None) -> tuple[float, str]:
    """(top-1 on the Fashion-MNIST test set through Classifier.predict, the interpreter that ran it)."""
    from edge_runtime import dataset
    from edge_runtime.classifier import Classifier
    data = dataset.load(data_dir)
    clf = Classifier(model, num_threads=1, batch_size=256)
    accuracy = float((clf.predict(data.test_images).argmax(1) == data.test_labels).mean())
    return accuracy, f"{clf.backend.package} {clf.backend.version}"


def read_run(run_dir: Path) -> dict:
    """What the shipped model records of its training run (metrics.json and config.json, when present)."""
    def load(name: str) -> dict:
        try:
            return json.loads((run_dir / name).read_text())
        except (OSError, ValueError):
            return {}
    metrics, config = load("metrics.json"), load("config.json")
    seconds = metrics.get("train_seconds")
    return {"name": run_dir.name, "model": config.get("model") or metrics.get("model"),
            "epochs": config.get("epochs"), "epochs_run": metrics.get("epochs_run"),
            "train_minutes": round(seconds / 60, 1) if seconds is not None else None,
            "float_test_accuracy": metrics.get("test_accuracy"),
            "photos": bool(config.get("photo_dir") or config.get("photos")), "seed": config.get("seed")}


def gate_record(model: Path, report: dict, accuracy_now: float, interpreter: str, command: str) -> dict:
    """gate.json for `model`, or ModelError naming why it must not be shipped. Pure but for reading `model`."""
    data = model.read_bytes()
    flatbuffer_sha = sha256(flatbuffer_part(data))
    meta = read_metadata(model)
    rows = {r.get("variant"): r for r in report.get("variants", [])}
    int8, keras = rows.get("int8"), rows.get("keras")
    if not report.get("passed"):
        raise ModelError(f"the conversion report says the gate failed ({'; '.join(report.get('failures') or [])}); "
                         "only a model that passed is shipped")
    if int8 is None or keras is None:
        raise ModelError("the conversion report has no int8 or no keras row; convert again with `make convert`")
    if int8.get("flatbuffer_sha256") != flatbuffer_sha:
        raise ModelError(f"{model} is not the int8 model the conversion report measured (SHA-256 differs); "
                         "convert again with `make convert`")
    change_pp = (accuracy_now - int8["accuracy"]) * 100
    if abs(change_pp) > TOLERANCE_PP:
        raise ModelError(f"{model} scores {accuracy_now:.4%} on the test set now, the report says "
                         f"{int8['accuracy']:.4%} ({change_pp:+.2f} pp, more than {TOLERANCE_PP} pp)")
    keras_model = Path(report.get("keras_model", ""))
    config = report.get("config") or {}
    return {
        "schema": SCHEMA,
        "model": MODEL_FILENAME,
        "size_bytes": len(data),
        "sha256": sha256(data),
        "flatbuffer_sha256": flatbuffer_sha,
        "float_test_accuracy": keras["accuracy"],
        "int8_test_accuracy": int8["accuracy"],
        "int8_change_pp": int8.get("change_pp"),
        "test_images": report.get("test_images"),
        "unknown_threshold": meta.get("unknown_threshold"),
        "labels": meta["labels"],
        "gate": {"passed": True, "max_drop_pp": config.get("max_drop"), "max_class_drop_pp": config.get("max_class_drop"),
                 "worst_class": int8.get("worst_class"), "worst_class_change_pp": int8.get("worst_class_change_pp")},
        "checked_when_shipped": {"int8_test_accuracy": round(accuracy_now, 6), "interpreter": interpreter,
                                 "tolerance_pp": TOLERANCE_PP},
        "run": read_run(keras_model.parent) if keras_model.name else None,
        "conversion": {"created": report.get("created"), "keras_sha256": report.get("keras_sha256")},
        "shipped": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
    }


def ship(models_dir: Path, dest: Path = SHIPPED_DIR, data_dir: str | None = None,
         command: str = "python -m tools.ship_model") -> dict:
    """Check the conversion in `models_dir` and copy its int8 model into `dest`; returns gate.json's record."""
    model = models_dir / model_filename()
    if not model.is_file():
        raise ModelError(f"no model at {model}: run `make train convert` first, or pass --models_dir DIR")
    try:
        report = json.loads((models_dir / REPORT).read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{models_dir / REPORT}: not readable ({e}); the model must come from a finished "
                         "`make convert`") from e
    accuracy_now, interpreter = accuracy_on_test_set(model, data_dir)
    record = gate_record(model, report, accuracy_now, interpreter, command)
    dest.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(dest / MODEL_FILENAME, model.read_bytes())
    sidecar = sidecar_path(model)
    sidecar_text = sidecar.read_text() if sidecar.is_file() else json.dumps(read_metadata(model), indent=2)
    atomic.write_text(sidecar_path(dest / MODEL_FILENAME), sidecar_text)
    atomic.write_text(dest / SHIPPED_GATE.name, json.dumps(record, indent=2) + "\n")
    return record


@process.command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m tools.ship_model", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--models_dir", type=Path, default=Path(MODELS_DIR),
                        help="a finished conversion: the int8 model and conversion_report.json")
    parser.add_argument("--dest", type=Path, default=SHIPPED_DIR, help="the package data folder to write")
    parser.add_argument("--data_dir", default=None,
                        help="Fashion-MNIST directory (default: $FASHION_MNIST_DIR, then the usual places)")
    args = parser.parse_args(argv)
    if args.dest.exists() and not args.dest.is_dir():
        raise UsageError(f"--dest {args.dest}: not a directory")
    record = ship(args.models_dir, args.dest, args.data_dir, f"python -m tools.ship_model {shlex.join(argv)}".strip())
    run = record.get("run") or {}
    print(f"shipped {args.dest / MODEL_FILENAME}: {record['size_bytes'] / 1024:.1f} KB, int8 "
          f"{record['int8_test_accuracy']:.2%} (float {record['float_test_accuracy']:.2%}, checked now: "
          f"{record['checked_when_shipped']['int8_test_accuracy']:.2%}), unknown threshold "
          f"{record['unknown_threshold']}, from run {run.get('name')}\n"
          "next: `make bench real-photos` for the figures that depend on the model, then "
          "`python -m tools.readme_figures` says which README rows to update")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
