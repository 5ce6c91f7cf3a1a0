"""Frame sources for the webcam loop: cameras, video files, streams, the Pi camera.

Everything here hands out BGR uint8 frames (H, W, 3) through one small
interface, the one `cv2.VideoCapture` already has: `read() -> (ok, frame)`,
`release()`, `isOpened()`. On top of it:

- `FrameStream` turns failed reads into what they mean: the end of a video
  file (stop), or a live camera that hiccuped (retry with backoff, reopen
  the device, resume; give up with a `CameraError` after a while);
- `LatestFrameReader` reads in a thread and keeps only the newest frame, so a
  slow model never works through a queue of stale frames ("latest frame wins").

OpenCV and picamera2 are imported inside functions: this module is imported
by the CLI before anyone knows whether a camera will be used.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from .errors import CameraError, UsageError

CSI_NAMES = ("csi", "picamera", "picamera2")  # --camera values meaning the Pi camera module


class Capture(Protocol):
    """What a frame source must offer (cv2.VideoCapture has exactly this)."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...
    def isOpened(self) -> bool: ...


# -- what the user asked for ------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "camera" (V4L2/OpenCV index), "csi" (picamera2), "file", "stream"
    target: int | str  # camera index, file path or URL
    width: int | None = None  # requested frame size in pixels; None = the device's default
    height: int | None = None
    fps: float | None = None  # requested frames per second

    @property
    def live(self) -> bool:
        """Live sources are retried when they stall; a file that stops has ended."""
        return self.kind != "file"

    @property
    def name(self) -> str:
        """How error messages and logs name the source (no passwords from URLs)."""
        if self.kind == "camera":
            device = f"/dev/video{self.target}" if sys.platform.startswith("linux") else None
            return f"camera {self.target}" + (f" ({device})" if device else "")
        if self.kind == "csi":
            return f"Pi camera {self.target} (picamera2)"
        if self.kind == "stream":
            return "stream " + re.sub(r"//[^/@]*@", "//***@", str(self.target))
        return f"video file {self.target}"


def parse_source(source: str | None, camera: str | None = None, **settings) -> SourceSpec:
    """`--camera 0|csi|auto` or a positional file/URL/index -> SourceSpec. Pure but for `auto`.

    `auto` picks the Pi camera module when picamera2 is installed and libcamera
    sees a camera (OpenCV's V4L2 capture can't read libcamera cameras on
    current Raspberry Pi OS), else camera 0.
    """
    if source is not None and camera not in (None, "auto"):
        raise UsageError(f"give either a source ({source}) or --camera {camera}, not both")
    value = source if source is not None else (camera or "auto")
    if value == "auto":
        return SourceSpec("csi", 0, **settings) if csi_cameras() else SourceSpec("camera", 0, **settings)
    if value.lower() in CSI_NAMES:
        return SourceSpec("csi", 0, **settings)
    m = re.fullmatch(r"(?:csi|picamera2?):(\d+)", value.lower())
    if m:
        return SourceSpec("csi", int(m.group(1)), **settings)
    if value.isdigit():
        return SourceSpec("camera", int(value), **settings)
    m = re.fullmatch(r"/dev/video(\d+)", value)
    if m:
        return SourceSpec("camera", int(m.group(1)), **settings)
    if "://" in value:
        return SourceSpec("stream", value, **settings)
    return SourceSpec("file", value, **settings)


def camera_modules(camera_info: list[dict]) -> list[dict]:
    """The Pi camera modules among Picamera2.global_camera_info(): libcamera lists
    USB webcams too (their Id has /usb), which OpenCV opens as V4L2 devices. Pure."""
    return [c for c in camera_info if "/usb" not in str(c.get("Id", ""))]


def csi_cameras() -> list[dict]:
    """Cameras libcamera sees through picamera2 (Pi camera modules), [] if picamera2 is missing."""
    try:
        from picamera2 import Picamera2  # only on a Raspberry Pi, from apt: python3-picamera2
        return camera_modules(Picamera2.global_camera_info())
    except Exception:  # not installed, no libcamera, or broken by a numpy ABI mismatch
        return []


# -- opening ------------------------------------------------------------------------


