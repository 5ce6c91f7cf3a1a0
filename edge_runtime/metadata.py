"""Metadata that travels with a model: labels, input spec, quantization,
preprocessing contract, accuracy, provenance.

It is stored twice:
- inside the .tflite file, as a zip archive appended after the FlatBuffer
  (the approach of TFLite's own metadata writers for associated files: the
  interpreter reads the FlatBuffer from the start of the file and ignores
  trailing bytes, while zip readers find an archive from its end);
- as a sidecar `<model>.json`, for people and tools that don't open zips.

The runtime prefers the embedded copy, so a model file copied alone to a
device still knows its labels.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from pathlib import Path

from .errors import ModelError

EMBEDDED_NAME = "fashion_edge_metadata.json"
FORMAT = "fashion-edge-metadata/1"


def sha256(data: bytes) -> str:
    """Hex SHA-256: how reports, metadata and benchmarks name a model file or FlatBuffer."""
    return hashlib.sha256(data).hexdigest()


def sidecar_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def embed(model_bytes: bytes, metadata: dict) -> bytes:
    """Return the model bytes with `metadata` appended as a zip. Pure."""
    buf = io.BytesIO(model_bytes)
    buf.seek(0, io.SEEK_END)
    # Mode "a" on bytes that are not a zip appends a new archive after them.
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(EMBEDDED_NAME, json.dumps(metadata, indent=2, sort_keys=True))
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


def read_embedded(model_path: str | Path) -> dict | None:
    """The metadata inside a .tflite file, or None when it has none."""
    def damaged(e: Exception) -> ModelError:
        return ModelError(f"{model_path}: can't read its embedded metadata ({e}); "
                          "copy the model again or reconvert it with `make convert`")
    try:
        archive = zipfile.ZipFile(model_path)
    except zipfile.BadZipFile:
        return None  # a plain FlatBuffer: no archive appended
    except (OSError, ValueError) as e:
        raise damaged(e) from e
    with archive:
        if EMBEDDED_NAME not in archive.namelist():
            return None
        try:
            return json.loads(archive.read(EMBEDDED_NAME))
        # The archive is there but its bytes are not: a bad CRC (BadZipFile), a broken
        # deflate stream (zlib.error) or text that is not JSON (ValueError).
        except (zipfile.BadZipFile, OSError, ValueError, zlib.error) as e:
            raise damaged(e) from e


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
            metadata = json.loads(sidecar.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"{sidecar}: not readable metadata JSON ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelError(f"{model_path}: metadata is not {FORMAT}; reconvert the model with `make convert`")
    for key in ("labels", "input", "output"):
        if key not in metadata:
            raise ModelError(f"{model_path}: metadata has no '{key}'; reconvert the model with `make convert`")
    _check_fields(model_path, metadata)
    return metadata
