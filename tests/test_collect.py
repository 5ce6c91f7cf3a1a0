"""Saving labelled frames (edge_runtime/collect.py, webcam --collect): the files land
in the layout `python -m train --photos DIR` reads, and nothing else can be named."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from edge_runtime.collect import class_folder, frame_name, save_frame
from edge_runtime.contract import CLASS_NAMES
from edge_runtime.errors import UsageError
from edge_runtime.webcam import collect_label
from train import photos

LABELS = list(CLASS_NAMES)


def test_class_folder_and_frame_name():
    assert class_folder("T-shirt/top") == "T-shirt_top"
    assert class_folder("Ankle boot") == "Ankle boot"
    assert "/" not in class_folder("../../etc") and "." not in class_folder("../../etc")
    assert frame_name(datetime(2026, 12, 6, 10, 15, 2, 123456)) == "20261206-101502-123456.jpg"


def test_keys_choose_the_class_by_its_index_and_n_for_none():
    assert collect_label(ord("0"), LABELS) == "T-shirt/top"
    assert collect_label(ord("7"), LABELS) == "Sneaker"
    assert collect_label(ord("n"), LABELS) == "none"
    assert collect_label(ord("x"), LABELS) is None
    assert collect_label(ord("3"), LABELS[:2]) is None


def test_saved_frames_train_as_a_users_photos(tmp_path):
    frame = np.full((90, 120, 3), (40, 90, 160), np.uint8)
    frame[20:70, 40:80] = (200, 200, 30)
    a = save_frame(tmp_path, "T-shirt/top", LABELS, frame, datetime(2026, 1, 1, 0, 0, 0, 1))
    b = save_frame(tmp_path, "none", LABELS, frame, datetime(2026, 1, 1, 0, 0, 0, 2))
    assert a.parent == tmp_path / "T-shirt_top" and b.parent == tmp_path / "none"
    assert not list(tmp_path.rglob("*.partial*"))
    loaded = photos.load_folders(tmp_path, LABELS)
    assert sorted(loaded.labels.tolist()) == [photos.NONE_INDEX, 0]
    assert np.abs(loaded.images[0].astype(int) - frame).mean() < 3  # JPEG, quality 92


@pytest.mark.parametrize("label", ["Hat", "../T-shirt/top", "/etc/passwd", ""])
def test_only_the_models_labels_or_none_can_be_saved(tmp_path, label):
    with pytest.raises(UsageError, match="unknown label"):
        save_frame(tmp_path, label, LABELS, np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
