"""A user's own photos on the device: weight imprinting in numpy, no TensorFlow.

    own = imprint.from_folder("my-photos", clf)   # my-photos/<Class>/*.jpg, `none` allowed
    clf.own = own                                 # classify() now mixes in the own photos

Each own photo goes through the same `photo_to_input` and the model, which
gives its embedding (the model's output 1: the features its last layer
reads). Embeddings are L2-normalised; a class's prototype is the normalised
mean of its photos' embeddings (weight imprinting, Qi et al., CVPR 2018, as
pycoral's ImprintingEngine does on a Coral). For a new image with
embedding e and model probabilities p, each class with a prototype gets a
log-linear boost by its cosine similarity (a product of the model and a
cosine classifier):

    p'[c] ∝ p[c] * exp(boost * cos(e, proto_c))   (classes without own photos: p[c])

The model's ranking of the classes without own photos is unchanged; among
the ones with photos, the closer prototype wins more. Photos of `none`
(something that is none of the classes) make a prototype too, entered with
the model share of a class among C (1/C): the probability it takes leaves
every class, so the top score drops and the image turns `unknown` under the
threshold. `boost` was chosen by measurement (docs/own-photos.md): larger
values gain more on a source the model never saw, and cost accuracy on
sources it knows and its `unknown` answers for things that are no class.

The embeddings are saved beside the photos in `imprint.json` (IMPRINT_FILE),
keyed by each photo's SHA-256, so a restart embeds only new photos. The
file is untrusted input like a model file: its size and nesting are
bounded before parsing, every field is checked, and one made for another
model is never used (ImprintError, one line, unless the photos are there
to imprint again).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .collect import NONE, class_folder
from .errors import ImageError, ImprintError
from .metadata import json_depth

IMPRINT_FILE = "imprint.json"
FORMAT = "fashion-edge-imprint/1"
MAX_FILE_BYTES = 8 * 1024 * 1024  # ~25,000 photos' embeddings; 30 photos take ~30 KB
MAX_JSON_DEPTH = 8  # the file nests 4 levels
MAX_PHOTOS = 10_000  # per folder; at ~620 bytes a photo their file stays under MAX_FILE_BYTES


@dataclass(frozen=True)
class MixSettings:
    """How much the own photos count: measured in docs/own-photos.md (`python -m tools.own_photos`)."""

    boost: float = 2.0  # log-probability added per unit of cosine similarity to a class's prototype


# -- pure maths on arrays --------------------------------------------------------------

def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of `x` (N, E) scaled to unit L2 length; an all-zero row stays zero. Pure."""
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def prototypes(embeddings: np.ndarray, classes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(K,) class indices that have embeddings, and their (K, E) prototypes: the normalised
    mean of each class's normalised embeddings. `classes` (N,) are indices in 0..n_classes
    (n_classes itself is `none`). Pure."""
    embeddings = normalize(embeddings)
    classes = np.asarray(classes, np.int64)
    present = np.unique(classes[(classes >= 0) & (classes <= n_classes)])
    means = np.stack([embeddings[classes == c].mean(axis=0) for c in present]) if len(present) else \
        np.zeros((0, embeddings.shape[-1]), np.float32)
    return present, normalize(means)


def mix(probabilities: np.ndarray, embeddings: np.ndarray, classes: np.ndarray, protos: np.ndarray,
        settings: MixSettings = MixSettings()) -> np.ndarray:
    """The model's probabilities (N, C) with the own photos' prototypes mixed in (module docstring).

    embeddings (N, E) raw from the model; classes (K,) and protos (K, E) from `prototypes`,
    where class index C means `none`. Pure.
    """
    p = np.asarray(probabilities, np.float32)
    if len(classes) == 0:
        return p
    n, n_classes = p.shape
    # log p, with a `none` column at the share of one class among C; 1e-6 keeps log finite
    log_p = np.log(np.maximum(np.concatenate([p, np.full((n, 1), 1.0 / n_classes, np.float32)], axis=1), 1e-6))
    if not (classes == n_classes).any():
        log_p[:, n_classes] = -np.inf  # no `none` photos: no `none` column
    log_p[:, classes] += settings.boost * (normalize(embeddings) @ protos.T)
    out = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    out /= out.sum(axis=1, keepdims=True)
    return out[:, :n_classes]  # the `none` share leaves every class


# -- the imprint: own photos' embeddings for one model -----------------------------------

@dataclass
class Photo:
    file: str  # relative to the folder, '/'-separated: 'Sneaker/20261206-101502-123456.jpg'
    label: str  # a model label or `none`
    sha256: str
    embedding: np.ndarray  # (E,) float32, raw from the model


@dataclass
class Imprint:
    labels: list[str]  # the model's labels; `none` is index len(labels)
    model_sha256: str  # the FlatBuffer the embeddings came from
    photos: list[Photo] = field(default_factory=list)
    settings: MixSettings = MixSettings()
    skipped: list[str] = field(default_factory=list)  # why photos or folders were left out, for notes

    def __post_init__(self):
        self._prototypes = None

    def class_index(self, label: str) -> int:
        return len(self.labels) if label == NONE else self.labels.index(label)

    def counts(self) -> dict[str, int]:
        """Own photos per label, every model label and `none` listed."""
        out = dict.fromkeys([*self.labels, NONE], 0)
        for p in self.photos:
            out[p.label] += 1
        return out

    def add(self, photo: Photo) -> None:
        self.photos.append(photo)
        self._prototypes = None

    def forget(self, label: str) -> list[Photo]:
        """Drop every own photo of `label`; returns them (the caller moves their files)."""
        gone = [p for p in self.photos if p.label == label]
        self.photos = [p for p in self.photos if p.label != label]
        self._prototypes = None
        return gone

    def prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        if self._prototypes is None:
            if self.photos:
                emb = np.stack([p.embedding for p in self.photos])
                cls = np.array([self.class_index(p.label) for p in self.photos])
                self._prototypes = prototypes(emb, cls, len(self.labels))
            else:
                self._prototypes = (np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        return self._prototypes

    def mix(self, probabilities: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        classes, protos = self.prototypes()
        return mix(np.atleast_2d(probabilities), np.atleast_2d(embeddings), classes, protos, self.settings)

    def to_json(self) -> dict:
        return {"format": FORMAT, "model_sha256": self.model_sha256, "labels": self.labels,
                "embedding_size": int(self.photos[0].embedding.shape[0]) if self.photos else 0,
                "settings": asdict(self.settings),
                "photos": [{"file": p.file, "label": p.label, "sha256": p.sha256,
                            "embedding": [round(float(v), 5) for v in p.embedding]} for p in self.photos]}


def model_identity(clf) -> str:
    """What an imprint is tied to: the model's FlatBuffer SHA-256 from its metadata."""
    return str(clf.metadata.get("flatbuffer_sha256") or "")


# -- the imprint file --------------------------------------------------------------------

def parse(data: bytes, where: str, labels: list[str], embedding_size: int) -> tuple[str, list[Photo]]:
    """(model SHA-256, photos) from an imprint file's bytes, every field checked. Pure.

    Raises ImprintError with one line saying what is wrong and what to do.
    """
    def bad(why: str) -> ImprintError:
        return ImprintError(f"{where}: {why}; delete it to imprint the photos again")

    if len(data) > MAX_FILE_BYTES:
        raise bad(f"{len(data):,} bytes, more than the {MAX_FILE_BYTES:,} an imprint file may have")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise bad(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise bad(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise bad(f"not an imprint file of this runtime (format {found!r}, expected {FORMAT!r})")
    sha, photos = doc.get("model_sha256"), doc.get("photos")
    if not isinstance(sha, str) or not isinstance(photos, list) or doc.get("labels") != labels:
        raise bad("its model, labels or photo list is missing or not this model's")
    if len(photos) > MAX_PHOTOS:
        raise bad(f"{len(photos):,} photos, more than {MAX_PHOTOS:,}")
    out = []
    for i, p in enumerate(photos):
        if not isinstance(p, dict):
            raise bad(f"photo {i} is not an object")
        file, label, digest, emb = p.get("file"), p.get("label"), p.get("sha256"), p.get("embedding")
        if not (isinstance(file, str) and isinstance(digest, str) and len(digest) == 64):
            raise bad(f"photo {i} has no file name or SHA-256")
        if label not in labels and label != NONE:
            raise bad(f"photo {i} has label {label!r}, not one of the model's")
        if not (isinstance(emb, list) and len(emb) == embedding_size
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in emb)):
            raise bad(f"photo {i}'s embedding is not {embedding_size} finite numbers")
        out.append(Photo(file, label, digest, np.asarray(emb, np.float32)))
    return sha, out


def save(imprint: Imprint, folder: str | os.PathLike) -> Path:
    """Write folder/imprint.json atomically; returns its path."""
    from .atomic import write_bytes
    path = Path(folder) / IMPRINT_FILE
    write_bytes(path, json.dumps(imprint.to_json(), separators=(",", ":")).encode())
    return path


# -- a folder of own photos --------------------------------------------------------------

def photo_files(folder: Path, labels: list[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """(label, path) of every image in folder/<class folder>/, sorted, and notes on what was
    left out (folders that name no class). Hidden files and folders are skipped."""
    from .imageio import is_image_name
    by_folder = {class_folder(label): label for label in [*labels, NONE]}
    found, notes = [], []
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        label = by_folder.get(sub.name)
        if label is None:
            notes.append(f"{sub.name}/: not a class of this model (folders: {', '.join(by_folder)})")
            continue
        found += [(label, f) for f in sorted(sub.iterdir())
                  if f.is_file() and not f.name.startswith(".") and is_image_name(f)]
    if len(found) > MAX_PHOTOS:
        raise ImprintError(f"{folder}: {len(found):,} photos, more than the {MAX_PHOTOS:,} an imprint takes")
    return found, notes


def read_photo(path: str | os.PathLike, known=frozenset()) -> tuple[str, np.ndarray | None]:
    """(SHA-256 of the file, decoded image) of one own photo, read once as `classify` reads a file
    (bounded, decoded at the size photo_to_input works at); the image is None when the SHA-256 is
    in `known` (its embedding is cached). ImageError with one line for a bad file."""
    from .imageio import decode, display_path, read_bytes
    from .photo import WORK_SIDE
    data = read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    return digest, None if digest in known else decode(data, display_path(path), working_side=WORK_SIDE)


def embed_photos(clf, images: list[np.ndarray]) -> np.ndarray:
    """(N, E) embeddings of decoded photos, through the same photo_to_input as classify()."""
    from .photo import photo_to_input
    if not images:
        return np.zeros((0, clf.embedding.shape[-1]), np.float32)
    inputs = np.stack([photo_to_input(image, clf.input_size) for image in images])
    return clf.predict_with_embedding(inputs)[1]


def from_folder(folder: str | os.PathLike, clf, settings: MixSettings = MixSettings(), write: bool = True) -> Imprint:
    """The imprint of folder's own photos for `clf`'s model; saves folder/imprint.json when it changed.

    Photos already in a valid imprint file for this model are not embedded again. A
    folder with no photos but an imprint file uses the file, if it was made for this model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImprintError(f"--own {folder}: not a folder; it holds one folder per class, e.g. "
                           f"{folder}/Sneaker/*.jpg (webcam or serve --collect {folder} makes it)")
    if clf.embedding is None:
        raise ImprintError(f"{clf.model_path}: this model has no embedding output, so it can't learn own "
                           "photos; reconvert it with this project's converter (make convert)")
    identity = model_identity(clf)
    size = int(clf.embedding.shape[-1])
    imprint = Imprint(list(clf.labels), identity, settings=settings)
    cached: dict[str, Photo] = {}
    file = folder / IMPRINT_FILE
    if file.is_file():
        sha, saved = parse(file.read_bytes()[:MAX_FILE_BYTES + 1], str(file), list(clf.labels), size)
        if sha == identity:
            cached = {p.sha256: p for p in saved}
        elif not any(folder.iterdir()) or saved and not photo_files(folder, clf.labels)[0]:
            raise ImprintError(f"{file}: made for another model (FlatBuffer {sha[:12]}, this one {identity[:12]}) "
                               "and its photos are gone; collect own photos again for this model")
        else:
            imprint.skipped.append(f"{IMPRINT_FILE}: made for another model; imprinting the photos again")
    files, notes = photo_files(folder, clf.labels)
    imprint.skipped += notes
    if not files and cached:  # the imprint file alone: its photos were moved away
        for p in cached.values():
            imprint.add(p)
        return imprint
    todo, images = [], []
    for label, path in files:
        rel = f"{path.parent.name}/{path.name}"
        try:
            digest, image = read_photo(path, cached.keys())
        except ImageError as e:
            imprint.skipped.append(str(e))
            continue
        if image is None:
            imprint.add(Photo(rel, label, digest, cached[digest].embedding))
            continue
        images.append(image)
        todo.append((rel, label, digest))
    for (rel, label, digest), emb in zip(todo, embed_photos(clf, images)):
        imprint.add(Photo(rel, label, digest, emb))
    changed = bool(todo) or len(imprint.photos) != len(cached)
    if write and changed:
        try:
            save(imprint, folder)
        except OSError as e:
            imprint.skipped.append(f"{file}: not saved ({e.strerror}); the photos are imprinted again next time")
    return imprint
