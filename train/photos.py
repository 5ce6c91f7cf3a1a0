"""Real photos in training, beside Fashion-MNIST.

A model that has only seen Fashion-MNIST's catalogue images is wrong on about
half of real phone photos: what the runtime's `photo_to_input` makes of a
garment on a bed or a rug is not what the dataset looks like. So training
also sees real photos, turned into model inputs by that same function, the
one preprocessing contract. Each photo is augmented *as a photo* first
(crop, rotation, flip, brightness, contrast, colour), so the model learns
what the segmentation really produces for a garment framed a little
differently, not a shifted copy of one 28x28 input.

Photos labelled `none` (shorts, hats, skirts, shoes of no class) are trained
toward an even output over the classes (outlier exposure, Hendrycks et al.
2019), so a low top score, and with it `unknown`, means something.

Two sources, both read the same way:
- a labelled set: labels.csv (file,label,...) beside the images, like data/photos;
- a user's own photos: one folder per class name (the layout
  keras.utils.image_dataset_from_directory reads), e.g. my-photos/Sneaker/1.jpg.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.classifier import DEFAULT_THRESHOLD
from edge_runtime.collect import NONE  # the label of a photo of no class of the model
from edge_runtime.errors import DataError

LABELS = "labels.csv"  # file,label[,dataset,source,source_sha256,notes], beside the images
DATASET = "dataset"  # labels.csv column: which source dataset a photo comes from (docs/photos.md)

NONE_INDEX = -1  # its label index in a PhotoSet
DEFAULT_PHOTO_DIR = Path(__file__).resolve().parent.parent / "data" / "photos"
MAX_PHOTOS = 100_000  # a folder with more is a mistake, not a photo collection


@dataclass
class PhotoSet:
    images: list[np.ndarray]  # BGR uint8 (H, W, 3), as stored
    labels: np.ndarray  # (N,) int64 class index, NONE_INDEX for `none`
    files: list[str]  # where each came from, for reports

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "PhotoSet":
        return PhotoSet([self.images[i] for i in index], self.labels[index], [self.files[i] for i in index])


def _class_key(name: str) -> str:
    """'T-shirt/top' -> 'tshirttop': how a folder name is matched to a class name."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_index(name: str, class_names: list[str]) -> int | None:
    """The class a label or folder names: exact, or ignoring case and punctuation, or the
    part before a slash ('T-shirt' for 'T-shirt/top'); NONE_INDEX for 'none'. Pure."""
    if _class_key(name) == NONE:
        return NONE_INDEX
    for i, c in enumerate(class_names):
        if name == c or _class_key(name) in (_class_key(c), _class_key(c.split("/")[0])):
            return i
    return None


def read_labels(photo_dir: Path) -> list[dict]:
    """The rows of photo_dir/labels.csv; DataError when missing or malformed."""
    path = Path(photo_dir) / LABELS
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DataError(f"{path}: can't read the photo labels ({e.strerror})") from None
    for i, row in enumerate(rows, start=2):
        if not row.get("file") or not row.get("label"):
            raise DataError(f"{path}:{i}: a row needs a file and a label")
    return rows


def dataset_of(row: dict, photo_dir: Path) -> str:
    """The source dataset a labels.csv row names; the folder's name when the column is absent. Pure."""
    return row.get(DATASET) or Path(photo_dir).name


def datasets(photo_dir: Path) -> list[str]:
    """The source datasets of a labelled set, in the order labels.csv first names them."""
    return list(dict.fromkeys(dataset_of(row, photo_dir) for row in read_labels(photo_dir)))


def _read(path: Path) -> np.ndarray:
    from edge_runtime.imageio import read_image
    from edge_runtime.photo import to_bgr
    return to_bgr(read_image(path))


