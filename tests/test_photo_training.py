"""Real photos in training (train/photos.py) and the project's photo set
(data/photos, tools/photo_set.py): the committed set is complete and valid,
the pure pieces behave, a user's class folders load, bad input is a DataError."""

from __future__ import annotations

import csv
import hashlib

import cv2
import numpy as np
import pytest

from edge_runtime.contract import CLASS_NAMES
from edge_runtime.errors import DataError
from edge_runtime.photo import photo_to_input
from tools import photo_set
from train import photos

from conftest import SHARED

NAMES = list(CLASS_NAMES)


def test_the_committed_photo_set_is_complete_labelled_and_small():
    rows = photos.read_labels(photos.DEFAULT_PHOTO_DIR)
    assert len(rows) > 2000
    assert all(photos.class_index(r["label"], NAMES) is not None for r in rows)
    sizes = 0
    for r in rows:
        path = photos.DEFAULT_PHOTO_DIR / r["file"]
        sizes += path.stat().st_size
        assert len(r["source_sha256"]) == 64 and r["licence"] and r["source"]
    assert sizes < 40e6  # the copy lives in git
    labels = {r["label"] for r in rows}
    assert set(NAMES) | {"none"} == labels
    readme = (photos.DEFAULT_PHOTO_DIR / "README.md").read_text()
    for dataset in photos.datasets(photos.DEFAULT_PHOTO_DIR):  # each source named with its licence
        assert f"`{dataset}`" in readme
    excluded = {(r["dataset"], r["source"]) for r in csv.DictReader(open(photos.DEFAULT_PHOTO_DIR / photo_set.EXCLUDED))}
    assert not excluded & {(r["dataset"], r["source"]) for r in rows}
    assert len({r["source_sha256"] for r in rows}) == len(rows)  # no photo twice, from any source


def test_stored_photos_are_at_most_the_stored_side():
    rows = photos.read_labels(photos.DEFAULT_PHOTO_DIR)[::97]
    for r in rows:
        image = cv2.imread(str(photos.DEFAULT_PHOTO_DIR / r["file"]))
        assert image is not None and max(image.shape[:2]) <= photo_set.STORED_SIDE


def test_class_index_matches_folder_names_to_classes():
    assert photos.class_index("T-shirt/top", NAMES) == 0
    assert photos.class_index("t-shirt", NAMES) == 0
    assert photos.class_index("tshirt_top", NAMES) == 0
    assert photos.class_index("ankle boot", NAMES) == 9
    assert photos.class_index("Ankle_Boot", NAMES) == 9
    assert photos.class_index("none", NAMES) == photos.NONE_INDEX
    assert photos.class_index("hat", NAMES) is None


def test_targets_are_one_hot_or_even_for_none():
    t = photos.targets(np.array([2, photos.NONE_INDEX]), 10)
    assert t.dtype == np.float32 and t.shape == (2, 10)
    assert t[0, 2] == 1.0 and t[0].sum() == 1.0
    assert np.allclose(t[1], 0.1)


def test_stratified_split_holds_out_a_share_of_every_label_and_is_seeded():
    labels = np.array([0] * 20 + [1] * 10 + [photos.NONE_INDEX] * 10 + [5] * 2)
    train, val = photos.stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert [int((labels[val] == c).sum()) for c in (0, 1, photos.NONE_INDEX, 5)] == [4, 2, 2, 1]
    again = photos.stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(val, again[1])


def garment_on_floor(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), (60, 110, 150), np.uint8) + rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(image, (50, 25), (110, 100), (200, 60, 30), -1)
    return image


def test_augment_photo_is_a_seeded_photo_of_similar_size():
    image = garment_on_floor(0)
    aug = photos.PhotoAugment()
    a = photos.augment_photo(image, aug, np.random.default_rng(1))
    b = photos.augment_photo(image, aug, np.random.default_rng(1))
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.ndim == 3
    assert 0.8 * 120 - 1 <= a.shape[0] <= 120 and 0.8 * 160 - 1 <= a.shape[1] <= 160
    assert not np.array_equal(a, image[:a.shape[0], :a.shape[1]])


