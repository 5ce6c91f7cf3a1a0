"""The pictures people look at after training, generated from the run's own files:
learning curves, confusion matrix, sample training images per class, and a
montage of test predictions with the wrong ones marked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_runtime import atomic
from edge_runtime.contract import CLASS_NAMES

from .rundir import RunDir


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")  # files only: works over SSH and in CI
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG atomically and close it."""
    with atomic.atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    pyplot().close(fig)


def learning_curves(history: list[dict], path: Path) -> None:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [h[key] for h in history], label="train (augmented)")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def confusion_matrix(cm: np.ndarray, path: Path, title: str = "Confusion matrix (test set)",
                     diverging: bool = False) -> None:
    """Counts with rows = true class, columns = predicted. diverging: for a difference of two matrices."""
    plt = pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    if diverging:
        limit = max(1, np.abs(cm).max())
        im = ax.imshow(cm, cmap="RdBu_r", vmin=-limit, vmax=limit)
    else:
        im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if (not diverging and v > cm.max() / 2) else "black")
    save_figure(fig, path)


def samples_per_class(images: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 8) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(per_class * 0.9, len(CLASS_NAMES) * 0.95))
    for c, row in enumerate(axes):
        idx = np.flatnonzero(labels == c)[:per_class]
        for ax, i in zip(row, idx):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        for ax in row:
            ax.axis("off")
        row[0].set_title(CLASS_NAMES[c], fontsize=8, loc="left")
    save_figure(fig, path)


def prediction_montage(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, path: Path,
                       n: int = 48, seed: int = 0) -> None:
    """A random sample of test images, wrong predictions in red and over-sampled so they show up."""
    plt = pyplot()
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(true != predicted)
    right = np.flatnonzero(true == predicted)
    n_wrong = min(len(wrong), n // 4)
    idx = np.concatenate([rng.choice(wrong, n_wrong, replace=False) if n_wrong else np.array([], int),
                          rng.choice(right, min(len(right), n - n_wrong), replace=False)])
    idx = rng.permutation(idx)
    cols = 8
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.75))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes), idx):
        ok = true[i] == predicted[i]
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{CLASS_NAMES[predicted[i]]}" + ("" if ok else f"\n(true: {CLASS_NAMES[true[i]]})"),
                     fontsize=7, color="green" if ok else "red")
    save_figure(fig, path)


def write_all(run: RunDir, split, test_images, test_labels, predicted, metrics: dict) -> None:
    history = json.loads(run.history.read_text())
    learning_curves(history, run.report("learning_curves"))
    confusion_matrix(np.array(metrics["confusion_matrix"]), run.report("confusion_matrix"),
                     f"{metrics['model']}: test accuracy {metrics['test_accuracy']:.2%}")
    samples_per_class(split.train_x, split.train_y, run.report("samples"))
    prediction_montage(test_images, test_labels, predicted, run.report("test_predictions"))