def open_capture(spec: SourceSpec) -> Capture:
    """Open the source or raise a one-line CameraError naming it and what to check."""
    if spec.kind == "csi":
        return PiCamera2Capture(int(spec.target), spec.width, spec.height, spec.fps)
    import cv2

    if spec.kind == "file":
        path = Path(spec.target)
        if path.is_dir():
            raise CameraError(f"{spec.name} is a directory; give a video file in it")
        if not path.is_file():
            raise CameraError(f"{spec.name} not found; check the path (a camera is --camera 0)")
        if path.stat().st_size == 0:
            raise CameraError(f"{spec.name} is empty (0 bytes); was it copied completely?")
        cap = cv2.VideoCapture(str(spec.target))
        if not cap.isOpened():
            raise CameraError(f"can't decode {spec.name}: OpenCV has no decoder for it; "
                              "convert it, e.g. ffmpeg -i IN -c:v mjpeg out.avi")
        return cap
    if spec.kind == "stream":
        cap = cv2.VideoCapture(str(spec.target))
        if not cap.isOpened():
            raise CameraError(f"can't open {spec.name}: check the address, the network, and that the "
                              "stream is running (try it with ffplay or VLC)")
        return cap
    index = int(spec.target)
    device = Path(f"/dev/video{index}")
    if sys.platform.startswith("linux"):
        if not device.exists():
            raise CameraError(f"can't open {spec.name}: {device} does not exist; check the USB cable and "
                              "`ls /dev/video*`, or use --camera csi for a Raspberry Pi camera module")
        if not os.access(device, os.R_OK | os.W_OK):
            raise CameraError(f"can't open {spec.name}: permission denied; add yourself to the video group "
                              "(sudo usermod -aG video $USER, then log in again)")
        # V4L2 directly: the default backend on Linux may try GStreamer first and is slower to open.
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
    else:
        cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise CameraError(f"can't open {spec.name}: is another program using it (fuser {device})? "
                          "A Pi camera module is --camera csi (OpenCV can't read libcamera cameras)")
    if spec.width and spec.height:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, spec.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.height)
    if spec.fps:
        cap.set(cv2.CAP_PROP_FPS, spec.fps)
    # Keep the driver's queue short: by default V4L2 buffers ~4 frames, which
    # come out up to 4 frame times old. Not every driver honours it.
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


class PiCamera2Capture:
    """The Raspberry Pi camera module through picamera2, behind the VideoCapture interface."""

    def __init__(self, camera_num: int = 0, width: int | None = None, height: int | None = None,
                 fps: float | None = None, read_timeout_s: float = 2.0):
        try:
            from picamera2 import Picamera2
        except Exception as e:
            raise CameraError(f"can't use the Pi camera: picamera2 is not importable ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); sudo apt install python3-picamera2 "
                              "and create the venv with --system-site-packages (deploy/install.sh does)") from e
        if camera_num >= len(Picamera2.global_camera_info()):
            raise CameraError(f"can't open Pi camera {camera_num}: libcamera finds no such camera; check the "
                              "ribbon cable (contacts facing the right way) and `rpicam-hello --list-cameras`")
        self.read_timeout_s = read_timeout_s
        try:
            self._camera = Picamera2(camera_num)
            # "RGB888" is libcamera's name for 24-bit pixels stored B, G, R in
            # memory, which is exactly OpenCV's BGR: no conversion needed.
            main = {"format": "RGB888", "size": (width or 640, height or 480)}
            controls = {"FrameRate": float(fps)} if fps else {}
            self._camera.configure(self._camera.create_video_configuration(main=main, controls=controls))
            self._camera.start()
        except Exception as e:
            raise CameraError(f"can't start Pi camera {camera_num}: {str(e).splitlines()[0]}; is another "
                              "program using it (only one process can)?") from e
        self._open = True

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:  # a number for `wait` is a timeout in seconds: never block forever on a dead camera
            return True, self._camera.capture_array("main", wait=self.read_timeout_s)
        except Exception:
            return False, None

    def release(self) -> None:
        if self._open:
            self._open = False
            try:
                self._camera.stop()
            finally:
                self._camera.close()

    def isOpened(self) -> bool:
        return self._open