def test_model_inputs_go_through_the_runtime_preprocessing():
    images = [garment_on_floor(i) for i in range(3)]
    ps = photos.PhotoSet(images, np.array([0, 1, photos.NONE_INDEX]), ["a", "b", "c"])
    x, y = photos.model_inputs(ps, copies=2, aug=photos.PhotoAugment(), seed=0, size=(28, 28))
    assert x.shape == (6, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == [0, 1, photos.NONE_INDEX] * 2
    assert np.array_equal(x[0], photo_to_input(images[0]))  # copy 0 is the photo as it is


def test_evaluate_reports_accuracy_and_unknown_shares():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.55, 0.45], [0.5, 0.5]], np.float32)
    figures = photos.evaluate(probs, np.array([0, 0, photos.NONE_INDEX, photos.NONE_INDEX]), threshold=0.56)
    assert figures == {"photos": 2, "none_photos": 2, "accuracy": 0.5, "in_class_unknown": 0.0,
                       "none_unknown": 1.0}


def test_a_users_class_folders_load(tmp_path):
    for folder, n in (("Sneaker", 2), ("t-shirt", 1), ("none", 1)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / folder / f"{i}.jpg"), garment_on_floor(i))
    (tmp_path / "Sneaker" / "notes.txt").write_text("not an image")
    ps = photos.load_folders(tmp_path, NAMES)
    assert sorted(ps.labels.tolist()) == [photos.NONE_INDEX, 0, 7, 7]
    assert all(im.ndim == 3 for im in ps.images)


def test_bad_photo_folders_and_labels_are_data_errors(tmp_path):
    (tmp_path / "hat").mkdir()
    with pytest.raises(DataError, match="folder 'hat' names no class"):
        photos.load_folders(tmp_path, NAMES)
    with pytest.raises(DataError, match="not a directory"):
        photos.load_folders(tmp_path / "missing", NAMES)
    (tmp_path / "labels.csv").write_text("file,label\n../outside.jpg,Sneaker\n")
    with pytest.raises(DataError, match="outside"):
        photos.load_labelled(tmp_path, NAMES)
    (tmp_path / "labels.csv").write_text("file,label\na.jpg,Hat\n")
    with pytest.raises(DataError, match="'Hat' is not one of the model's classes"):
        photos.load_labelled(tmp_path, NAMES)
    with pytest.raises(DataError, match="no labels.csv there"):
        photos.find_photo_dir(str(tmp_path / "nowhere"))


def test_rebuild_checks_each_source_photo_and_writes_the_shrunk_copy(tmp_path):
    source = tmp_path / "source" / "t-shirt"
    source.mkdir(parents=True)
    big = garment_on_floor(0, 400, 533)
    data = cv2.imencode(".jpg", big)[1].tobytes()
    (source / "x.jpg").write_bytes(data)
    out = tmp_path / "photos"
    out.mkdir()
    row = f"images/t-shirt/x.jpg,T-shirt/top,t-shirt/x.jpg,{hashlib.sha256(data).hexdigest()},\n"
    (out / "labels.csv").write_text("file,label,source,source_sha256,notes\n" + row)
    assert photo_set.rebuild({None: tmp_path / "source"}, out) == 1
    assert photo_set.rebuild({"another-dataset": tmp_path / "source"}, out) == 0  # the row's dataset is 'photos'
    stored = cv2.imread(str(out / "images" / "t-shirt" / "x.jpg"))
    assert max(stored.shape[:2]) == photo_set.STORED_SIDE
    (source / "x.jpg").write_bytes(data + b"changed")
    with pytest.raises(DataError, match="SHA-256 differs"):
        photo_set.rebuild({None: tmp_path / "source"}, out)


@pytest.mark.skipif(not (SHARED / "photo-train").is_dir(), reason=f"{SHARED}/photo-train is absent")
def test_the_committed_copy_matches_a_rebuild_from_the_source(tmp_path):
    rows = [r for r in photos.read_labels(photos.DEFAULT_PHOTO_DIR)
            if r["dataset"] == "clothing-dataset-small"][::250]
    (tmp_path / "labels.csv").write_text("file,label,dataset,source,source_sha256,notes\n" + "".join(
        f"{r['file']},{r['label']},{r['dataset']},{r['source']},{r['source_sha256']},\n" for r in rows))
    assert photo_set.rebuild({"clothing-dataset-small": SHARED / "photo-train"}, tmp_path) == len(rows)
    for r in rows:
        rebuilt = cv2.imread(str(tmp_path / r["file"])).astype(int)
        committed = cv2.imread(str(photos.DEFAULT_PHOTO_DIR / r["file"])).astype(int)
        assert rebuilt.shape == committed.shape and np.abs(rebuilt - committed).mean() < 1.0


