"""The camera loop: classifies frames in a thread and publishes each to `Latest`."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

import numpy as np

from .snapshots import Latest, Snapshot


def next_due(due: float, interval: float, now: float) -> float:
    """When a paced video file's next frame is due. Pure.

    One interval after the last one, but never more than one interval behind
    `now`: after a stall (a slow machine) the file goes on at its own pace
    instead of racing to catch up.
    """
    return max(due + interval, now - interval)


class CameraLoop:
    """Classifies frames in a thread and publishes each to `latest`.

    Live sources go through capture.LatestFrameReader (the newest frame
    wins); a video file is played in a loop at its own frame rate, as a camera
    would deliver it. The loop never waits for viewers: they read `latest`.
    """

    def __init__(self, stream, classifier, latest: Latest, *, live: bool, roi, roi_size: float = 0.6,
                 top_k: int = 3, smooth: int = 1, rate: float = 0.0, file_fps: float = 15.0,
                 on_exit: Callable[[], None] = lambda: None):
        self.stream, self.classifier, self.latest, self.live = stream, classifier, latest, live
        self.roi, self.roi_size, self.top_k, self.smooth = roi, roi_size, top_k, smooth
        self.rate, self.file_fps, self.on_exit = rate, file_fps, on_exit
        self.error: BaseException | None = None
        self.frames = 0
        self.reader = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="camera-loop", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.stream.stop()

    def join(self, timeout: float = 10.0) -> None:
        self.thread.join(timeout)

    def stats(self) -> dict:
        return {"camera_frames_dropped": self.reader.dropped if self.reader else 0,
                "camera_retries": self.stream.retries}

    def _frames(self) -> Iterator[np.ndarray]:
        from .. import capture

        if self.live:
            self.reader = capture.LatestFrameReader(self.stream)
            interval = 1.0 / self.rate if self.rate else 0.0
            last = 0.0
            for frame in self.reader:
                if interval and self._stop.wait(max(0.0, last + interval - time.monotonic())):
                    return
                last = time.monotonic()
                yield frame
            return
        interval = 1.0 / self.file_fps
        due = time.monotonic()
        for frame in self.stream:
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            due = next_due(due, interval, time.monotonic())
            yield frame

    def _run(self) -> None:
        from ..frames import FpsMeter, classify_frames

        meter = FpsMeter()
        try:
            for fr in classify_frames(self._frames(), self.classifier, self.roi, self.roi_size, self.top_k,
                                      self.smooth):
                self.latest.publish(Snapshot(fr, meter.tick(time.monotonic())))
                self.frames += 1
                if self._stop.is_set():
                    break
        except BaseException as e:  # a CameraError after retries, or a bug: the command reports it
            self.error = e
        finally:
            if self.reader is not None:
                self.reader.stop()
            self.stream.release()  # the camera is free for the next program, whatever happened
            self.on_exit()

