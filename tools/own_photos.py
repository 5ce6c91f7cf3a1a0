"""python -m tools.own_photos: what a user's own photos buy, measured on the real-photo set.

For 5 and for 10 photos per class, taken (seeded) from ../shared/real-photos
as if the user had photographed them: put them in class folders, fine-tune
the finished run from its weights with `--photos` (a few epochs, a slice of
Fashion-MNIST, the project's photo set as in training), and compare the base
and the fine-tuned Keras models on the rest of the set, photos neither model
saw. This split is the one use of the real-photo set in training, and it
stays here: nothing else trains or tunes on it.

Writes benchmarks/real_photos/own_photos.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_runtime import atomic, process
from edge_runtime.argtypes import count, probability
from edge_runtime.errors import UsageError
from tools.real_photos import DEFAULT_PHOTOS, OOD, model_inputs, read_labels

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_photos"


def pick_own(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` in-class photos of every class that has more than that
    (the rest of the class stays for evaluation). Pure given the seed."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
              for c in np.unique(labels) if c != OOD and (labels == c).sum() > per_class]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def figures(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Top-1 of the in-class photos and the shares called unknown at `threshold`. Pure."""
    known = labels != OOD
    top = probabilities.max(1)
    return {"in_class": int(known.sum()), "ood": int((~known).sum()),
            "top1": round(float((probabilities[known].argmax(1) == labels[known]).mean()), 4),
            "in_class_unknown": round(float((top[known] < threshold).mean()), 4),
            "ood_unknown": round(float((top[~known] < threshold).mean()), 4) if (~known).any() else None}


def markdown(report: dict) -> str:
    lines = [f"# A user's own photos: fine-tuning {report['run']}", "",
             f"Own photos taken from {report['photos_dir']} (seed {report['seed']}); each row is evaluated "
             f"on the photos not taken. Fine-tune: {report['fine_tune']}. Keras float models; "
             f"`unknown`: top score below {report['threshold']}.", "",
             "| own photos per class | evaluated on | base top-1 | fine-tuned top-1 | gain | "
             "in-class unknown (base → tuned) | OOD unknown (base → tuned) | fine-tune time |",
             "|---:|---|---:|---:|---:|---|---|---:|"]
    for r in report["rows"]:
        b, t = r["base"], r["tuned"]
        lines.append(f"| {r['per_class']} ({r['own_photos']} photos) | {b['in_class']} + {b['ood']} OOD | "
                     f"{b['top1']:.1%} | {t['top1']:.1%} | {(t['top1'] - b['top1']) * 100:+.1f} pp | "
                     f"{b['in_class_unknown']:.1%} → {t['in_class_unknown']:.1%} | "
                     f"{b['ood_unknown']:.1%} → {t['ood_unknown']:.1%} | {r['seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def deployed_threshold() -> float:
    """The deployed model's calibrated `unknown` threshold, else the runtime's default."""
    from edge_runtime.classifier import DEFAULT_THRESHOLD
    from edge_runtime.deployed import default_model_path
    from edge_runtime.errors import ModelError
    from edge_runtime.metadata import read_metadata
    try:
        return float(read_metadata(default_model_path()).get("unknown_threshold", DEFAULT_THRESHOLD))
    except ModelError:
        return DEFAULT_THRESHOLD


@process.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.own_photos", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/latest"), help="the finished run to fine-tune")
    parser.add_argument("--photos_dir", type=Path, default=DEFAULT_PHOTOS, help="the labelled real-photo set")
    parser.add_argument("--per_class", default="5,10", help="own photos per class, comma-separated")
    parser.add_argument("--epochs", type=count(1), default=4, help="fine-tuning epochs")
    parser.add_argument("--train_limit", type=count(1), default=12000, help="Fashion-MNIST images in the fine-tune")
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="peak learning rate of the fine-tune")
    parser.add_argument("--threshold", type=probability, default=None,
                        help="top score below this = unknown (default: the deployed model's calibrated one, else 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not (args.photos_dir / "labels.csv").is_file():
        raise UsageError(f"no labelled photos at {args.photos_dir}; pass --photos_dir DIR")
    from train.rundir import RunDir
    if not RunDir(args.run).model.is_file():
        raise UsageError(f"{args.run}: no finished run to fine-tune; run make train first")
    sizes = [int(v) for v in args.per_class.split(",") if v.strip()]
    if args.threshold is None:
        args.threshold = deployed_threshold()

    from train.tensorflow_import import import_tensorflow
    import_tensorflow()
    import keras

    from edge_runtime.collect import class_folder
    from edge_runtime.contract import CLASS_NAMES, IMAGE_HEIGHT, IMAGE_WIDTH
    from edge_runtime.photo import photo_to_input
    from train import trainer
    from train.config import TrainConfig

    rows = read_labels(args.photos_dir)
    paths, labels = [p for p, _ in rows], np.array([label for _, label in rows])
    inputs = model_inputs(paths, photo_to_input, (IMAGE_HEIGHT, IMAGE_WIDTH))[..., None]
    base = keras.models.load_model(RunDir(args.run).model)
    base_probs = base.predict(inputs, verbose=0)
    base_config = TrainConfig.from_dict(json.loads(RunDir(args.run).config.read_text()))
    tune = dataclasses.replace(base_config, init_from=str(args.run), epochs=args.epochs,
                               train_limit=args.train_limit, learning_rate=args.learning_rate,
                               warmup_epochs=0.0, patience=args.epochs, seed=args.seed)
    report = {"run": str(args.run), "photos_dir": str(args.photos_dir), "seed": args.seed,
              "threshold": args.threshold, "rows": [],
              "fine_tune": f"--init_from {args.run} --photos DIR --epochs {args.epochs} --train_limit "
                           f"{args.train_limit} --learning_rate {args.learning_rate} --warmup_epochs 0"}
    with tempfile.TemporaryDirectory(prefix="own-photos-") as tmp:
        for per_class in sizes:
            own = pick_own(labels, per_class, args.seed)
            rest = np.setdiff1d(np.arange(len(labels)), own)
            folder = Path(tmp) / f"own-{per_class}"
            for i in own:
                target = folder / class_folder(CLASS_NAMES[labels[i]]) / paths[i].name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(paths[i], target)
            t = time.time()
            config = dataclasses.replace(tune, photos=str(folder), out_dir=str(Path(tmp) / "runs"),
                                         name=f"own-{per_class}")
            tuned_dir = trainer.run(config, make_reports=False, publish=False)
            seconds = time.time() - t
            tuned_probs = keras.models.load_model(RunDir(tuned_dir).model).predict(inputs, verbose=0)
            report["rows"].append({"per_class": per_class, "own_photos": int(len(own)), "seconds": round(seconds, 1),
                                   "base": figures(base_probs[rest], labels[rest], args.threshold),
                                   "tuned": figures(tuned_probs[rest], labels[rest], args.threshold)})
            print(json.dumps(report["rows"][-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "own_photos.json", json.dumps(report, indent=2) + "\n")
    atomic.write_text(args.out / "own_photos.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    process.exit_with(main())