def test_unknown_threshold_is_the_highest_that_keeps_in_class_unknown_under_the_limit():
    from convert.check import unknown_threshold
    # in-class top scores 0.35 .. 0.95 (ten photos); a none photo at 0.4
    tops = np.array([0.35, 0.62, 0.68, 0.72, 0.77, 0.81, 0.85, 0.9, 0.93, 0.95, 0.4])
    probs = np.stack([tops, (1 - tops) / 2, (1 - tops) / 2], axis=1)  # the top score is the first
    labels = np.array([0] * 10 + [photos.NONE_INDEX])
    assert unknown_threshold(probs, labels, max_in_class_unknown=0.10) == 0.6  # 0.35 is the one allowed below it
    assert unknown_threshold(probs, labels, max_in_class_unknown=0.0) == 0.35
    assert unknown_threshold(probs[10:], labels[10:]) is None  # no in-class photos: nothing to calibrate on


def test_unknown_threshold_holds_every_source_to_the_limit():
    from convert.check import unknown_threshold
    # source a: confident (0.9 each); source b: less so (0.5 .. 0.95). Together b's three
    # low scores are 3 of 20 = 15%; alone they are 3 of 10 = 30%.
    tops = np.array([0.9] * 10 + [0.5, 0.55, 0.58, 0.8, 0.82, 0.85, 0.88, 0.9, 0.93, 0.95])
    probs = np.stack([tops, 1 - tops], axis=1)
    labels = np.zeros(20, int)
    sources = np.array(["a"] * 10 + ["b"] * 10)
    pooled = unknown_threshold(probs, labels, max_in_class_unknown=0.15)
    per_source = unknown_threshold(probs, labels, sources, max_in_class_unknown=0.15)
    assert pooled == 0.8 and per_source == 0.55  # b may lose one photo of ten, not three


def test_own_photo_picks_leave_every_class_something_to_evaluate():
    from tools.own_photos import figures, pick_own
    labels = np.array([0] * 6 + [1] * 3 + [2] * 12 + [-1] * 4)
    own = pick_own(labels, 5, seed=0)
    assert sorted(labels[own].tolist()) == [0] * 5 + [2] * 5  # class 1 has too few to give 5 and keep one
    assert np.array_equal(own, pick_own(labels, 5, seed=0))
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7]])
    f = figures(probs, np.array([0, 0, -1, -1]), 0.6)
    assert f == {"in_class": 2, "ood": 2, "top1": 0.5, "in_class_unknown": 0.0, "ood_unknown": 0.5}


def test_each_dataset_is_a_source_and_held_out_ones_stay_out_of_training(tmp_path):
    from train.config import TrainConfig
    from train.trainer import training_photos
    lines = ["file,label,dataset,source,source_sha256,licence,notes"]
    for i, (label, dataset) in enumerate([("Bag", "shop"), ("Bag", "shop"), ("Coat", "home"), ("Coat", "home"),
                                          ("none", "home"), ("Sneaker", "far"), ("Sneaker", "far")]):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), garment_on_floor(i))
        lines.append(f"{i}.jpg,{label},{dataset},{i}.jpg,{'0' * 64},CC0-1.0,")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    assert photos.datasets(tmp_path) == ["shop", "home", "far"]
    assert len(photos.load_labelled(tmp_path, NAMES, dataset="home")) == 3
    photo = training_photos(TrainConfig(photo_dir=str(tmp_path), photo_holdout="far", photo_copies=2,
                                        photo_val_fraction=0.5))
    assert set(photo.counts) == {"shop", "home"}  # 'far' is neither trained nor validated on
    assert set(photo.val_source) == {"shop", "home"}
    assert 7 not in photo.train_targets.argmax(1)  # no Sneaker: those photos were all 'far'


def test_the_cross_source_benchmark_reads_the_models_held_out_sources():
    from tools.real_photos import OOD, held_out_rows, model_holdout
    assert model_holdout({"training": {"config": {"photo_holdout": "abo, other"}}}) == ["abo", "other"]
    assert model_holdout({"training": {}}) == []
    rows = held_out_rows(photos.DEFAULT_PHOTO_DIR, "abo", NAMES)
    labels = [label for _, label in rows]
    assert len(rows) > 600 and labels.count(NAMES.index("Bag")) >= 100 and OOD in labels
    assert all(path.is_file() for path, _ in rows[::50])