def load_labelled(photo_dir: Path, class_names: list[str], dataset: str | None = None) -> PhotoSet:
    """A labels.csv photo set, or only its photos from one source `dataset`. Unknown labels
    and files outside photo_dir are DataErrors."""
    photo_dir = Path(photo_dir)
    root = photo_dir.resolve()
    images, labels, files = [], [], []
    for row in read_labels(photo_dir):
        if dataset is not None and dataset_of(row, photo_dir) != dataset:
            continue
        index = class_index(row["label"], class_names)
        if index is None:
            raise DataError(f"{photo_dir / LABELS}: {row['label']!r} is not one of the model's classes or {NONE!r}")
        path = (photo_dir / row["file"]).resolve()
        if root not in path.parents:
            raise DataError(f"{photo_dir / LABELS}: {row['file']!r} is outside {photo_dir}")
        images.append(_read(path))
        labels.append(index)
        files.append(row["file"])
    return PhotoSet(images, np.array(labels, np.int64), files)


def load_folders(directory: Path, class_names: list[str]) -> PhotoSet:
    """A user's photos, one folder per class name (or `none`); images below each, any depth."""
    from edge_runtime.imageio import is_image_name
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--photos {directory}: not a directory (expected one folder per class name)")
    images, labels, files = [], [], []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = class_index(folder.name, class_names)
        if index is None:
            raise DataError(f"--photos {directory}: folder {folder.name!r} names no class; use one of "
                            f"{', '.join(class_names)} (or 'none'), e.g. {_class_key(class_names[0])}")
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if is_image_name(name) and not name.startswith("."):
                    if len(images) >= MAX_PHOTOS:
                        raise DataError(f"--photos {directory}: more than {MAX_PHOTOS} images")
                    path = Path(root) / name
                    images.append(_read(path))
                    labels.append(index)
                    files.append(str(path.relative_to(directory)))
    if not images:
        raise DataError(f"--photos {directory}: no images in its class folders")
    return PhotoSet(images, np.array(labels, np.int64), files)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: val_fraction of every label (`none` too) held out, at least
    one of a label with two or more photos. Pure given the seed."""
    from edge_runtime.dataset import stratified_indices

    def n_val(size: int) -> int:
        n = int(round(size * val_fraction))
        return min(max(n, 1), size - 1) if val_fraction > 0 and size >= 2 else n
    val, train = stratified_indices(labels, n_val, seed)
    return np.sort(train), val


# -- augmentation of the photo, before preprocessing --------------------------------

@dataclass(frozen=True)
class PhotoAugment:
    min_crop: float = 0.8  # side of the kept window, as a fraction of each side
    max_rotation: float = 12.0  # degrees, either way
    flip: bool = True
    brightness: float = 0.2  # added, as a fraction of 255, either way
    contrast: float = 0.25  # gain 1 +- this
    color: float = 0.1  # per-channel gain 1 +- this: white balance


def augment_photo(image: np.ndarray, aug: PhotoAugment, rng: np.random.Generator) -> np.ndarray:
    """One randomly cropped, rotated, flipped, relit copy of a BGR photo. Pure given rng.

    The rotation fills with the nearest edge pixels (BORDER_REPLICATE), so the
    corners look like more floor, not like a black frame the segmentation
    would take for a garment.
    """
    import cv2
    h, w = image.shape[:2]
    ch, cw = (max(1, int(round(s * rng.uniform(aug.min_crop, 1.0)))) for s in (h, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y:y + ch, x:x + cw]
    angle = rng.uniform(-aug.max_rotation, aug.max_rotation)
    if angle:
        m = cv2.getRotationMatrix2D((cw / 2, ch / 2), angle, 1.0)
        out = cv2.warpAffine(out, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if aug.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    gain = rng.uniform(1 - aug.contrast, 1 + aug.contrast) * rng.uniform(1 - aug.color, 1 + aug.color, size=3)
    offset = rng.uniform(-aug.brightness, aug.brightness) * 255
    mean = out.reshape(-1, 3).mean(0)
    relit = (out.astype(np.float32) - mean) * gain.astype(np.float32) + mean + np.float32(offset)
    return np.clip(relit, 0, 255).astype(np.uint8)


def model_inputs(photos: PhotoSet, copies: int, aug: PhotoAugment | None, seed: int,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (N * copies, h, w) uint8, labels (N * copies,)): each photo `copies` times,
    augmented (copy 0 as it is) and turned into a model input by the runtime's
    photo_to_input. Deterministic given the seed."""
    from edge_runtime.photo import photo_to_input
    rng = np.random.default_rng([seed, 7])
    inputs, labels = [], []
    for copy in range(copies):
        for image, label in zip(photos.images, photos.labels):
            photo = image if copy == 0 or aug is None else augment_photo(image, aug, rng)
            inputs.append(photo_to_input(photo, size))
            labels.append(label)
    if not inputs:
        return np.zeros((0, *size), np.uint8), np.zeros((0,), np.int64)
    return np.stack(inputs), np.array(labels, np.int64)


def targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) float32 training targets: one-hot, or even (1/C each) for `none`. Pure."""
    out = np.zeros((len(labels), n_classes), np.float32)
    known = labels != NONE_INDEX
    out[np.flatnonzero(known), labels[known]] = 1.0
    out[~known] = 1.0 / n_classes
    return out


def find_photo_dir(text: str) -> Path:
    """A --photo_dir as given, or relative to the project checkout (so the default
    data/photos works from any directory); DataError when neither has labels.csv."""
    for candidate in (Path(text), DEFAULT_PHOTO_DIR.parent.parent / text):
        if (candidate / LABELS).is_file():
            return candidate
    raise DataError(f"--photo_dir {text}: no {LABELS} there; pass --photo_dir '' to train on Fashion-MNIST alone")


def limited(photos: PhotoSet, limit: int | None, seed: int) -> PhotoSet:
    """At most `limit` photos, a seeded random choice (all of them when limit is None)."""
    if limit is None or limit >= len(photos):
        return photos
    return photos.subset(np.sort(np.random.default_rng([seed, 11]).permutation(len(photos))[:limit]))


@dataclass
class TrainingPhotos:
    """Photos as model inputs for one run: training copies, and held-out ones per source."""
    train_x: np.ndarray  # uint8 (N * copies, 28, 28)
    train_targets: np.ndarray  # float32 (N * copies, C)
    val_x: np.ndarray  # uint8 (M, 28, 28), each held-out photo once, as it is
    val_y: np.ndarray  # (M,) class index, NONE_INDEX for none
    val_source: np.ndarray  # (M,) str: which source each came from
    counts: dict  # per source: photos for training and for validation


def prepare(sources: dict[str, PhotoSet], copies: dict[str, int], val_fraction: float, seed: int,
            n_classes: int, size: tuple[int, int], aug: PhotoAugment = PhotoAugment()) -> TrainingPhotos:
    """Split every source (stratified), make the model inputs: copies[source] of each training photo."""
    train_x, train_y, val_x, val_y, val_source, counts = [], [], [], [], [], {}
    for name, photos in sources.items():
        train_idx, val_idx = stratified_split(photos.labels, val_fraction, seed)
        x, y = model_inputs(photos.subset(train_idx), copies[name], aug, seed, size)
        vx, vy = model_inputs(photos.subset(val_idx), 1, None, seed, size)
        train_x.append(x)
        train_y.append(y)
        val_x.append(vx)
        val_y.append(vy)
        val_source += [name] * len(vy)
        counts[name] = {"train": int(len(train_idx)), "val": int(len(val_idx))}
    empty = np.zeros((0, *size), np.uint8)
    train_y_all = np.concatenate(train_y) if train_y else np.zeros(0, np.int64)
    return TrainingPhotos(np.concatenate(train_x) if train_x else empty, targets(train_y_all, n_classes),
                          np.concatenate(val_x) if val_x else empty,
                          np.concatenate(val_y) if val_y else np.zeros(0, np.int64),
                          np.array(val_source, dtype=str), counts)


def evaluate(probabilities: np.ndarray, labels: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Accuracy on in-class photos and the `unknown` shares at `threshold`. Pure.
    unknown = top score below the threshold, what `classify` reports."""
    known = labels != NONE_INDEX
    top = probabilities.max(1) if len(probabilities) else np.zeros(0)
    predicted = probabilities.argmax(1) if len(probabilities) else np.zeros(0, np.int64)

    def share(mask):
        return round(float(mask.mean()), 4) if mask.size else None
    return {"photos": int(known.sum()), "none_photos": int((~known).sum()),
            "accuracy": share(predicted[known] == labels[known]),
            "in_class_unknown": share(top[known] < threshold),
            "none_unknown": share(top[~known] < threshold)}
