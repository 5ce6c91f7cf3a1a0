"""How a model does on real photos: `python -m tools.real_photos --model M`.

Uses the labelled photo set in ../shared/real-photos (269 photos of 9
Fashion-MNIST classes, no bags, plus 47 out-of-distribution items: hats,
shorts, skirts; see its README.md). The set is outside this project and the
project never depends on it: without it that part is left out.

It also evaluates the model on every source dataset of data/photos that the
model's training held out (its config's `photo_holdout`, recorded in the
model's metadata): photos of a source the model never saw, which is what a
user's camera is. A gain that holds only on photos like the training photos
shows up as a gap between the two.

For each preprocessing (ours, `photo_to_input`, and with --naive the
baseline, `naive_photo_to_input`) it reports:
- top-1 accuracy on the in-distribution photos, overall and per class,
  and a confusion matrix;
- at --threshold: how many in-distribution photos are called `unknown`,
  and how many out-of-distribution photos are called `unknown` (good) versus
  a confident wrong class (bad).

Prints a Markdown summary and writes results.json, results.md and a montage
of the model inputs per preprocessing (inputs_<name>.png) into --out.
The set is small (13 to 75 photos per class): differences of a few points
are noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from edge_runtime import atomic, process
from edge_runtime.argtypes import HelpFormatter, probability
from edge_runtime.evaluation import confusion_counts

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "real-photos"
OOD = -1  # label_index of out-of-distribution photos in labels.csv


def read_labels(photos_dir: Path) -> list[tuple[Path, int]]:
    """(photo path, label index or -1) for every row of labels.csv."""
    with open(photos_dir / "labels.csv", newline="") as f:
        return [(photos_dir / row["file"], int(row["label_index"])) for row in csv.DictReader(f)]


def held_out_rows(photo_dir: Path, dataset: str, names: list[str]) -> list[tuple[Path, int]]:
    """(photo path, label index or OOD) for one source dataset of a labels.csv photo set."""
    from train.photos import NONE_INDEX, class_index, dataset_of, read_labels as read_photo_labels
    rows = []
    for row in read_photo_labels(photo_dir):
        if dataset_of(row, photo_dir) == dataset:
            index = class_index(row["label"], names)
            rows.append((photo_dir / row["file"], OOD if index == NONE_INDEX else index))
    return rows


def model_holdout(meta: dict) -> list[str]:
    """The source datasets the model's training held out, from its metadata. Pure."""
    config = (meta.get("training") or {}).get("config") or {}
    return [name.strip() for name in (config.get("photo_holdout") or "").split(",") if name.strip()]


def model_inputs(paths: list[Path], preprocess, size) -> np.ndarray:
    """(N, h, w) uint8 model inputs for the photos."""
    from edge_runtime.imageio import read_model_input  # exactly what `classify` feeds the model
    return np.stack([read_model_input(p, preprocess, size) for p in paths])


