"""A model file is untrusted input: crafted and damaged files give a one-line
ModelError quickly, with little memory, because every read is bounded before
it happens (edge_runtime/metadata.py)."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from edge_runtime import metadata
from edge_runtime.contract import CLASS_NAMES, CONTRACT
from edge_runtime.errors import ModelError

# A stand-in FlatBuffer: the metadata reader never looks inside it. 300 KB, about a real int8 model.
FLATBUFFER = b"\x1c\x00\x00\x00TFL3" + np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
META = {"format": metadata.FORMAT, "labels": list(CLASS_NAMES),
        "input": {"shape": [1, 28, 28, 1], "dtype": "uint8"}, "output": {"shape": [1, 10], "dtype": "uint8"},
        "preprocessing": {"contract": CONTRACT}}

# What a crafted file may cost, measured in a fresh process (tests/test_model_files.py::measured).
# Each takes about 1 ms and no measurable memory; without the bounds the 512 MiB member took 9-12 s and 1 GB.
MAX_SECONDS = 0.25
MAX_GROWTH_MB = 8


def archive(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    """FLATBUFFER with `members` appended as a zip, the way metadata.embed appends one."""
    buf = io.BytesIO(FLATBUFFER)
    buf.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buf, "a", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def bomb(size: int) -> bytes:
    """A metadata member of a few hundred KB that inflates to `size` bytes of valid-looking JSON."""
    buf = io.BytesIO(FLATBUFFER)
    buf.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as z, z.open(metadata.EMBEDDED_NAME, "w") as f:
        f.write(b'{"format": "fashion-edge-metadata/1", "pad": "')
        for _ in range(size >> 20):
            f.write(b" " * (1 << 20))
        f.write(b'"}')
    return buf.getvalue()


def lying_bomb() -> bytes:
    """A 64 MiB member whose central directory claims it is 5,000 bytes."""
    data = bytearray(bomb(64 << 20))
    # The central directory entry: signature, 16 bytes of fields, compressed size, uncompressed size.
    entry = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, entry + 24, 5000)
    return bytes(data)


def many_members(n: int) -> bytes:
    return archive({metadata.EMBEDDED_NAME: json.dumps(META).encode(), **{f"{i}": b"" for i in range(n)}},
                   compression=zipfile.ZIP_STORED)


def deep_json(levels: int) -> bytes:
    nested = "[" * levels + "]" * levels
    return archive({metadata.EMBEDDED_NAME: json.dumps(META)[:-1].encode() + f', "x": {nested}}}'.encode()})


def truncated(fraction: float) -> bytes:
    """A converted model cut inside its archive (a copy that stopped early)."""
    whole = metadata.embed(FLATBUFFER, META)
    return whole[:len(FLATBUFFER) + int((len(whole) - len(FLATBUFFER)) * fraction)]


def with_end_record(field: int, value: int) -> bytes:
    """A converted model whose end record's `field` (struct offset from the record's start) is `value`."""
    data = bytearray(metadata.embed(FLATBUFFER, META))
    struct.pack_into("<I", data, len(data) - 22 + field, value)
    return bytes(data)


def zip64() -> bytes:
    """A converted model with a zip64 locator before its end record: zipfile would then take
    the directory's size and place from a zip64 record, which could claim anything."""
    data = metadata.embed(FLATBUFFER, META)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(data) - 22 - 56, 1)
    return data[:-22] + locator + data[-22:]


CRAFTED = {
    # name: (file bytes, what the one-line error says)
    "512 MiB metadata member": (lambda: bomb(512 << 20), r"is \d+ bytes compressed \(at most 262144\)"),
    "200 MiB member, honest sizes": (lambda: bomb(200 << 20), r"is \d+ bytes uncompressed \(at most 262144\)"),
    "64 MiB member, directory claims 5 KB": (lying_bomb, r"can't read its embedded metadata \(.*\)"),
    "60,000 members": (lambda: many_members(60_000), r"metadata archive lists 60001 files \(at most 8\)"),
    "9 members": (lambda: many_members(8), r"metadata archive lists 9 files \(at most 8\)"),
    "JSON nested 100,000 deep": (lambda: deep_json(100_000), r"metadata JSON nests deeper than 32 levels"),
    "JSON nested 33 deep": (lambda: deep_json(32), r"metadata JSON nests deeper than 32 levels"),
    "archive cut in its metadata": (lambda: truncated(0.3), r"embedded metadata archive is truncated"),
    "archive cut in its directory": (lambda: truncated(0.95), r"embedded metadata archive is truncated"),
    "archive cut in its end record": (lambda: truncated(0.995), r"embedded metadata archive is truncated"),
    "directory offset past the file": (lambda: with_end_record(16, 2 << 30), r"can't read its embedded metadata \("),
    "directory of 2 GiB": (lambda: with_end_record(12, 2 << 30),
                           r"archive's directory is 2147483648 bytes \(at most 16384\)"),
    "zip64 locator": (zip64, r"metadata archive is a zip64 archive"),
}

