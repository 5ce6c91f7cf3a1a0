"""python -m tools.compare (make compare): the tutorials' story, measured.

Trains mlp -> cnn -> minivgg -> edge under the same rules (same data split,
augmentation, schedule and epoch/time budget), converts each to full int8
with the real converter, and writes one table and plot:
benchmarks/compare.{json,md,png}.

By default every model gets the same number of epochs. `--model_epochs
minivgg=20` gives one model its own epoch budget (its cosine schedule then
ends at epoch 20), which is how slower models get the same *wall-time*
budget instead: docs/design-log.md has the 20-minute comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from edge_runtime import atomic, process
from edge_runtime.deployed import DEPLOYED_VARIANT
from train.config import ZOO as MODELS, TrainConfig, add_config_arguments, config_from_args
from train.rundir import RunDir


def parse_model_epochs(text: str) -> dict[str, int]:
    """'minivgg=20,cnn=45' -> {'minivgg': 20, 'cnn': 45}; ValueError on anything else."""
    budgets = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        model, _, epochs = item.partition("=")
        if model not in MODELS or not epochs.isdigit() or int(epochs) < 1:
            raise ValueError(f"{item!r} is not MODEL=EPOCHS with MODEL one of {', '.join(MODELS)} and EPOCHS >= 1")
        budgets[model] = int(epochs)
    return budgets


def table(rows: list[dict]) -> str:
    out = ["| model | test top-1 (float) | int8 top-1 | parameters | MACs / image | int8 size | training time | epochs (run / budget) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['test_accuracy']:.2%} | {r['int8_accuracy']:.2%} | {r['parameters']:,} | "
                   f"{r['macs_per_image'] / 1e6:.2f}M | {r['int8_size_bytes'] / 1024:.0f} KB | "
                   f"{r['train_seconds'] / 60:.1f} min | {r['epochs_run']} / {r['config']['epochs']} |")
    return "\n".join(out) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    from train.reports import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in rows:
        ax.scatter(r["macs_per_image"] / 1e6, r["test_accuracy"] * 100, s=max(20, r["parameters"] / 4000))
        ax.annotate(f"{r['model']} ({r['parameters'] / 1e3:.0f}k params)", (r["macs_per_image"] / 1e6, r["test_accuracy"] * 100),
                    textcoords="offset points", xytext=(6, -4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image (millions, log scale)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("Fashion-MNIST: accuracy vs compute (marker area ~ parameters)")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


@process.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models (default: %(default)s)")
    parser.add_argument("--bench_dir", default="benchmarks", help="where compare.{json,md,png} go (default: %(default)s)")
    parser.add_argument("--model_epochs", default="", metavar="MODEL=EPOCHS,...",
                        help="per-model epoch budgets overriding --epochs, e.g. minivgg=20 (default: none)")
    parser.add_argument("--config", help="base config JSON shared by every model")
    parser.add_argument("--reuse", action="append", default=[], metavar="RUN_DIR",
                        help="use this finished run for its model instead of training it again; "
                             "its config must equal the comparison's (apart from name)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    base = config_from_args(args)
    try:
        model_epochs = parse_model_epochs(args.model_epochs)
    except ValueError as e:
        parser.error(f"--model_epochs: {e}")

    def config_for(model: str, name: str | None = None) -> TrainConfig:
        return dataclasses.replace(base, model=model, epochs=model_epochs.get(model, base.epochs), name=name)

    from train.tensorflow_import import import_tensorflow
    import_tensorflow()
    from convert.pipeline import ConvertConfig, run as convert_run
    from train import trainer
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench = Path(args.bench_dir)
    # Rows of models not re-run this time are kept, so one model can be re-run alone
    # (e.g. `make compare ARGS="--models edge"` after changing it); each row keeps its run's config.
    previous = json.loads((bench / "compare.json").read_text())["models"] if (bench / "compare.json").exists() else []
    rows = {r["model"]: r for r in previous}
    reuse = {}
    for run in map(Path, args.reuse):
        saved = TrainConfig.from_dict(json.loads(RunDir(run).config.read_text()))
        if not RunDir(run).metrics.exists() or dataclasses.replace(saved, name=None) != config_for(saved.model):
            parser.error(f"--reuse {run}: not a finished run with the same config as this comparison")
        reuse[saved.model] = (saved, run)
    for model in args.models.split(","):
        config = config_for(model, name=f"compare-{stamp}-{model}")
        if model in reuse:
            config, run_dir = reuse[model]
            print(f"{model}: reusing {run_dir} (same config)", flush=True)
        else:
            run_dir = trainer.run(config, publish=False)
        metrics = json.loads(RunDir(run_dir).metrics.read_text())
        # Wide gate: compare reports every model's int8 result, it does not deploy anything.
        report = convert_run(ConvertConfig(run_dir=str(run_dir), out_dir=str(run_dir / "tflite"), variants=DEPLOYED_VARIANT,
                                           data_dir=base.data_dir, max_drop=100, max_class_drop=100))
        int8 = next(r for r in report["variants"] if r["variant"] == DEPLOYED_VARIANT)
        rows[model] = {"model": model, "run": str(run_dir), "config": dataclasses.asdict(config),
                       **{k: metrics[k] for k in ("test_accuracy", "parameters", "macs_per_image", "train_seconds",
                                                  "epochs_run")},
                       "int8_accuracy": int8["accuracy"], "int8_size_bytes": int8["size_bytes"]}
        _write(bench, [rows[m] for m in sorted(rows, key=_zoo_order)], argv)
    rows = [rows[m] for m in sorted(rows, key=_zoo_order)]
    print("\n" + table(rows))
    return 0


def _zoo_order(model: str) -> int:
    return MODELS.index(model) if model in MODELS else len(MODELS)


def rules(rows: list[dict]) -> str:
    """The sentence above the table, read from the rows' own configs: rows kept
    from an earlier comparison may have been trained under other settings."""
    configs = [r["config"] for r in rows]
    # Settings added after a row was trained are missing from its config: compare the shared ones.
    shared = set.intersection(*(set(c) for c in configs)) if configs else set()
    differ = sorted({k for c in configs for k in shared
                     if k not in ("model", "name", "epochs") and c[k] != configs[0][k]})
    budgets = {c["model"]: c["epochs"] for c in configs}
    if len(set(budgets.values())) == 1:
        budget = f"{configs[0]['epochs']} epochs max for every model"
    else:
        budget = "epoch budgets " + ", ".join(f"{m} {e}" for m, e in budgets.items()) + \
            " (each model's cosine schedule ends at its own budget)"
    text = f"Same split, augmentation and schedule for every model; {budget}, patience {configs[0]['patience']}"
    if configs[0].get("max_minutes"):
        text += f", {configs[0]['max_minutes']} min max"
    text += ". Training times are wall time on this machine, with whatever else ran beside them."
    if differ:
        text += f" **The rows were trained with different {', '.join(differ)}**: see compare.json."
    return text


def _write(bench: Path, rows: list[dict], argv) -> None:
    """compare.{json,md,png}, rewritten after every model so an interrupted comparison keeps what it has."""
    created = time.strftime("%Y-%m-%d %H:%M")
    result = {"command": "make compare " + " ".join(argv or sys.argv[1:]), "created": created,
              "machine_cpus": os.cpu_count(), "models": rows}
    atomic.write_text(bench / "compare.json", json.dumps(result, indent=2))
    atomic.write_text(bench / "compare.md", f"# Model comparison ({created}, {os.cpu_count()} CPU cores)\n\n"
                      f"{rules(rows)}\n\n" + table(rows))
    plot(rows, bench / "compare.png")

if __name__ == "__main__":
    process.exit_with(main())
