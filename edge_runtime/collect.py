"""Saving labelled camera frames: a user's own photos, in the layout training
reads (`python -m train --photos DIR`: one folder per class name).

    <collect dir>/Sneaker/20261206-101502-123456.jpg
    <collect dir>/T-shirt_top/...        (a '/' can't be in a folder name)
    <collect dir>/none/...               (something that is none of the classes)

Both the webcam window (a key per class) and the web view (a button per
class) save through `save_frame`.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import UsageError

NONE = "none"  # a frame of something that is none of the model's classes
JPEG_QUALITY = 92


def class_folder(label: str) -> str:
    """The folder a class's photos go in: its name with anything but letters, digits,
    '-' and ' ' replaced by '_' ('T-shirt/top' -> 'T-shirt_top'). Pure."""
    return re.sub(r"[^A-Za-z0-9 -]", "_", label).strip() or "_"


def frame_name(now: datetime) -> str:
    """'20261206-101502-123456.jpg': sorts by time, unique at a frame's pace. Pure."""
    return now.strftime("%Y%m%d-%H%M%S-%f") + ".jpg"


def save_frame(collect_dir: Path, label: str, labels: list[str], frame: np.ndarray,
               now: datetime | None = None) -> Path:
    """Write `frame` (BGR uint8) as a JPEG under collect_dir/<class folder>/, atomically.

    `label` must be one of the model's `labels` or 'none' (UsageError otherwise),
    so nothing a caller sends can name a path.
    """
    import cv2

    from .atomic import write_bytes
    if label not in labels and label != NONE:
        raise UsageError(f"unknown label {label!r}; one of {', '.join(labels)} or {NONE}")
    folder = Path(collect_dir) / class_folder(label)
    folder.mkdir(parents=True, exist_ok=True)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise UsageError("this frame can't be encoded as JPEG")
    path = folder / frame_name(now or datetime.now())
    write_bytes(path, jpeg.tobytes())
    return path
