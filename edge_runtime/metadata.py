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
    try:
        with zipfile.ZipFile(model_path) as archive:
            return json.loads(archive.read(EMBEDDED_NAME))
    except (zipfile.BadZipFile, KeyError):
        return None
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_path}: can't read its embedded metadata ({e})") from e


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
    return metadata
