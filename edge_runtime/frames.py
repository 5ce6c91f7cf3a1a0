"""Camera frames to classifications: the region of interest, smoothing, the
frame rate, and the loop body shared by `webcam` (window, headless JSON lines)
and `serve` (the web view). Pure functions on arrays, tested directly; the
camera itself is `capture`, the commands' I/O stays in their modules."""

from __future__ import annotations

import argparse
import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

import numpy as np

from .errors import UsageError

# -- region of interest -----------------------------------------------------------

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class RoiSpec:
    """`center` (a square, `size` x the shorter side), `full`, or a box in pixels or fractions."""

    mode: str  # "center", "full" or "box"
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x, y, w, h
    fractional: bool = False  # box values are fractions of the frame's width/height


def parse_roi(text: str) -> RoiSpec:
    """argparse type for --roi: `center`, `full`, `X,Y,W,H` in pixels or `0.25,0.25,0.5,0.5` fractions."""
    text = text.strip().lower()
    if text in ("center", "centre", "full"):
        return RoiSpec("full" if text == "full" else "center")
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    # not isfinite: nan passes every `< 0` check, and neither it nor inf is a coordinate
    if len(values) != 4 or not all(map(math.isfinite, values)) or min(values) < 0 or min(values[2:]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected center, full, X,Y,W,H in pixels "
                                         "or fractions of the frame like 0.25,0.25,0.5,0.5")
    fractional = "." in text and all(v <= 1.0 for v in values)  # 0.5 is a fraction, 1 a pixel
    return RoiSpec("box", values, fractional)


def compute_roi(frame_shape: tuple[int, ...], spec: RoiSpec, size: float = 0.6) -> Box:
    """The ROI of a frame of shape (H, W[, C]) as (x, y, w, h) pixels, clipped to the frame. Pure.

    `size` is the centre square's side as a fraction of the frame's shorter side.
    """
    h, w = frame_shape[:2]
    if spec.mode == "full":
        return 0, 0, w, h
    if spec.mode == "center":
        side = max(1, int(round(min(h, w) * size)))
        return (w - side) // 2, (h - side) // 2, side, side
    x, y, bw, bh = spec.box
    if spec.fractional:
        x, y, bw, bh = x * w, y * h, bw * w, bh * h
    x0, y0 = min(max(int(round(x)), 0), w), min(max(int(round(y)), 0), h)
    x1, y1 = min(int(round(x + bw)), w), min(int(round(y + bh)), h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise UsageError(f"--roi {','.join(f'{v:g}' for v in spec.box)} lies outside the {w}x{h} frame")
    return x0, y0, x1 - x0, y1 - y0


def crop(frame: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    return frame[y:y + h, x:x + w]


# -- smoothing and timing ---------------------------------------------------------


class Smoother:
    """Mean of the probability vectors of the last `n` frames (n=1: no smoothing).

    Averaging probabilities, not votes, lets a confident frame outweigh
    uncertain ones; a label change then needs about n/2 frames to show.
    """

    def __init__(self, n: int = 1):
        self.window: deque[np.ndarray] = deque(maxlen=max(1, n))

    def update(self, probabilities: np.ndarray) -> np.ndarray:
        self.window.append(np.asarray(probabilities, np.float32))
        return np.mean(self.window, axis=0, dtype=np.float32)


class FpsMeter:
    """Frames per second over the last `n` frames (a sliding window, so it reacts within a second)."""

    def __init__(self, n: int = 30):
        self.times: deque[float] = deque(maxlen=n)

    def tick(self, t: float) -> float:
        self.times.append(t)
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


# -- one classified frame ---------------------------------------------------------


@dataclass
class FrameResult:
    number: int  # 0-based count of classified frames (= frame index in a video file)
    time: float  # epoch seconds when processing started
    frame: np.ndarray  # the BGR frame as captured
    box: Box
    result: object  # classifier.Result, probabilities smoothed
    latency_ms: float  # crop + preprocessing + inference + smoothing of this frame


def classify_frames(frames: Iterable[np.ndarray], classifier, roi: RoiSpec = RoiSpec("center"),
                    roi_size: float = 0.6, k: int = 3, smooth: int = 1,
                    clock: Callable[[], float] = time.perf_counter,
                    now: Callable[[], float] = time.time) -> Iterator[FrameResult]:
    """The loop body, without cameras or windows: frames in, FrameResults out."""
    from .classifier import Result, top_k

    smoother = Smoother(smooth)
    for number, frame in enumerate(frames):
        started, t0 = now(), clock()
        box = compute_roi(frame.shape, roi, roi_size)
        raw = classifier.classify(crop(frame, box), k)  # same preprocessing as `classify` on files
        probabilities = smoother.update(raw.probabilities)
        result = Result(top_k(probabilities, classifier.labels, k), probabilities, raw.model_input,
                        classifier.threshold)
        yield FrameResult(number, started, frame, box, result, (clock() - t0) * 1000.0)


def json_record(fr: FrameResult) -> dict:
    """What headless mode prints for a frame, one JSON object per line."""
    when = datetime.fromtimestamp(fr.time, timezone.utc).isoformat(timespec="milliseconds")
    return {"time": when, "frame": fr.number, **fr.result.to_dict(), "unknown": fr.result.is_unknown,
            "latency_ms": round(fr.latency_ms, 3)}


def source_fps(stream) -> float:
    """The source's own frame rate for --save (a file's, or what the camera reports), else 15."""
    import cv2

    get = getattr(stream.capture, "get", None)
    rate = get(cv2.CAP_PROP_FPS) if get else 0.0
    return float(rate) if rate and 1 <= rate <= 240 else 15.0


def add_camera_arguments(parser: argparse.ArgumentParser, source_help: str) -> None:
    """The source, the region of interest, the classification and the model: the flags
    `webcam` and `serve` share."""
    from .argtypes import (add_model_arguments, add_threshold_argument, fraction, non_negative_number, positive_int,
                           positive_number)
    parser.add_argument("source", nargs="?", default=None, help=f"{source_help} (default: --camera)")
    parser.add_argument("--camera", default="auto",
                        help="camera index (0 = /dev/video0), csi for the Pi camera module (picamera2), "
                             "or auto: the Pi camera if picamera2 finds one, else 0")
    parser.add_argument("--width", type=positive_int, default=None,
                        help="requested frame width, pixels (default: the camera's)")
    parser.add_argument("--height", type=positive_int, default=None,
                        help="requested frame height, pixels (default: the camera's)")
    parser.add_argument("--fps", type=positive_number, default=None,
                        help="requested camera frame rate (default: the camera's)")
    parser.add_argument("--rate", type=non_negative_number, default=0.0,
                        help="classify a live source at most this many times a second (0 = every frame it can); "
                             "the newest frame is used each time")
    parser.add_argument("--roi", type=parse_roi, default="center", metavar="center|full|X,Y,W,H",
                        help="region classified: centre square, whole frame, or a box in pixels or fractions")
    parser.add_argument("--roi_size", type=fraction, default=0.6,
                        help="side of the centre square, as a fraction of the frame's shorter side")
    parser.add_argument("--top_k", type=positive_int, default=3, help="labels shown per frame")
    parser.add_argument("--smooth", type=positive_int, default=1,
                        help="average probabilities over the last N frames (1 = off)")
    add_threshold_argument(parser)
    parser.add_argument("--reconnect_timeout", type=non_negative_number, default=60.0,
                        help="seconds a live camera may deliver nothing before giving up (exit status 6)")
    add_model_arguments(parser)