def evaluate(probabilities: np.ndarray, labels: np.ndarray, threshold: float, names: list[str],
             inputs: np.ndarray) -> dict:
    """All figures for one preprocessing from (N, C) probabilities, labels (-1 = OOD)
    and the (N, H, W) model inputs. Pure."""
    from edge_runtime.classifier import blank
    predicted, top = probabilities.argmax(1), probabilities.max(1)
    unknown = (top < threshold) | blank(inputs)  # as the runtime reports them
    known = labels != OOD
    truth, pred = labels[known], predicted[known]
    per_class = {}
    for c, name in enumerate(names):
        mask = truth == c
        if mask.any():
            per_class[name] = {"photos": int(mask.sum()), "accuracy": float((pred[mask] == c).mean())}
    ood = ~known
    confident = ~unknown
    return {
        "photos": int(known.sum()),
        "accuracy": float((pred == truth).mean()),
        "per_class": per_class,
        "confusion": confusion_counts(truth, pred, len(names)).tolist(),
        "in_distribution_unknown": float(unknown[known].mean()),
        "accuracy_of_confident": float((pred[confident[known]] == truth[confident[known]]).mean())
        if confident[known].any() else None,
        "confident_wrong": float((confident[known] & (predicted[known] != labels[known])).mean()),
        "ood_photos": int(ood.sum()),
        "ood_unknown": float(unknown[ood].mean()) if ood.any() else None,
        "ood_confident": float(confident[ood].mean()) if ood.any() else None,
        "ood_confident_as": {names[c]: int(n) for c, n in
                             zip(*np.unique(predicted[ood & confident], return_counts=True))},
    }


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def markdown(report: dict) -> str:
    """The summary tables. Pure."""
    names, results = report["labels"], report["results"]
    classes = [n for n in names if n in next(iter(results.values()))["per_class"]]
    lines = [f"# Real photos: {report['model']}", "",
             f"{report['in_distribution']} labelled photos of {len(classes)} classes and "
             f"{report['out_of_distribution']} out-of-distribution photos from {report['photos_dir']}; "
             f"threshold {report['threshold']}.", "",
             "| preprocessing | top-1 | top-1 when confident | confident wrong | in-dist. unknown "
             "| OOD unknown | OOD confident |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {pct(r['accuracy'])} | {pct(r['accuracy_of_confident'])} | "
                     f"{pct(r['confident_wrong'])} | {pct(r['in_distribution_unknown'])} | {pct(r['ood_unknown'])} | "
                     f"{pct(r['ood_confident'])} |")
    lines += ["", "top-1: all in-distribution photos, threshold ignored. Confident: top score >= threshold; "
              "otherwise the photo is reported as unknown. Confident wrong and in-dist. unknown are shares of the "
              "in-distribution photos; OOD columns are shares of the out-of-distribution photos."]
    lines += ["", "Top-1 accuracy per class:", "",
              "| class | photos | " + " | ".join(results) + " |",
              "|---|---:|" + "---:|" * len(results)]
    for c in classes:
        photos = next(iter(results.values()))["per_class"][c]["photos"]
        lines.append(f"| {c} | {photos} | " + " | ".join(pct(r["per_class"][c]["accuracy"]) for r in results.values())
                     + " |")
    for name, r in results.items():
        lines += ["", f"Confusion matrix, {name} (rows: true class, columns: predicted):", "",
                  "| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for c, row in enumerate(r["confusion"]):
            if names[c] in classes:
                lines.append(f"| {names[c]} | " + " | ".join(str(v) if v else "·" for v in row) + " |")
    return "\n".join(lines) + "\n"


def montage(inputs: np.ndarray, columns: int = 20, scale: int = 2) -> np.ndarray:
    """Model inputs side by side with a gray grid, for a person to look at. Pure."""
    n, h, w = inputs.shape
    rows = -(-n // columns)
    sheet = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1), 96, np.uint8)
    for i, image in enumerate(inputs):
        r, c = divmod(i, columns)
        sheet[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = image
    return np.kron(sheet, np.ones((scale, scale), np.uint8))


def golden_picks(labels: np.ndarray, predicted: np.ndarray, per_class: int = 2) -> list[int]:
    """Indices of the first `per_class` photos of each class the model gets right (in file
    order): photos a regression should not lose. Pure."""
    picks = []
    for c in sorted(set(labels.tolist()) - {OOD}):
        picks += [int(i) for i in np.flatnonzero((labels == c) & (predicted == c))[:per_class]]
    return picks


def write_golden(out: Path, model: Path, paths, labels, inputs, predicted, photos_dir: Path) -> None:
    """The golden file tests/test_real_photos.py checks: inputs made by photo_to_input and
    the labels the model (identified by its FlatBuffer's SHA-256) gave them."""
    from edge_runtime import metadata
    picks = golden_picks(labels, predicted)
    record = {"model_flatbuffer_sha256": metadata.sha256(metadata.flatbuffer_part(model.read_bytes())),
              "photos": [{"file": str(paths[i].relative_to(photos_dir)), "label": int(predicted[i])} for i in picks]}
    out.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out / "real_photos.npz", keep_suffix=True) as tmp:
        np.savez_compressed(tmp, inputs=inputs[picks])
    atomic.write_text(out / "real_photos.json", json.dumps(record, indent=1) + "\n")
    print(f"wrote {len(picks)} golden photos to {out}/real_photos.json and .npz", file=sys.stderr)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.real_photos", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a .tflite model with metadata")
    parser.add_argument("--photos_dir", type=Path, default=DEFAULT_PHOTOS, help="the labelled photo set")
    parser.add_argument("--threshold", type=probability, default=None,
                        help="top score below this = unknown (default: the model's calibrated threshold, else 0.5)")
    parser.add_argument("--naive", action="store_true", help="also evaluate the naive baseline preprocessing")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/real_photos"), help="output directory")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--datasets", default=None, metavar="NAMES",
                        help="comma-separated data/photos sources to evaluate (default: those the model's training "
                             "held out; a source the model trained on is marked so)")
    parser.add_argument("--write_golden", type=Path, metavar="DIR",
                        help="also write DIR/real_photos.{json,npz}: the regression test's golden inputs and labels")
    return parser.parse_args(argv)


