"""Metadata that travels with a model: labels, input spec, quantization,
preprocessing contract, accuracy, provenance.

It is stored twice:
- inside the .tflite file, as a zip archive appended after the FlatBuffer
  (the approach of TFLite's own metadata writers for associated files: the
  interpreter reads the FlatBuffer from the start of the file and ignores
  trailing bytes, while zip readers find an archive from its end). The
  archive holds the metadata JSON and a plain `labels.txt`, one class name a
  line, the file other TFLite tools look for;
- as a sidecar `<model>.json`, for people and tools that don't open zips.

The runtime prefers the embedded copy, so a model file copied alone to a
device still knows its labels.

A model file is untrusted input (it arrives by copy, download or USB stick),
so every read from it is bounded before it happens: the archive's end
record is checked (member count, directory size, no zip64) before zipfile
parses anything, each member's sizes in the central directory before it is
read, and the JSON's nesting depth before it is parsed. A hostile or damaged
file costs about a millisecond and under a megabyte, and gives a one-line
ModelError (figures: tests/test_model_files.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

from .errors import ModelError

EMBEDDED_NAME = "fashion_edge_metadata.json"
LABELS_NAME = "labels.txt"
FORMAT = "fashion-edge-metadata/1"

# Limits on what a model file can make the runtime read. The converter writes two
# members (metadata 2-5 KB, labels.txt 76 bytes); each limit leaves 50x room or more.
MAX_MEMBERS = 8
MAX_MEMBER_BYTES = 256 * 1024  # one member, compressed or uncompressed, and the sidecar JSON
MAX_DIRECTORY_BYTES = 16 * 1024  # the central directory: 46 bytes + name (+ extra, comment) per member
MAX_JSON_DEPTH = 32  # the metadata nests 3-4 levels; json.loads recurses once per level
# The end of the file read to find the archive: its end record (after a comment of up to
# 64 KB) or, when there is none, the local header of a metadata member cut short.
TAIL_BYTES = MAX_MEMBER_BYTES + 128 * 1024

# End-of-central-directory record: signature, this disk, directory's disk, members on
# this disk, members, directory size, directory offset, comment length.
_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # just before the end record of a zip64 archive
_MAX_COMMENT = 0xFFFF
# The local header of our metadata member (signature, 26 bytes of fields, its name):
# found without an end record after it, the archive was cut short.
_METADATA_HEADER = re.compile(re.escape(b"PK\x03\x04") + b".{26}" + re.escape(EMBEDDED_NAME.encode()), re.DOTALL)


class End(NamedTuple):
    """What a zip end record says, before zipfile acts on it."""

    members: int
    directory_bytes: int
    zip64: bool  # zipfile would then take the sizes from a zip64 record instead


def sha256(data: bytes) -> str:
    """Hex SHA-256: how reports, metadata and benchmarks name a model file or FlatBuffer."""
    return hashlib.sha256(data).hexdigest()


def sidecar_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def embed(model_bytes: bytes, metadata: dict) -> bytes:
    """Return the model bytes with `metadata` and its labels appended as a zip. Pure."""
    buf = io.BytesIO(model_bytes)
    buf.seek(0, io.SEEK_END)
    # Mode "a" on bytes that are not a zip appends a new archive after them.
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(EMBEDDED_NAME, json.dumps(metadata, indent=2, sort_keys=True))
        archive.writestr(LABELS_NAME, "".join(f"{label}\n" for label in metadata["labels"]))
    return buf.getvalue()


def flatbuffer_part(model_bytes: bytes) -> bytes:
    """The model without any appended metadata archive (for hashing the network itself)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            # zipfile shifts header offsets by the bytes prepended to the archive,
            # so the first local header's offset is where the FlatBuffer ends.
            return model_bytes[:min(info.header_offset for info in archive.infolist())]
    except (zipfile.BadZipFile, ValueError):
        return model_bytes


def end_record(tail: bytes) -> End | None:
    """The zip end record that ends `tail`, or None when `tail` does not end with one. Pure.

    Only a record whose comment runs exactly to the end counts, so four bytes of
    weights that happen to spell the signature are not taken for one.
    """
    start = max(0, len(tail) - _END.size - _MAX_COMMENT)
    at = tail.rfind(_END_SIGNATURE, start)
    while at >= 0:
        if at + _END.size <= len(tail):
            _, _, _, _, members, directory, _, comment = _END.unpack_from(tail, at)
            if at + _END.size + comment == len(tail):
                locator = tail[max(0, at - _ZIP64_LOCATOR.size):at]
                return End(members, directory, locator.startswith(b"PK\x06\x07"))
        at = tail.rfind(_END_SIGNATURE, start, at)
    return None


