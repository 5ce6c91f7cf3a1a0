"""Offline Fashion-MNIST: read the four original IDX files with numpy alone.

`keras.datasets.fashion_mnist.load_data()` downloads from the internet, which
CI machines, build servers and a Pi in a shop often don't have. We look for
the original gzipped IDX files in this order and use the first directory that
has them:

1. the `data_dir` argument (`--data_dir`) or the FASHION_MNIST_DIR variable;
2. /usr/share/datasets/fashion-mnist/ (Debian's `dataset-fashion-mnist`);
3. ~/.keras/datasets/fashion-mnist/ (where an earlier Keras download went);
4. only if the caller allows it, Keras' own download into (3).

Every file is checked (magic number, dimensions, count, length, label range,
and a SHA-256 of the decompressed bytes), so we never train on partial data.
The checksums are of the decompressed content because Debian re-gzipped the
files: the .gz bytes differ from upstream's while the content is identical.

This module lives on the runtime side (numpy only) so a device can evaluate
on the test set too; the Keras download is imported only when asked for.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

ENV_VAR = "FASHION_MNIST_DIR"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_SUBDIR = Path(".keras/datasets/fashion-mnist")


@dataclass(frozen=True)
class IdxSpec:
    """What one of the four files must contain."""

    filename: str  # name of the gzipped file
    magic: int  # 0x801 labels (ubyte, 1 dim), 0x803 images (ubyte, 3 dims)
    shape: tuple[int, ...]  # (count,) or (count, 28, 28)
    sha256: str  # of the decompressed file, header included


FILES = {
    "train_images": IdxSpec(
        "train-images-idx3-ubyte.gz", 0x803, (60000, 28, 28),
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": IdxSpec(
        "train-labels-idx1-ubyte.gz", 0x801, (60000,),
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": IdxSpec(
        "t10k-images-idx3-ubyte.gz", 0x803, (10000, 28, 28),
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": IdxSpec(
        "t10k-labels-idx1-ubyte.gz", 0x801, (10000,),
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}

NUM_CLASSES = 10

HOW_TO_GET = (
    "install Debian's package (sudo apt-get install dataset-fashion-mnist, or `make data`), "
    f"or put the four IDX .gz files in a directory and pass --data_dir DIR or set {ENV_VAR}"
)


@dataclass(frozen=True)
class FashionMnist:
    """The dataset in memory. Images are uint8 (N, 28, 28), labels uint8 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path  # the directory the files came from


def candidate_dirs(data_dir: str | os.PathLike | None = None,
                   environ: dict | None = None,
                   home: Path | None = None,
                   system_dir: Path = SYSTEM_DIR) -> list[tuple[str, Path]]:
    """The directories to look in, in order, each with why it is on the list.

    An explicit directory (argument, then environment variable) is the only
    candidate when given: if a user points us somewhere, silently reading
    other data instead would hide their mistake.
    """
    environ = os.environ if environ is None else environ
    if data_dir is not None:
        return [("--data_dir", Path(data_dir))]
    if environ.get(ENV_VAR):
        return [(ENV_VAR, Path(environ[ENV_VAR]))]
    home = Path.home() if home is None else home
    return [("Debian package", Path(system_dir)), ("Keras cache", home / KERAS_SUBDIR)]


def has_all_files(directory: Path) -> bool:
    return all(file_in(directory, spec) is not None for spec in FILES.values())


def file_in(directory: Path, spec: IdxSpec) -> Path | None:
    # Accept the gzipped original and its decompressed form (people gunzip them).
    for name in (spec.filename, spec.filename.removesuffix(".gz")):
        path = directory / name
        if path.is_file():
            return path
    return None


def find_data_dir(data_dir=None, environ=None, home=None, system_dir: Path = SYSTEM_DIR) -> Path:
    """The first candidate directory holding all four files, or DataError saying what to do."""
    candidates = candidate_dirs(data_dir, environ, home, system_dir)
    for why, directory in candidates:
        if has_all_files(directory):
            return directory
        if why in ("--data_dir", ENV_VAR):
            if not directory.is_dir():
                raise DataError(f"Fashion-MNIST directory {directory} (from {why}) does not exist; {HOW_TO_GET}")
            missing = [s.filename for s in FILES.values() if file_in(directory, s) is None]
            raise DataError(f"{directory} (from {why}) is missing {', '.join(missing)}; {HOW_TO_GET}")
    looked = ", ".join(str(d) for _, d in candidates)
    raise DataError(f"Fashion-MNIST not found (looked in {looked}); {HOW_TO_GET}")


def read_idx(path: Path, spec: IdxSpec, verify_checksum: bool = True) -> np.ndarray:
    """Read one IDX file (gzipped or not) and check it against `spec`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        # gzip raises EOFError for a truncated stream, BadGzipFile (an OSError) for non-gzip bytes.
        raise DataError(f"{path}: can't decompress ({e}); the file is truncated or corrupt, get it again") from e

    ndim = len(spec.shape)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX header; the file is truncated")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != spec.magic:
        raise DataError(f"{path}: magic number 0x{magic:08x}, expected 0x{spec.magic:08x}; "
                        "this is not the Fashion-MNIST file of that name")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != spec.shape[1:]:
        raise DataError(f"{path}: images are {dims[1:]}, expected {spec.shape[1:]}")
    if dims[0] != spec.shape[0]:
        raise DataError(f"{path}: header says {dims[0]} items, expected {spec.shape[0]}")
    expected_len = header_len + int(np.prod(spec.shape))
    if len(raw) != expected_len:
        raise DataError(f"{path}: {len(raw)} bytes of data, expected {expected_len}; "
                        "the file is truncated or has trailing bytes, get it again")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(spec.shape)
    if ndim == 1 and array.max() >= NUM_CLASSES:
        raise DataError(f"{path}: label {int(array.max())} is outside 0..{NUM_CLASSES - 1}")
    # Last, the catch-all: any other difference from the published bytes.
    if verify_checksum and hashlib.sha256(raw).hexdigest() != spec.sha256:
        raise DataError(f"{path}: content differs from the published Fashion-MNIST (SHA-256 mismatch); get it again")
    return array


def load(data_dir=None, allow_download: bool = False, verify_checksum: bool = True,
         environ=None, home=None, system_dir: Path = SYSTEM_DIR) -> FashionMnist:
    """Load and check all four files from the first place that has them."""
    try:
        directory = find_data_dir(data_dir, environ, home, system_dir)
    except DataError:
        if not allow_download or data_dir is not None:
            raise
        directory = _download_with_keras()
    arrays = {name: read_idx(file_in(directory, spec), spec, verify_checksum) for name, spec in FILES.items()}
    return FashionMnist(**arrays, source=directory)


def _download_with_keras() -> Path:
    """Last resort on a workstation with internet: Keras fetches into its cache."""
    try:
        import keras  # heavy, and only ever needed here
        keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # no Keras, no network, a proxy: all mean the same to the user
        raise DataError(f"Fashion-MNIST not found locally and the Keras download failed ({e}); {HOW_TO_GET}") from e
    return Path.home() / KERAS_SUBDIR


def stratified_indices(labels: np.ndarray, per_class, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held, rest): `per_class` indices of every class held out, sorted, and the
    others in a shuffled order. `per_class` is a count, or a function of a class's
    size giving its count. Pure given the seed. Training's validation split, the
    photos' split and the converter's calibration sample all come from here."""
    rng = np.random.default_rng(seed)
    held, rest = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = per_class(len(idx)) if callable(per_class) else per_class
        held.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(held)), rng.permutation(np.concatenate(rest))
