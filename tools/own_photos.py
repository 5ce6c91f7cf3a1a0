"""python -m tools.own_photos: what a user's own photos buy, on a source the model never saw.

A run trained with `--photo_holdout NAME` never saw source NAME. From NAME's
photos, k own photos per class (seeded) play the user's own; the rest of
NAME is evaluated. Two ways to use them, at the same k:

- imprinting on the device (edge_runtime/imprint.py): the run converted to
  int8 by the project's converter, the own photos embedded and mixed in by
  the runtime, no TensorFlow. Averaged over `--seeds` picks, since it costs
  milliseconds; the time to imprint k x classes photos from a folder
  (decode, preprocess, embed) is measured separately.
- the workstation fine-tune: `python -m train --init_from RUN --photos DIR`
  (a few epochs), the Keras base and tuned models compared (first seed only:
  each costs minutes).

`--real_photos` adds imprinting on ../shared/real-photos with the deployed
model (own photos taken from that set and evaluated on the rest, the one use
of that set for own photos).

The camera frame (the synthetic 640x480 frame of `make bench`, 1 thread) is
timed with and without each imprint, alternating.

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
from edge_runtime.argtypes import count
from edge_runtime.errors import UsageError
from tools.real_photos import DEFAULT_PHOTOS, OOD, held_out_rows, model_inputs, read_labels

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "real_photos"
CACHE = ROOT / ".cache" / "own-photos"


def pick_own(labels: np.ndarray, per_class: int, seed: int, none: bool = False) -> np.ndarray:
    """Indices of `per_class` in-class photos of every class that has more than that (the rest
    of the class stays for evaluation), and as many photos of no class when `none`. Pure given
    the seed."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
              for c in np.unique(labels) if (c != OOD or none) and (labels == c).sum() > per_class]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def figures(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Top-1 of the in-class photos and the shares called unknown at `threshold`. Pure."""
    known = labels != OOD
    top = probabilities.max(1)
    return {"in_class": int(known.sum()), "ood": int((~known).sum()),
            "top1": round(float((probabilities[known].argmax(1) == labels[known]).mean()), 4),
            "in_class_unknown": round(float((top[known] < threshold).mean()), 4),
            "ood_unknown": round(float((top[~known] < threshold).mean()), 4) if (~known).any() else None}


def imprint_gains(probabilities: np.ndarray, embeddings: np.ndarray, labels: np.ndarray, per_class: int,
                  seeds: int, threshold: float, settings, none: bool = False) -> dict:
    """Imprinting `per_class` own photos per class (and of no class, as `none`, when `none`),
    over `seeds` picks: base and imprinted figures on the photos not picked, and the top-1
    gain's mean, min and max. Pure."""
    from edge_runtime import imprint
    n_classes = probabilities.shape[1]
    base, mixed, gains = [], [], []
    for seed in range(seeds):
        own = pick_own(labels, per_class, seed, none)
        rest = np.setdiff1d(np.arange(len(labels)), own)
        own_classes = np.where(labels[own] == OOD, n_classes, labels[own])  # index C is `none`
        classes, protos = imprint.prototypes(embeddings[own], own_classes, n_classes)
        b = figures(probabilities[rest], labels[rest], threshold)
        m = figures(imprint.mix(probabilities[rest], embeddings[rest], classes, protos, settings),
                    labels[rest], threshold)
        base.append(b)
        mixed.append(m)
        gains.append(m["top1"] - b["top1"])

    def mean(rows, key):
        values = [r[key] for r in rows if r[key] is not None]
        return round(float(np.mean(values)), 4) if values else None

    keys = ("top1", "in_class_unknown", "ood_unknown")
    return {"per_class": per_class, "own_photos": int(len(pick_own(labels, per_class, 0, none))), "seeds": seeds,
            "base": {k: mean(base, k) for k in keys}, "imprinted": {k: mean(mixed, k) for k in keys},
            "gain_pp": round(100 * float(np.mean(gains)), 1), "gain_pp_min": round(100 * float(np.min(gains)), 1),
            "gain_pp_max": round(100 * float(np.max(gains)), 1)}


def own_folder(folder: Path, paths: list[Path], labels: np.ndarray, picked: np.ndarray, names: list[str]) -> Path:
    """Copy the picked photos into folder/<class folder>/, the `--collect` layout."""
    from edge_runtime.collect import class_folder
    for i in picked:
        target = folder / class_folder(names[labels[i]]) / paths[i].name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[i], target)
    return folder


