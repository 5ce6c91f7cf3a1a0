"""python -m tools.preprocessing_ab --against REV: does a change to photo.py cost accuracy?

Today's `photo_to_input` against another version of it (edge_runtime/photo.py at
git revision REV, optionally with constants overridden by --set or functions
swapped by --swap, as in tools/frame_profile.py), photo by photo, on every photo
set each --model has not trained on:
- ../shared/real-photos (when present), which no model trains on;
- each data/photos source the model held out (its `photo_holdout`, or all of
  them for a model trained without photos), whole;
- each other data/photos source: the validation split training made of it
  (the same call and seed as train.photos), photos the model never fitted.

A paired comparison: `lost` photos the other version got right and today's gets
wrong, `won` the reverse (--candidate turns the roles round: the other version is
the change). The change in top-1 is within noise when
|won - lost| <= 2 * sqrt(won + lost) (McNemar's test, about 95%); with --reference
also the other version on each photo re-encoded as JPEG at quality 95, a change
no one can see, for the size of the flips an invisible change makes.

Writes --out/preprocessing_ab.{json,md}. A workstation tool: it reads
../shared/real-photos and data/photos, and evaluates each model with the runtime.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime import atomic, process
from edge_runtime.argtypes import HelpFormatter
from edge_runtime.errors import UsageError
from tools.frame_profile import parse_setting, photo_at, revision_name, swapped
from tools.real_photos import DEFAULT_PHOTOS, OOD, held_out_rows, model_holdout
from tools.real_photos import read_labels as read_real_labels

ROOT = Path(__file__).resolve().parents[1]


def mcnemar(lost: int, won: int) -> dict:
    """The paired verdict on a change: within noise unless |won - lost| > 2 sqrt(won + lost). Pure."""
    bound = 2.0 * math.sqrt(lost + won)
    net = won - lost
    verdict = "within noise" if abs(net) <= bound else ("better" if net > 0 else "worse")
    return {"lost": lost, "won": won, "net": net, "bound": round(bound, 1), "verdict": verdict}


def compare(labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict:
    """Paired figures of two prediction vectors on labelled photos (OOD = -1 counts for
    flips only). Pure."""
    known = labels != OOD
    right_before, right_after = (before == labels) & known, (after == labels) & known
    return {"photos": int(known.sum()), "all_photos": int(len(labels)),
            "top1_before": round(float(right_before[known].mean()), 4) if known.any() else None,
            "top1_after": round(float(right_after[known].mean()), 4) if known.any() else None,
            "correct_before": int(right_before.sum()), "correct_after": int(right_after.sum()),
            "flips": int((before != after).sum()),
            **mcnemar(int((right_before & ~right_after).sum()), int((~right_before & right_after).sum()))}


def evaluation_sets(classifier, photos_dir: Path, photo_dir: Path) -> dict[str, list[tuple[Path, int]]]:
    """{set name: [(photo path, label or OOD)]}: what `classifier`'s model has not trained on."""
    from train.photos import datasets, stratified_split
    sets = {}
    if (photos_dir / "labels.csv").is_file():
        sets["real-photos"] = read_real_labels(photos_dir)
    config = (classifier.metadata.get("training") or {}).get("config") or {}
    holdout = set(model_holdout(classifier.metadata))
    trained_on_photos = bool(config.get("photo_dir"))
    for dataset in datasets(photo_dir):
        rows = held_out_rows(photo_dir, dataset, classifier.labels)
        if not trained_on_photos or dataset in holdout:
            sets[f"{dataset} (held out)"] = rows
        else:
            _, val = stratified_split(np.array([label for _, label in rows]), config.get("photo_val_fraction", 0.15),
                                      config.get("seed", 0))
            sets[f"{dataset} (validation split)"] = [rows[i] for i in val]
    return sets


def jpeg95(preprocess):
    """`preprocess` of the photo re-encoded as JPEG at quality 95: an invisible change."""
    import cv2

    def run(image, size):
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        return preprocess(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), size)
    return run


def model_inputs(paths, variants: dict, size, cache: dict) -> dict[str, np.ndarray]:
    """{variant: (N, h, w) model inputs} for the photos, each photo decoded once."""
    from edge_runtime.imageio import read_image
    from edge_runtime.photo import WORK_SIDE
    out = {name: [] for name in variants}
    for path in paths:
        if path not in cache:
            image = read_image(path, working_side=WORK_SIDE)
            cache[path] = {name: fn(image, size) for name, fn in variants.items()}
        for name in variants:
            out[name].append(cache[path][name])
    return {name: np.stack(v) for name, v in out.items()}


