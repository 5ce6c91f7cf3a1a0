"""The offline loader: where it looks, and that it refuses anything but the real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import dataset
from edge_runtime.errors import DataError

NOWHERE = Path("/nonexistent/fashion-mnist")


def link_all(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for spec in dataset.FILES.values():
        (dst / spec.filename).symlink_to(src / spec.filename)
    return dst


def rewrite(src: Path, dst: Path, name: str, edit) -> Path:
    """Copy all four files to dst, passing the decompressed bytes of `name` through edit()."""
    link_all(src, dst)
    spec = dataset.FILES[name]
    raw = gzip.open(src / spec.filename).read()
    (dst / spec.filename).unlink()
    with gzip.open(dst / spec.filename, "wb") as f:
        f.write(edit(raw))
    return dst


def test_loads_real_files_with_expected_shapes(fashion, data_dir):
    assert fashion.train_images.shape == (60000, 28, 28) and fashion.train_images.dtype == np.uint8
    assert fashion.test_images.shape == (10000, 28, 28)
    assert fashion.train_labels.shape == (60000,) and fashion.test_labels.shape == (10000,)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert fashion.source == data_dir


def test_explicit_dir_wins(tmp_path, data_dir):
    d = link_all(data_dir, tmp_path / "mine")
    assert dataset.find_data_dir(d, environ={}, home=tmp_path, system_dir=NOWHERE) == d


def test_env_var(tmp_path, data_dir):
    d = link_all(data_dir, tmp_path / "env")
    assert dataset.find_data_dir(environ={dataset.ENV_VAR: str(d)}, home=tmp_path, system_dir=NOWHERE) == d


def test_system_dir_before_keras_cache(tmp_path, data_dir):
    system = link_all(data_dir, tmp_path / "system")
    link_all(data_dir, tmp_path / "home" / dataset.KERAS_SUBDIR)
    assert dataset.find_data_dir(environ={}, home=tmp_path / "home", system_dir=system) == system


def test_keras_cache(tmp_path, data_dir):
    cache = link_all(data_dir, tmp_path / dataset.KERAS_SUBDIR)
    assert dataset.find_data_dir(environ={}, home=tmp_path, system_dir=NOWHERE) == cache


def test_missing_explicit_dir_names_path_and_fix(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope.*does not exist.*apt-get install dataset-fashion-mnist"):
        dataset.find_data_dir(missing, environ={}, home=tmp_path, system_dir=NOWHERE)


def test_explicit_dir_missing_a_file(tmp_path, data_dir):
    d = link_all(data_dir, tmp_path / "partial")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz"):
        dataset.find_data_dir(d, environ={}, home=tmp_path, system_dir=NOWHERE)


def test_nothing_anywhere_lists_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=f"looked in {NOWHERE}, {tmp_path}"):
        dataset.load(environ={}, home=tmp_path, system_dir=NOWHERE)


def test_decompressed_files_are_accepted(tmp_path, data_dir):
    d = tmp_path / "plain"
    d.mkdir()
    for spec in dataset.FILES.values():
        (d / spec.filename.removesuffix(".gz")).write_bytes(gzip.open(data_dir / spec.filename).read())
    ds = dataset.load(d)
    assert ds.test_images.shape == (10000, 28, 28)


def test_truncated_gzip(tmp_path, data_dir):
    link_all(data_dir, tmp_path / "t")
    path = tmp_path / "t" / "t10k-images-idx3-ubyte.gz"
    data = (data_dir / path.name).read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: can't decompress.*truncated"):
        dataset.load(tmp_path / "t")


def test_truncated_content(tmp_path, data_dir):
    d = rewrite(data_dir, tmp_path / "t", "test_images", lambda raw: raw[:-784])
    with pytest.raises(DataError, match="7839232 bytes of data, expected 7840016"):
        dataset.load(d)


def test_wrong_magic(tmp_path, data_dir):
    d = rewrite(data_dir, tmp_path / "m", "train_labels", lambda raw: (0x803).to_bytes(4, "big") + raw[4:])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: magic number 0x00000803, expected 0x00000801"):
        dataset.load(d)


def test_wrong_count(tmp_path, data_dir):
    d = rewrite(data_dir, tmp_path / "c", "test_labels", lambda raw: raw[:4] + (9999).to_bytes(4, "big") + raw[8:-1])
    with pytest.raises(DataError, match="header says 9999 items, expected 10000"):
        dataset.load(d)


def test_wrong_dimensions(tmp_path, data_dir):
    d = rewrite(data_dir, tmp_path / "d", "test_images", lambda raw: raw[:8] + (32).to_bytes(4, "big") + raw[12:])
    with pytest.raises(DataError, match=r"images are \(32, 28\), expected \(28, 28\)"):
        dataset.load(d)


def test_label_out_of_range(tmp_path, data_dir):
    d = rewrite(data_dir, tmp_path / "l", "test_labels", lambda raw: raw[:-1] + bytes([10]))
    with pytest.raises(DataError, match="label 10 is outside 0..9"):
        dataset.load(d)


def test_changed_pixel_fails_checksum(tmp_path, data_dir):
    d = rewrite(data_dir, tmp_path / "p", "test_images", lambda raw: raw[:-1] + bytes([(raw[-1] + 1) % 256]))
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        dataset.load(d)