def archive_problem(end: End) -> str | None:
    """What is wrong with an archive whose end record says this, before zipfile parses it. Pure."""
    if end.zip64:
        # Its own record could claim a directory of any size; the converter never writes one.
        return "its metadata archive is a zip64 archive"
    if end.members > MAX_MEMBERS:
        return f"its metadata archive lists {end.members} files (at most {MAX_MEMBERS})"
    if end.directory_bytes > MAX_DIRECTORY_BYTES:
        return f"its metadata archive's directory is {end.directory_bytes} bytes (at most {MAX_DIRECTORY_BYTES})"
    return None


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """What is wrong with one member as the central directory describes it, before it is read. Pure."""
    for what, size in (("compressed", info.compress_size), ("uncompressed", info.file_size)):
        if size > MAX_MEMBER_BYTES:
            return f"its embedded {info.filename!r} is {size} bytes {what} (at most {MAX_MEMBER_BYTES})"
    return None


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string, which may hold brackets
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in JSON `text`, counted up to limit + 1. Pure.

    Checked before json.loads, which recurses once per level and ends in a
    RecursionError (a traceback, not a message) a thousand levels down.
    """
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > limit:
            break
    return deepest


def parse_json(data: bytes, where: str) -> object:
    """Metadata JSON from at most MAX_MEMBER_BYTES of `data`, nesting checked first."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelError(f"{where}: metadata is not UTF-8 text ({e.reason}); "
                         "copy the model again or reconvert it with `make convert`") from e
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ModelError(f"{where}: metadata JSON nests deeper than {MAX_JSON_DEPTH} levels; "
                         "copy the model again or reconvert it with `make convert`")
    return json.loads(text)


def read_embedded(model_path: str | Path) -> dict | None:
    """The metadata inside a .tflite file, or None when it has none."""
    def refused(why: str) -> ModelError:
        return ModelError(f"{model_path}: {why}; copy the model again or reconvert it with `make convert`")

    try:
        with open(model_path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read(TAIL_BYTES)
            end = end_record(tail)
            if end is None:
                if _METADATA_HEADER.search(tail):
                    raise refused("its embedded metadata archive is truncated")
                return None  # a plain FlatBuffer: no archive appended
            problem = archive_problem(end)
            if problem:
                raise refused(problem)
            # From here zipfile reads the directory (size checked above), then one member
            # (sizes checked below), nothing else.
            with zipfile.ZipFile(f) as archive:
                problem = next(filter(None, map(member_problem, archive.infolist())), None)
                if problem:
                    raise refused(problem)
                if EMBEDDED_NAME not in archive.namelist():
                    return None
                with archive.open(EMBEDDED_NAME) as member:
                    # zipfile stops inflating at the directory's size and then checks the
                    # CRC, so a member that inflates to more is damaged, not a bomb.
                    data = member.read(MAX_MEMBER_BYTES)
        return parse_json(data, str(model_path))
    # The archive is there but its bytes are not: a bad CRC, header or directory offset
    # (BadZipFile), a broken deflate stream (zlib.error), an unsupported compression
    # (NotImplementedError), text that is not JSON (ValueError), a read error (OSError).
    except (zipfile.BadZipFile, OSError, ValueError, zlib.error, NotImplementedError, EOFError) as e:
        raise refused(f"can't read its embedded metadata ({e})") from e


def _check_fields(model_path: Path, metadata: dict) -> None:
    """ModelError naming the first field of the wrong type: the runtime indexes these without checks."""
    def bad(key: str, expected: str) -> ModelError:
        return ModelError(f"{model_path}: metadata field '{key}' is not {expected}; "
                          "reconvert the model with `make convert`")

    labels = metadata["labels"]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise bad("labels", "a list of class names")
    spec = metadata["input"]
    if not (isinstance(spec, dict) and isinstance(spec.get("shape"), list)
            and all(isinstance(n, int) for n in spec["shape"]) and isinstance(spec.get("dtype"), str)):
        raise bad("input", "an object with a 'shape' list of integers and a 'dtype' string")
    embedding = metadata.get("embedding", {"shape": [], "output": 1})  # optional: models converted before it
    if not (isinstance(embedding, dict) and isinstance(embedding.get("shape"), list)
            and all(isinstance(n, int) for n in embedding["shape"]) and embedding.get("output") == 1):
        raise bad("embedding", "an object with a 'shape' list of integers and 'output' 1")
    for key in ("preprocessing", "accuracy"):  # optional, but an object when present
        if key in metadata and not isinstance(metadata[key], dict):
            raise bad(key, "an object")
    if not isinstance(metadata.get("accuracy", {}).get("accuracy", 0.0), (int, float)):
        raise bad("accuracy", "an object whose 'accuracy' is a number")
    threshold = metadata.get("unknown_threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise bad("unknown_threshold", "a number from 0 to 1")


def read_metadata(model_path: str | Path) -> dict:
    """Embedded metadata if present, else the sidecar JSON; ModelError if neither."""
    model_path = Path(model_path)
    metadata = read_embedded(model_path)
    if metadata is None:
        sidecar = sidecar_path(model_path)
        if not sidecar.is_file():
            raise ModelError(f"{model_path} has no embedded metadata and no {sidecar.name} beside it; "
                             "convert it with `make convert` (python -m convert), which writes both")
        try:
            with open(sidecar, "rb") as f:
                data = f.read(MAX_MEMBER_BYTES + 1)
            if len(data) > MAX_MEMBER_BYTES:
                raise ModelError(f"{sidecar}: more than {MAX_MEMBER_BYTES} bytes, too large for metadata; "
                                 "reconvert the model with `make convert`")
            metadata = parse_json(data, str(sidecar))
        except (OSError, ValueError) as e:
            raise ModelError(f"{sidecar}: not readable metadata JSON ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelError(f"{model_path}: metadata is not {FORMAT}; reconvert the model with `make convert`")
    for key in ("labels", "input", "output"):
        if key not in metadata:
            raise ModelError(f"{model_path}: metadata has no '{key}'; reconvert the model with `make convert`")
    _check_fields(model_path, metadata)
    return metadata
