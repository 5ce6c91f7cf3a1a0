"""Counting a classifier's answers against the truth: pure numpy, shared by
training's metrics, the converter's report and the real-photo benchmark."""

from __future__ import annotations

import numpy as np


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """(n, n) int64 counts, rows = true class, columns = predicted. Pure."""
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix
