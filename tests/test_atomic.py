"""Atomic writes: an interrupted write leaves the previous file intact and no partial file behind."""

from __future__ import annotations

import os

import pytest

from edge_runtime import atomic


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"good model")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a mod")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"good model"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_successful_write_replaces(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic.write_text(target, "{}")
    atomic.write_text(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    assert os.listdir(target.parent) == ["report.json"]


def test_keep_suffix_for_writers_that_need_it(tmp_path):
    with atomic.atomic_path(tmp_path / "model.keras", keep_suffix=True) as tmp:
        assert tmp.suffix == ".keras" and tmp.name.startswith(".")
        tmp.write_bytes(b"x")
    assert (tmp_path / "model.keras").read_bytes() == b"x"


def test_replace_symlink(tmp_path):
    atomic.replace_symlink(tmp_path / "latest", "run-a")
    atomic.replace_symlink(tmp_path / "latest", "run-b")
    assert os.readlink(tmp_path / "latest") == "run-b"
