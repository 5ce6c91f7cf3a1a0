"""python -m tools.segmentation_levers --model M: what other segmentations would buy.

The runtime's `photo_to_input` keeps a fragment of the garment on about a
fifth of the real photos (counted by eye on `tools.segmentation_sheet`'s
sheets). This measures, on the same model, the levers against that:

- grabcut: OpenCV's GrabCut (3 iterations at the 128 px working size) seeded
  by today's mask as "probably garment", the border outside it as sure
  background;
- largest: only the largest blob (one shoe of a pair seen from above);
- mean(...): the model's probabilities averaged over several of these inputs.

Top-1 of the in-class photos on ../shared/real-photos (when present) and on
the held-out split of each data/photos source, with the time each
preprocessing takes. A workstation measurement: nothing here runs on the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime import atomic, process
from tools.real_photos import DEFAULT_PHOTOS, OOD, held_out_rows

GRABCUT_ITERATIONS = 3


def grabcut_mask(bgr: np.ndarray, mask: np.ndarray, iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """GrabCut seeded by `mask` (bool (h, w)): inside it probably garment, the border strip
    outside it sure background, the rest probably background. Falls back to `mask`."""
    import cv2

    from edge_runtime import photo
    if not mask.any():
        return mask
    h, w = mask.shape
    seeds = np.where(mask, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    t = max(1, round(min(h, w) * photo.BORDER_FRACTION))
    border = np.zeros_like(mask)
    border[:t] = border[-t:] = True
    border[:, :t] = border[:, -t:] = True
    seeds[border & ~mask] = cv2.GC_BGD
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(bgr, seeds, None, np.zeros((1, 65)), np.zeros((1, 65)), iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # e.g. a class with no pixels to fit a colour model to
        return mask
    refined = photo.clean_mask((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD))
    if refined.sum() < photo.MIN_GARMENT_FRACTION * refined.size:
        return mask
    return photo.fill_holes(photo.main_blobs(refined))


def largest_blob(mask: np.ndarray) -> np.ndarray:
    import cv2
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def lever_inputs(image: np.ndarray, size) -> tuple[dict, dict]:
    """({lever: model input}, {lever: seconds}) for one decoded photo."""
    from edge_runtime import photo
    t0 = time.perf_counter()
    bgr = photo.shrink(photo.to_bgr(image))
    mask, background = photo.garment_mask(bgr)
    inputs = {"mask": photo.masked_input(bgr, mask, background, size)}
    t1 = time.perf_counter()
    inputs["grabcut"] = photo.masked_input(bgr, grabcut_mask(bgr, mask), background, size)
    t2 = time.perf_counter()
    inputs["largest"] = photo.masked_input(bgr, largest_blob(mask), background, size)
    return inputs, {"mask": t1 - t0, "grabcut": t2 - t0}


COMBINATIONS = {"mask": ("mask",), "grabcut": ("grabcut",), "largest": ("largest",),
                "mean(mask, grabcut)": ("mask", "grabcut"), "mean(mask, largest)": ("mask", "largest"),
                "mean(mask, grabcut, largest)": ("mask", "grabcut", "largest")}


def evaluate_set(classifier, rows) -> dict:
    from edge_runtime.imageio import read_image
    from edge_runtime.photo import WORK_SIDE
    rows = [(p, label) for p, label in rows if label != OOD]
    inputs, seconds = {k: [] for k in ("mask", "grabcut", "largest")}, {"mask": [], "grabcut": []}
    for path, _ in rows:
        x, t = lever_inputs(read_image(path, working_side=WORK_SIDE), classifier.input_size)
        for k in inputs:
            inputs[k].append(x[k])
        for k in seconds:
            seconds[k].append(t[k])
    labels = np.array([label for _, label in rows])
    probabilities = {k: classifier.predict(np.stack(v)) for k, v in inputs.items()}
    out = {"photos": len(rows), "median_ms": {k: round(1000 * float(np.median(v)), 2) for k, v in seconds.items()}}
    for name, parts in COMBINATIONS.items():
        mean = sum(probabilities[p] for p in parts) / len(parts)
        out[name] = round(float((mean.argmax(1) == labels).mean()), 4)
    return out


@process.command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.segmentation_levers", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a .tflite model with metadata")
    parser.add_argument("--photos_dir", type=Path, default=DEFAULT_PHOTOS, help="the real-photo set, if present")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/real_photos/segmentation_levers.json"))
    args = parser.parse_args(argv)
    from edge_runtime.classifier import Classifier
    from train.photos import DEFAULT_PHOTO_DIR, datasets, stratified_split
    from tools.real_photos import read_labels as read_real_labels

    classifier = Classifier(args.model, num_threads=1)
    config = (classifier.metadata.get("training") or {}).get("config") or {}
    sets = {}
    if (args.photos_dir / "labels.csv").is_file():
        sets["real-photos"] = read_real_labels(args.photos_dir)
    for dataset in datasets(DEFAULT_PHOTO_DIR):
        rows = held_out_rows(DEFAULT_PHOTO_DIR, dataset, classifier.labels)
        # The validation split training made of this source (the same call and seed), so
        # a source the model trained on is measured on photos it did not train on.
        _, val = stratified_split(np.array([label for _, label in rows]), config.get("photo_val_fraction", 0.15),
                                  config.get("seed", 0))
        sets[f"{dataset} held-out split"] = [rows[i] for i in val]
    report = {"model": str(args.model), "sets": {name: evaluate_set(classifier, rows) for name, rows in sets.items()}}
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    names = list(COMBINATIONS)
    print("| set | photos | " + " | ".join(names) + " | ms: mask / with GrabCut |")
    print("|---|---:|" + "---:|" * (len(names) + 1))
    for name, r in report["sets"].items():
        print(f"| {name} | {r['photos']} | " + " | ".join(f"{100 * r[n]:.1f}%" for n in names)
              + f" | {r['median_ms']['mask']} / {r['median_ms']['grabcut']} |")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    process.exit_with(main())