# -- reading with retries -----------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Waits between retries of a stalled live source, in seconds: 0.25, 0.5, 1, 2, 4, 4, ..."""

    initial_s: float = 0.25
    factor: float = 2.0
    max_s: float = 4.0
    give_up_after_s: float = 60.0  # no frame for this long: CameraError (systemd may restart us)
    reopen_after: int = 3  # failed reads before closing and reopening the device

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class FrameStream:
    """A source that knows the difference between "ended" and "stalled".

    `read()` returns the next BGR frame, or None when a video file has ended
    (or `stop()` was called). A live source that fails is retried after
    growing waits and reopened every few failures, until it delivers again
    or `backoff.give_up_after_s` has passed without a frame (CameraError).
    `sleep` and `clock` are injectable so tests run without waiting.
    """

    def __init__(self, spec: SourceSpec, opener: Callable[[SourceSpec], Capture] | None = None,
                 backoff: Backoff = Backoff(), loop: bool = False, sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] = log_stderr):
        self.spec, self.opener, self.backoff, self.loop = spec, opener or open_capture, backoff, loop
        self._stop = threading.Event()
        # Default sleep waits on the stop event, so SIGTERM during a backoff wait exits at once.
        self.sleep = sleep or self._stop.wait
        self.clock, self.log = clock, log
        self.retries = 0  # failed reads of a live source, over the whole run
        self.reopens = 0
        self.frames = 0  # frames delivered so far
        self.capture: Capture | None = self.opener(spec)  # errors opening the first time go to the user as-is

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def read(self) -> np.ndarray | None:
        if self.stopped:
            return None
        frame = self._read_once()
        if frame is not None:
            return frame
        if not self.spec.live:
            if not self.frames:  # OpenCV opens some damaged files (a broken header) but decodes nothing
                raise CameraError(f"{self.spec.name} contains no decodable frames; check it plays (ffplay, VLC) "
                                  "or convert it, e.g. ffmpeg -i IN -c:v mjpeg out.avi")
            if not self.loop:
                return None  # end of the file: not an error, no retry
            self._reopen()  # --loop: play the file again from the start
            return self._read_once()
        return self._recover()

    def _read_once(self) -> np.ndarray | None:
        if self.capture is None:
            return None
        try:
            ok, frame = self.capture.read()
        except Exception:  # some backends raise instead of returning False
            return None
        if not ok or frame is None or not frame.size:
            return None
        self.frames += 1
        return frame

    def _recover(self) -> np.ndarray | None:
        started = self.clock()
        for attempt, delay in enumerate(self.backoff.delays(), start=1):
            waited = self.clock() - started
            if waited >= self.backoff.give_up_after_s:
                raise CameraError(f"{self.spec.name} delivered no frame for {waited:.0f} s; check the cable, "
                                  "the power supply (a weak one resets USB devices) and `dmesg | tail`")
            self.retries += 1
            self.log(f"warning: {self.spec.name} delivered no frame; retry {attempt} in {delay:.2f} s")
            self.sleep(delay)
            if self.stopped:
                return None
            if attempt % self.backoff.reopen_after == 0:
                self._reopen()
            frame = self._read_once()
            if frame is not None:
                self.log(f"{self.spec.name}: frames again after {attempt} retries")
                return frame
        return None  # not reached: delays() never ends

    def _reopen(self) -> None:
        self._release()
        try:
            self.capture = self.opener(self.spec)
            self.reopens += 1
        except CameraError as e:  # unplugged right now: keep backing off, it may come back
            self.log(f"warning: {e}")

    def _release(self) -> None:
        if self.capture is not None:
            try:
                self.capture.release()
            finally:
                self.capture = None

    def release(self) -> None:
        self.stop()
        self._release()

    def __iter__(self) -> Iterator[np.ndarray]:
        """Frames in order, every one (what a video file wants)."""
        while (frame := self.read()) is not None:
            yield frame


class LatestFrameReader:
    """Reads a FrameStream in a thread and keeps only the newest frame.

    The consumer gets the freshest frame each time it asks; frames that
    arrived meanwhile are dropped (and counted), so inference time never turns
    into latency. Errors in the thread (a CameraError after giving up) are
    re-raised to the consumer.
    """

    def __init__(self, stream: FrameStream):
        self.stream = stream
        self.dropped = 0
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0  # number of frames read so far
        self._taken = 0  # seq of the last frame handed out
        self._ended = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (frame := self.stream.read()) is not None:
                with self._cond:
                    self._frame, self._seq = frame, self._seq + 1
                    self._cond.notify()
        except BaseException as e:  # handed to the consumer, not lost in the thread
            self._error = e
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify()

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self.get()) is not None:
            yield frame

    def get(self) -> np.ndarray | None:
        """The newest frame not yet handed out; waits for one; None at the end."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > self._taken or self._ended)
            if self._seq > self._taken:
                self.dropped += self._seq - self._taken - 1
                self._taken = self._seq
                return self._frame
        if self._error is not None:
            raise self._error
        return None

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stream.stop()
        self._thread.join(timeout_s)
