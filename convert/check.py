"""Prove a converted model is as accurate as the Keras model it came from.

Each TFLite variant is run on the full test set through
`edge_runtime.Classifier.predict`, the code path a device runs, and compared
with the Keras model's predictions on the same images. The pure functions
here turn predictions into figures and figures into a gate verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def per_class_accuracy(labels: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    return np.array([(predicted[labels == c] == c).mean() if (labels == c).any() else np.nan for c in range(n)])


def compare(labels: np.ndarray, reference: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> dict:
    """Figures for one variant against the reference (Keras) predictions. Pure.

    Accuracies are fractions; *_pp figures are percentage points, negative
    when the variant is worse than the reference.
    """
    n = len(class_names)
    acc = float((predicted == labels).mean())
    ref_acc = float((reference == labels).mean())
    class_change = (per_class_accuracy(labels, predicted, n) - per_class_accuracy(labels, reference, n)) * 100
    worst = int(np.nanargmin(class_change))
    return {
        "accuracy": acc,
        "change_pp": round((acc - ref_acc) * 100, 3),
        "agreement": float((predicted == reference).mean()),
        "worst_class": class_names[worst],
        "worst_class_change_pp": round(float(class_change[worst]), 3),
        "class_change_pp": [round(float(c), 3) for c in class_change],
    }


@dataclass(frozen=True)
class Gate:
    max_drop: float = 0.5  # percentage points, overall top-1
    max_class_drop: float = 2.0  # percentage points, any single class (1,000 test images each: 0.1 pp per image)


def gate_failures(figures: dict, gate: Gate, class_names: list[str]) -> list[str]:
    """Why a variant must not be deployed; empty when it may be. Pure."""
    failures = []
    if -figures["change_pp"] > gate.max_drop:
        failures.append(f"top-1 accuracy dropped {-figures['change_pp']:.2f} pp "
                        f"(limit {gate.max_drop} pp, --max_drop)")
    for name, change in zip(class_names, figures["class_change_pp"]):
        if -change > gate.max_class_drop:
            failures.append(f"class {name} dropped {-change:.2f} pp (limit {gate.max_class_drop} pp, --max_class_drop)")
    return failures


def single_image_latency_us(classifier, image: np.ndarray, runs: int = 200, warmup: int = 20) -> dict:
    """Wall time of classifier.predict on one image, microseconds: median, p95, p99, ..."""
    from edge_runtime.timing import latency_stats
    return latency_stats(lambda: classifier.predict(image), runs, warmup)


def markdown_table(rows: list[dict]) -> str:
    head = ("| variant | top-1 | vs Keras (pp) | agreement | worst class change | size | latency (1 image, 1 thread) |\n"
            "|---|---:|---:|---:|---|---:|---:|\n")
    lines = []
    for r in rows:
        size = f"{r['size_bytes'] / 1024:.1f} KB" if r.get("size_bytes") else "-"
        latency = f"{r['latency']['median_us']:.0f} µs" if r.get("latency") else "-"
        if r["variant"] == "keras":
            lines.append(f"| Keras (float, reference) | {r['accuracy']:.2%} | - | - | - | {size} | {latency} |")
            continue
        lines.append(f"| {r['variant']} | {r['accuracy']:.2%} | {r['change_pp']:+.2f} | {r['agreement']:.2%} | "
                     f"{r['worst_class']} {r['worst_class_change_pp']:+.1f} pp | {size} | {latency} |")
    return head + "\n".join(lines) + "\n"


def photo_table(rows: list[dict]) -> str:
    """Held-out photos, per variant and source: top-1 of in-class photos, and the shares
    called unknown at the variant's calibrated threshold. Empty when the run had no photos."""
    if not any(r.get("photos") for r in rows):
        return ""
    lines = ["", "Held-out photos (`unknown`: top score below the threshold calibrated on them):", "",
             "| variant | photos | in-class top-1 | threshold | in-class unknown | none unknown |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        for source, f in (r.get("photos") or {}).items():
            def pct(v):
                return "-" if v is None else f"{v:.1%}"
            lines.append(f"| {r['variant']} | {source} ({f['photos']} + {f['none_photos']} none) | "
                         f"{pct(f['accuracy'])} | {r.get('unknown_threshold')} | {pct(f['in_class_unknown'])} | "
                         f"{pct(f['none_unknown'])} |")
    return "\n".join(lines) + "\n"


def unknown_threshold(probabilities: np.ndarray, labels: np.ndarray, sources: np.ndarray | None = None,
                      max_in_class_unknown: float = 0.10,
                      candidates: np.ndarray = np.round(np.arange(0.20, 0.951, 0.05), 2)) -> float | None:
    """The highest top-score threshold that calls at most `max_in_class_unknown` of the
    in-class photos `unknown` (labels >= 0; negative labels are photos of no class,
    which a higher threshold catches more of) in every one of `sources` (one name per
    photo; None: all photos are one source). Holding every source to the bound, not
    their sum, is what lets the threshold travel to photos unlike the largest source's.
    None without in-class photos. Pure."""
    known = labels >= 0
    if not known.any():
        return None
    groups = np.zeros(len(labels), int) if sources is None else np.asarray(sources)
    tops = [probabilities[known & (groups == g)].max(1) for g in np.unique(groups[known])]
    allowed = [float(t) for t in candidates if all((top < t).mean() <= max_in_class_unknown for top in tops)]
    return max(allowed) if allowed else float(min(candidates))