def time_imprint(clf, folder: Path, repeats: int = 5) -> dict:
    """Seconds to imprint a folder from scratch (decode, preprocess, embed; no cached
    imprint file), median of `repeats`, one thread as `clf` was opened."""
    from edge_runtime import imprint
    seconds = []
    for _ in range(repeats):
        (folder / imprint.IMPRINT_FILE).unlink(missing_ok=True)
        t = time.perf_counter()
        own = imprint.from_folder(folder, clf, write=False)
        seconds.append(time.perf_counter() - t)
    return {"photos": len(own.photos), "seconds_median": round(float(np.median(seconds)), 4),
            "seconds_max": round(float(np.max(seconds)), 4)}


def frame_times(clf, own, rounds: int = 10, per_round: int = 30) -> dict:
    """Median µs of the synthetic 640x480 camera frame through `clf.classify`, 1 thread as `clf`
    was opened, without and with the imprint `own`, alternating in rounds so load that comes and
    goes falls on both alike."""
    from edge_runtime.synthetic import synthetic_frame
    frame = synthetic_frame()
    times = {"without": [], "with": []}
    saved = clf.own
    try:
        for _ in range(rounds):
            for key, imprint_now in (("without", None), ("with", own)):
                clf.own = imprint_now
                clf.classify(frame)  # warm
                for _ in range(per_round):
                    t = time.perf_counter()
                    clf.classify(frame)
                    times[key].append((time.perf_counter() - t) * 1e6)
    finally:
        clf.own = saved
    return {k: round(float(np.median(v)), 1) for k, v in times.items()} | {"frames": rounds * per_round}


def converted_model(run: Path) -> Path:
    """The run converted to int8 by the project's converter (cached by the Keras file's SHA-256)."""
    from convert.pipeline import ConvertConfig, run as convert_run
    from edge_runtime.deployed import model_filename
    from edge_runtime.metadata import read_metadata, sha256
    from train.rundir import RunDir
    keras_sha = sha256(RunDir(run).model.read_bytes())
    out = CACHE / keras_sha[:16]
    path = out / model_filename("int8")
    if not (path.is_file() and (read_metadata(path).get("training") or {}).get("keras_sha256") == keras_sha):
        convert_run(ConvertConfig(run_dir=str(run), out_dir=str(out), variants="int8"))
    return path


def fine_tune_row(run: Path, folder: Path, inputs: np.ndarray, labels: np.ndarray, rest: np.ndarray,
                  base_probs: np.ndarray, threshold: float, args, tmp: Path) -> dict:
    """The workstation fine-tune on the own photos in `folder`, Keras base against tuned on `rest`."""
    import keras

    from train import trainer
    from train.config import TrainConfig
    from train.rundir import RunDir
    base_config = TrainConfig.from_dict(json.loads(RunDir(run).config.read_text()))
    config = dataclasses.replace(base_config, init_from=str(run), epochs=args.epochs, train_limit=args.train_limit,
                                 learning_rate=args.learning_rate, warmup_epochs=0.0, patience=args.epochs,
                                 seed=0, photos=str(folder), out_dir=str(tmp / "runs"), name=folder.name)
    t = time.time()
    tuned_dir = trainer.run(config, make_reports=False, publish=False)
    seconds = time.time() - t
    tuned = keras.models.load_model(RunDir(tuned_dir).model).predict(inputs[..., None], verbose=0)
    b, f = figures(base_probs[rest], labels[rest], threshold), figures(tuned[rest], labels[rest], threshold)
    return {"seconds": round(seconds, 1), "base": b, "tuned": f, "gain_pp": round(100 * (f["top1"] - b["top1"]), 1)}


def pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = ["# A user's own photos: imprinting on the device against fine-tuning on a workstation", "",
             f"Imprint boost {s['boost']} (edge_runtime/imprint.py). "
             f"Imprinting: int8 model, runtime only, mean over {report['seeds']} seeded picks (min..max gain). "
             f"Fine-tune: {report['fine_tune']}, first pick only, Keras float. `unknown`: top score below the "
             "model's threshold. Command: `python -m tools.own_photos` (part of `make real-photos`).", ""]
    for part in report["parts"]:
        lines += [f"## {part['title']}", "", part["what"], "",
                  "| own photos per class | imprint: base → with own photos | gain (min..max) | in-class unknown | "
                  "OOD unknown | imprint time | camera frame without → with | fine-tune: base → tuned | gain | "
                  "fine-tune time |",
                  "|---:|---|---:|---|---|---:|---:|---|---:|---:|"]
        for r in part["rows"]:
            b, m, ft, tm = r["base"], r["imprinted"], r.get("fine_tune"), r.get("imprint_time")
            lines.append(
                f"| {r['per_class']} ({r['own_photos']} photos) | {pct(b['top1'])} → {pct(m['top1'])} | "
                f"{r['gain_pp']:+.1f} pp ({r['gain_pp_min']:+.1f}..{r['gain_pp_max']:+.1f}) | "
                f"{pct(b['in_class_unknown'])} → {pct(m['in_class_unknown'])} | "
                f"{pct(b['ood_unknown'])} → {pct(m['ood_unknown'])} | "
                + (f"{tm['seconds_median'] * 1000:.0f} ms | " if tm else "- | ")
                + (f"{r['frame_us']['without']:.0f} → {r['frame_us']['with']:.0f} µs | " if r.get("frame_us") else "- | ")
                + (f"{pct(ft['base']['top1'])} → {pct(ft['tuned']['top1'])} | {ft['gain_pp']:+.1f} pp | "
                   f"{ft['seconds'] / 60:.1f} min |" if ft else "- | - | - |"))
        with_none = [r for r in part["rows"] if r.get("with_none")]
        if with_none:
            lines += ["", "With as many own photos of `none` (photos of no class from the same source) as of "
                      "each class:", "", "| own photos per class | top-1 | in-class unknown | OOD unknown |",
                      "|---:|---|---|---|"]
            for r in with_none:
                n, b = r["with_none"], r["with_none"]["base"]
                lines.append(f"| {r['per_class']} + {r['per_class']} none ({n['own_photos']} photos) | "
                             f"{pct(b['top1'])} → {pct(n['imprinted']['top1'])} ({n['gain_pp']:+.1f} pp) | "
                             f"{pct(b['in_class_unknown'])} → {pct(n['imprinted']['in_class_unknown'])} | "
                             f"{pct(b['ood_unknown'])} → {pct(n['imprinted']['ood_unknown'])} |")
        sweep = [r for r in part["rows"] if r.get("sweep")]
        if sweep:
            lines += ["", "Boost sweep (imprinting only): top-1 gain, in-class unknown, OOD unknown.", "",
                      "| boost | " + " | ".join(f"k = {r['per_class']}" for r in sweep) + " |",
                      "|---:|" + "---|" * len(sweep)]
            for i, b in enumerate(r["boost"] for r in sweep[0]["sweep"]):
                cells = [f"{x['gain_pp']:+.1f} pp, {pct(x['imprinted']['in_class_unknown'])}, "
                         f"{pct(x['imprinted']['ood_unknown'])}" for x in (r["sweep"][i] for r in sweep)]
                lines.append(f"| {b:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def measure(title: str, what: str, clf, paths: list[Path], labels: np.ndarray, args, run: Path | None) -> dict:
    """One part of the report: imprinting (and the fine-tune, for a run) at each k."""
    from edge_runtime import imprint
    from edge_runtime.photo import photo_to_input
    inputs = model_inputs(paths, photo_to_input, clf.input_size)
    probs, embeddings = clf.predict_with_embedding(inputs)
    rows = []
    base_keras = None
    with tempfile.TemporaryDirectory(prefix="own-photos-") as tmp:
        for k in args.per_class:
            row = imprint_gains(probs, embeddings, labels, k, args.seeds, clf.threshold, args.settings)
            row["with_none"] = imprint_gains(probs, embeddings, labels, k, args.seeds, clf.threshold, args.settings,
                                             none=True)
            row["sweep"] = [{"boost": b, **imprint_gains(probs, embeddings, labels, k, args.seeds, clf.threshold,
                                                         imprint.MixSettings(b))} for b in args.boosts]
            picked = pick_own(labels, k, 0)
            folder = own_folder(Path(tmp) / f"own-{k}", paths, labels, picked, clf.labels)
            row["imprint_time"] = time_imprint(clf, folder)
            row["frame_us"] = frame_times(clf, imprint.from_folder(folder, clf, write=False))
            if run is not None and args.fine_tune:
                import keras

                from train.rundir import RunDir
                if base_keras is None:
                    base_keras = keras.models.load_model(RunDir(run).model).predict(inputs[..., None], verbose=0)
                rest = np.setdiff1d(np.arange(len(labels)), picked)
                row["fine_tune"] = fine_tune_row(run, folder, inputs, labels, rest, base_keras, clf.threshold,
                                                 args, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"title": title, "what": what, "rows": rows}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.own_photos", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", default=None,
                        help="a finished run trained with --photo_holdout; repeat for several "
                             "(default: every run under runs/ that held a source out)")
    parser.add_argument("--photo_dir", type=Path, default=ROOT / "data" / "photos", help="the project's photo set")
    parser.add_argument("--real_photos", type=Path, default=DEFAULT_PHOTOS,
                        help="the labelled real-photo set, imprinted with the deployed model (skipped if absent)")
    parser.add_argument("--per_class", default="1,3,5", help="own photos per class, comma-separated")
    parser.add_argument("--seeds", type=count(1), default=10, help="seeded picks of own photos for imprinting")
    parser.add_argument("--fine_tune", action=argparse.BooleanOptionalAction, default=True,
                        help="also fine-tune on a workstation at each k (minutes each)")
    parser.add_argument("--epochs", type=count(1), default=4, help="fine-tuning epochs")
    parser.add_argument("--train_limit", type=count(1), default=12000, help="Fashion-MNIST images in the fine-tune")
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="peak learning rate of the fine-tune")
    parser.add_argument("--boost", type=float, default=None, help="imprint boost (default: edge_runtime's)")
    parser.add_argument("--boosts", default="1,2,3,4", help="imprint boosts to sweep (gain and unknowns at each)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.per_class = [int(v) for v in args.per_class.split(",") if v.strip()]
    args.boosts = [float(v) for v in args.boosts.split(",") if v.strip()]
    return args


def holdout_runs() -> list[Path]:
    """Runs under runs/ whose training held a photo source out."""
    found = []
    for config in sorted((ROOT / "runs").glob("*/config.json")):
        if json.loads(config.read_text()).get("photo_holdout") and (config.parent / "model.keras").is_file():
            found.append(config.parent)
    return found


@process.command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from edge_runtime import imprint
    from edge_runtime.classifier import Classifier
    from edge_runtime.deployed import default_model_path
    args.settings = imprint.MixSettings() if args.boost is None else imprint.MixSettings(args.boost)
    runs = args.run if args.run is not None else holdout_runs()
    parts = []
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        sources = [s.strip() for s in (config.get("photo_holdout") or "").split(",") if s.strip()]
        if not sources:
            raise UsageError(f"{run}: trained without --photo_holdout, so every photo source was seen")
        clf = Classifier(converted_model(run), num_threads=1)
        for source in sources:
            rows = held_out_rows(args.photo_dir, source, clf.labels)
            parts.append(measure(f"{source}, held out of {run.name}",
                                 f"{len(rows)} photos of `{source}` (data/photos), a source run `{run.name}` never "
                                 "saw in training or validation.", clf,
                                 [p for p, _ in rows], np.array([label for _, label in rows]), args, run))
    if (args.real_photos / "labels.csv").is_file():
        clf = Classifier(default_model_path(), num_threads=1)
        if clf.embedding is not None:
            rows = read_labels(args.real_photos)
            parts.append(measure("real-photos, deployed model", f"{len(rows)} photos of {args.real_photos.name} "
                                 f"with {default_model_path().name} (no fine-tune: the deployed model has no run here).",
                                 clf, [p for p, _ in rows], np.array([label for _, label in rows]), args, None))
    if not parts:
        print("own photos: nothing to measure (no run trained with --photo_holdout, no real-photo set); "
              "train one with `python -m train --photo_holdout clothing-dataset`")
        return 0
    report = {"settings": dataclasses.asdict(args.settings), "seeds": args.seeds, "parts": parts,
              "fine_tune": f"--init_from RUN --photos DIR --epochs {args.epochs} --train_limit {args.train_limit} "
                           f"--learning_rate {args.learning_rate} --warmup_epochs 0"}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "own_photos.json", json.dumps(report, indent=2) + "\n")
    atomic.write_text(args.out / "own_photos.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    process.exit_with(main())