MEASURE = """
import json, resource, sys, time
from edge_runtime import metadata
from edge_runtime.errors import ModelError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    metadata.read_metadata(sys.argv[1])
    error = None
except ModelError as e:
    error = str(e)
seconds = time.perf_counter() - start
growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # Linux: KB
print(json.dumps({"seconds": seconds, "growth_mb": growth_kb / 1024, "error": error}))
"""


def measured(path) -> dict:
    """read_metadata(path) in a fresh process: seconds, peak memory growth (MB), the ModelError or None.

    A fresh process, because peak RSS only ever grows: in pytest's process an
    earlier test's peak would hide this one's."""
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_file_is_one_line_error_quickly_with_little_memory(name, tmp_path):
    make, message = CRAFTED[name]
    path = tmp_path / "crafted.tflite"
    path.write_bytes(make())
    figures = measured(path)
    assert figures["error"] is not None, f"{name}: read without error"
    assert "\n" not in figures["error"] and figures["error"].startswith(str(path))
    assert re.search(message, figures["error"]), figures["error"]
    assert figures["seconds"] < MAX_SECONDS, figures
    assert figures["growth_mb"] < MAX_GROWTH_MB, figures


def test_a_real_archive_reads_quickly_with_little_memory(tmp_path):
    """The baseline the crafted files are held to: a good model's metadata, behind a
    FlatBuffer larger than the end of the file that is searched (MiniVGGNet's int8 is 1.7 MB)."""
    path = tmp_path / "good.tflite"
    path.write_bytes(metadata.embed(FLATBUFFER * 7, META))
    figures = measured(path)
    assert figures["error"] is None
    assert figures["seconds"] < MAX_SECONDS and figures["growth_mb"] < MAX_GROWTH_MB, figures


def test_oversized_and_deep_sidecars(tmp_path):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(FLATBUFFER)
    metadata.sidecar_path(bare).write_text(json.dumps({**META, "pad": " " * (10 << 20)}))
    with pytest.raises(ModelError, match=r"bare.json: more than 262144 bytes, too large for metadata"):
        metadata.read_metadata(bare)
    metadata.sidecar_path(bare).write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ModelError, match=r"bare.json: metadata JSON nests deeper than 32 levels"):
        metadata.read_metadata(bare)


def test_cli_gives_one_line_for_a_crafted_file(tmp_path):
    path = tmp_path / "bomb.tflite"
    path.write_bytes(bomb(512 << 20))
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "info", "--model", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0
    assert "bytes compressed (at most 262144)" in r.stderr


def test_embedded_archive_holds_metadata_and_a_plain_labels_txt():
    data = metadata.embed(FLATBUFFER, META)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist() == [metadata.EMBEDDED_NAME, metadata.LABELS_NAME]
        assert z.read(metadata.LABELS_NAME).decode().splitlines() == list(CLASS_NAMES)
        assert json.loads(z.read(metadata.EMBEDDED_NAME)) == META
    assert metadata.flatbuffer_part(data) == FLATBUFFER


def test_end_record_by_hand():
    data = metadata.embed(b"x" * 100, META)
    end = metadata.end_record(data)
    assert end.members == 2 and 0 < end.directory_bytes < 200 and not end.zip64
    assert metadata.end_record(zip64()).zip64
    assert metadata.end_record(FLATBUFFER) is None
    # The signature inside the data, not at the end: not an end record.
    assert metadata.end_record(b"PK\x05\x06" + bytes(40)) is None
    # A zip comment after the record is allowed, as zip readers allow it.
    commented = bytearray(data)
    commented[-2:] = struct.pack("<H", 5)
    assert metadata.end_record(bytes(commented) + b"hello") == end


def test_archive_and_member_problems_by_hand():
    End = metadata.End
    assert metadata.archive_problem(End(2, 200, False)) is None
    assert metadata.archive_problem(End(9, 200, False)) == "its metadata archive lists 9 files (at most 8)"
    assert "directory is 20000 bytes" in metadata.archive_problem(End(2, 20000, False))
    assert "zip64" in metadata.archive_problem(End(2, 200, True))
    info = zipfile.ZipInfo("a.json")
    info.compress_size, info.file_size = 1000, 300_000
    assert metadata.member_problem(info) == "its embedded 'a.json' is 300000 bytes uncompressed (at most 262144)"
    info.file_size = 5000
    assert metadata.member_problem(info) is None


@pytest.mark.parametrize("text,depth", [
    ("{}", 1), ("1", 0), ('{"a": [1, {"b": 2}]}', 3), ('{"a": "[[[[{{"}', 1), ('["\\"[[", [[]]]', 3),
    ("[" * 40 + "]" * 40, 33),  # counting stops one past the limit
])
def test_json_depth_by_hand(text, depth):
    assert metadata.json_depth(text) == depth