def markdown(report: dict) -> str:
    """The verdict table. Pure."""
    against = report["against"]
    other = ((f"today's photo.py with {', '.join(against['swap'])} from {against['describes']}" if against["swap"]
              else against["describes"])
             + (f", {against['settings']}" if against["settings"] else ""))
    today = report.get("after", "today's photo.py")
    before, after = (today, other) if against.get("is_candidate") else (other, today)
    lines = ["# photo_to_input against another version: paired top-1", "",
             f"{report['created']} · Command: `{report['command']}`  ",
             f"Before: {before}. After: {after}.",
             "", "| set | model | photos | top-1 before | top-1 after | lost | won | verdict | flips "
             + ("| flips, JPEG q95 |" if report["reference"] else "|") + " identical inputs |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|" + ("---:|" if report["reference"] else "") + "---:|"]
    for r in report["results"]:
        ref = f" {r['reference']['flips']} |" if report["reference"] else ""
        lines.append(f"| {r['set']} | {r['model']} | {r['photos']} | {100 * r['top1_before']:.1f}% | "
                     f"{100 * r['top1_after']:.1f}% | {r['lost']} | {r['won']} | {r['verdict']} "
                     f"(bound ±{r['bound']:.0f}) | {r['flips']} |{ref} {r['identical_inputs']} of {r['all_photos']} |")
    lines += ["", "lost: right before and wrong after; won: the reverse. Within noise: |won - lost| <= 2 sqrt(won + lost) "
              "(McNemar, ~95%). Flips: photos whose top label changed, out-of-distribution photos included."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.preprocessing_ab", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--against", required=True, metavar="REV",
                        help="the other photo.py: a git revision, WORKTREE, or a path to a .py file")
    parser.add_argument("--set", dest="settings", type=parse_setting, action="append", default=[],
                        metavar="NAME=VALUE", help="override a constant of the --against photo.py")
    parser.add_argument("--swap", action="append", default=[], metavar="FUNCTION",
                        help="compare with today's photo.py with this function from --against (repeatable)")
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="a .tflite model with metadata; repeat for several (default: the shipped model)")
    parser.add_argument("--photos_dir", type=Path, default=DEFAULT_PHOTOS, help="the real-photo set, if present")
    parser.add_argument("--photo_dir", type=Path, default=ROOT / "data" / "photos", help="the labelled photo sources")
    parser.add_argument("--after", metavar="REV", default=None,
                        help="measure this version of photo.py instead of today's (a git revision or a .py path)")
    parser.add_argument("--candidate", action="store_true",
                        help="the --against version is the change (after) and today's photo.py the baseline (before)")
    parser.add_argument("--reference", action="store_true",
                        help="also count the flips JPEG re-encoding (quality 95) makes with the other version")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="directory for preprocessing_ab.{json,md}")
    return parser.parse_args(argv)


@process.command
def main(argv=None) -> int:
    args = parse_args(argv)
    from edge_runtime import photo
    from edge_runtime.classifier import Classifier
    from edge_runtime.deployed import SHIPPED_MODEL
    other = photo_at(args.against, args.settings)
    if args.swap:
        other = swapped(other, args.swap, args.settings)
    today = photo if args.after is None else photo_at(args.after)
    baseline, changed = (today, other) if args.candidate else (other, today)
    variants = {"after": changed.photo_to_input, "before": baseline.photo_to_input}
    if args.reference:
        variants["reference"] = jpeg95(baseline.photo_to_input)
    models = args.model or [SHIPPED_MODEL]
    for m in models:
        if not m.is_file():
            raise UsageError(f"--model {m}: no such file")
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python -m tools.preprocessing_ab " + " ".join(sys.argv[1:] if argv is None else argv),
              "against": {"revision": args.against, "describes": revision_name(args.against),
                          "settings": dict(args.settings), "swap": args.swap, "is_candidate": args.candidate},
              "after": revision_name(args.after) if args.after else "today's photo.py",
              "reference": args.reference, "results": []}
    cache: dict = {}  # photo path -> {variant: model input}: each photo preprocessed once for all models
    for model in models:
        classifier = Classifier(model, num_threads=1)
        for name, rows in evaluation_sets(classifier, args.photos_dir, args.photo_dir).items():
            print(f"{model.name}: {name}: {len(rows)} photos", file=sys.stderr, flush=True)
            inputs = model_inputs([p for p, _ in rows], variants, classifier.input_size, cache)
            labels = np.array([label for _, label in rows])
            predicted = {k: classifier.predict(v).argmax(1) for k, v in inputs.items()}
            row = {"set": name, "model": str(model), **compare(labels, predicted["before"], predicted["after"]),
                   "identical_inputs": int((inputs["before"] == inputs["after"]).all(axis=(1, 2)).sum())}
            if args.reference:
                row["reference"] = compare(labels, predicted["before"], predicted["reference"])
            report["results"].append(row)
    text = markdown(report)
    atomic.write_text(args.out / "preprocessing_ab.json", json.dumps(report, indent=2) + "\n")
    atomic.write_text(args.out / "preprocessing_ab.md", text)
    print(text)
    print(f"wrote {args.out}/preprocessing_ab.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    process.exit_with(main())