def source_markdown(sources: dict) -> str:
    """The by-source tables: each evaluation set's figures, then top-1 per class. Pure."""
    if not sources:
        return ""
    lines = ["", "## By source", "",
             "Photo_to_input on every evaluation set: ../shared/real-photos, and each source the model's "
             "training held out (never seen in training or validation).", "",
             "| source | photos | top-1 | in-class unknown | OOD photos | OOD unknown |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in sources.items():
        lines.append(f"| {name} | {r['photos']} | {pct(r['accuracy'])} | {pct(r['in_distribution_unknown'])} | "
                     f"{r['ood_photos']} | {pct(r['ood_unknown'])} |")
    classes = list(dict.fromkeys(c for r in sources.values() for c in r["per_class"]))
    lines += ["", "Top-1 per class and source (photos in brackets):", "",
              "| class | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    for c in classes:
        cells = [f"{pct(r['per_class'][c]['accuracy'])} ({r['per_class'][c]['photos']})" if c in r["per_class"] else "–"
                 for r in sources.values()]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@process.command
def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2

    from edge_runtime import photo
    from edge_runtime.classifier import Classifier
    from train.photos import DEFAULT_PHOTO_DIR

    classifier = Classifier(args.model, num_threads=args.threads, threshold=args.threshold)
    holdout = model_holdout(classifier.metadata)
    chosen = holdout if args.datasets is None else [n.strip() for n in args.datasets.split(",") if n.strip()]
    have_real = (args.photos_dir / "labels.csv").is_file()
    if not have_real and not chosen:
        print(f"error: no labelled photos at {args.photos_dir} (expected labels.csv and photos/) and the model "
              "held out no source of data/photos; pass --photos_dir DIR", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results, sources = {}, {}
    if have_real:
        rows = read_labels(args.photos_dir)
        paths, labels = [p for p, _ in rows], np.array([label for _, label in rows])
        variants = {"photo_to_input": photo.photo_to_input}
        if args.naive:
            variants["naive"] = photo.naive_photo_to_input
        for name, preprocess in variants.items():
            inputs = model_inputs(paths, preprocess, classifier.input_size)
            cv2.imwrite(str(args.out / f"inputs_{name}.png"), montage(inputs))
            probabilities = classifier.predict(inputs)
            if name == "photo_to_input" and args.write_golden:
                write_golden(args.write_golden, args.model, paths, labels, inputs, probabilities.argmax(1),
                             args.photos_dir)
            results[name] = evaluate(probabilities, labels, classifier.threshold, classifier.labels, inputs)
            results[name]["predictions"] = [
                {"file": str(p.relative_to(args.photos_dir)), "label": int(t), "predicted": int(q.argmax()),
                 "score": round(float(q.max()), 4)} for p, t, q in zip(paths, labels, probabilities)]
        sources["real-photos"] = {k: v for k, v in results["photo_to_input"].items() if k != "predictions"}
    trained_on_photos = bool(((classifier.metadata.get("training") or {}).get("config") or {}).get("photo_dir"))
    for dataset in chosen:
        rows = held_out_rows(DEFAULT_PHOTO_DIR, dataset, classifier.labels)
        if not rows:
            continue
        inputs = model_inputs([p for p, _ in rows], photo.photo_to_input, classifier.input_size)
        seen = "held out" if dataset in holdout or not trained_on_photos else "trained on"
        sources[f"{dataset} ({seen})"] = evaluate(classifier.predict(inputs), np.array([t for _, t in rows]),
                                                    classifier.threshold, classifier.labels, inputs)

    report = {"model": str(args.model), "photos_dir": str(args.photos_dir), "threshold": classifier.threshold,
              "interpreter": f"{classifier.backend.package} {classifier.backend.version}",
              "labels": classifier.labels, "held_out_sources": holdout, "evaluated_sources": chosen,
              "sources": sources}
    if have_real:
        report.update(in_distribution=int((labels != OOD).sum()), out_of_distribution=int((labels == OOD).sum()),
                      results=results)
    text = (markdown(report) if have_real else f"# Real photos: {report['model']}\n") + source_markdown(sources)
    atomic.write_text(args.out / "results.json", json.dumps(report, indent=2) + "\n")
    atomic.write_text(args.out / "results.md", text)
    print(text)
    print(f"wrote {args.out}/results.json, results.md and inputs_*.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    process.exit_with(main())
