"""tools/own_photos.py, the own-photo benchmark: its figures from arrays, its report, and its
frame timing on a real converted model."""

from __future__ import annotations

import numpy as np

from edge_runtime import imprint
from edge_runtime.classifier import Classifier
from tools import own_photos
from tools.real_photos import OOD


def clustered(n_per_class: int = 12, classes: int = 3, dim: int = 8, seed: int = 0):
    """Embeddings in one tight cluster per class, and a model that always answers class 0."""
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, dim) * 5
    labels = np.repeat(np.arange(classes), n_per_class)
    embeddings = centres[labels] + rng.normal(scale=0.1, size=(len(labels), dim))
    probabilities = np.tile(np.array([0.6, 0.25, 0.15] + [0.0] * (classes - 3), np.float32), (len(labels), 1))
    return probabilities, embeddings.astype(np.float32), labels


def test_imprint_gains_count_only_the_photos_not_picked():
    probabilities, embeddings, labels = clustered()
    row = own_photos.imprint_gains(probabilities, embeddings, labels, per_class=3, seeds=4, threshold=0.25,
                                   settings=imprint.MixSettings(4.0))
    # The model is right on one class in three; own photos of each tight cluster fix the rest.
    assert row["base"]["top1"] == round(1 / 3, 4)
    assert row["imprinted"]["top1"] == 1.0 and row["gain_pp_min"] == row["gain_pp"] == 66.7
    assert row["own_photos"] == 9 and row["seeds"] == 4
    # a boost of 0 is the model alone: no gain, whatever the pick
    still = own_photos.imprint_gains(probabilities, embeddings, labels, 3, 2, 0.25, imprint.MixSettings(0.0))
    assert still["gain_pp"] == still["gain_pp_max"] == 0.0


def test_pick_own_leaves_out_of_class_photos_and_small_classes():
    labels = np.array([0] * 5 + [1] * 2 + [OOD] * 4)
    picked = own_photos.pick_own(labels, per_class=2, seed=0)
    assert set(labels[picked]) == {0} and len(picked) == 2  # class 1 has no photo left to evaluate


def test_markdown_has_a_row_per_k_and_the_sweep():
    probabilities, embeddings, labels = clustered()
    rows = []
    for k in (1, 3):
        row = own_photos.imprint_gains(probabilities, embeddings, labels, k, 2, 0.25, imprint.MixSettings())
        row["sweep"] = [{"boost": b, **own_photos.imprint_gains(probabilities, embeddings, labels, k, 2, 0.25,
                                                                imprint.MixSettings(b))} for b in (1.0, 3.0)]
        row["imprint_time"], row["frame_us"] = {"seconds_median": 0.012}, {"without": 900.0, "with": 950.0}
        rows.append(row)
    md = own_photos.markdown({"settings": {"boost": 2.0}, "seeds": 2, "fine_tune": "--epochs 4",
                              "parts": [{"title": "a source", "what": "what it is", "rows": rows}]})
    assert "## a source" in md and "| 1 (3 photos) |" in md and "| 3 (9 photos) |" in md
    assert "12 ms" in md and "900 → 950 µs" in md and "| 3 | " in md  # the sweep's boost 3 row


def test_frame_times_restore_the_classifier_s_own_photos(tiny_int8_model):
    clf = Classifier(tiny_int8_model, num_threads=1)
    probabilities, embeddings, labels = clustered(dim=clf.embedding.shape[-1], classes=3)
    own = imprint.Imprint(list(clf.labels), "sha")
    for i in range(3):
        own.add(imprint.Photo(f"x/{i}.jpg", clf.labels[i], "0" * 64, embeddings[i * 12]))
    times = own_photos.frame_times(clf, own, rounds=2, per_round=3)
    assert times["without"] > 0 and times["with"] > 0 and times["frames"] == 6
    assert clf.own is None  # left as it was found


def test_own_none_photos_make_a_none_prototype_that_turns_no_class_photos_unknown():
    probabilities, embeddings, labels = clustered()
    rng = np.random.default_rng(1)
    # photos of no class: a cluster of their own, which the model calls class 0 at 0.6
    none = np.eye(1, embeddings.shape[1], k=5) * 5 + rng.normal(scale=0.1, size=(12, embeddings.shape[1]))
    embeddings = np.concatenate([embeddings, none.astype(np.float32)])
    probabilities = np.concatenate([probabilities, probabilities[:12]])
    labels = np.concatenate([labels, np.full(12, OOD)])
    assert set(labels[own_photos.pick_own(labels, 3, 0, none=True)]) == {0, 1, 2, OOD}
    without = own_photos.imprint_gains(probabilities, embeddings, labels, 3, 2, 0.25, imprint.MixSettings(4.0))
    with_none = own_photos.imprint_gains(probabilities, embeddings, labels, 3, 2, 0.25, imprint.MixSettings(4.0),
                                         none=True)
    assert without["imprinted"]["ood_unknown"] == 0.0  # called class 0 with confidence
    assert with_none["imprinted"]["ood_unknown"] == 1.0 and with_none["own_photos"] == 12
