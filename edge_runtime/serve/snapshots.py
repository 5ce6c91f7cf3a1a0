"""The latest classified frame, handed to any number of readers."""

from __future__ import annotations

import threading

import numpy as np

STREAM_JPEG_QUALITY = 80


class Snapshot:
    """One classified frame, as every endpoint sees it; its JPEG and PNG are made once, on demand.

    Encoding on demand keeps JPEG work out of the camera loop: without
    viewers nothing is encoded, and with twenty, each frame once.
    """

    def __init__(self, fr, fps: float):
        from ..frames import json_record

        self.number, self.frame, self.box, self.result = fr.number, fr.frame, fr.box, fr.result
        h, w = fr.frame.shape[:2]
        self.record = {**json_record(fr), "timestamp": round(fr.time, 3), "fps": round(fps, 2),
                       "roi": list(fr.box), "frame_size": [w, h]}
        self._lock = threading.Lock()
        self._jpeg: bytes | None = None
        self._png: bytes | None = None

    def jpeg(self) -> bytes:
        import cv2

        with self._lock:
            if self._jpeg is None:
                ok, data = cv2.imencode(".jpg", self.frame, [cv2.IMWRITE_JPEG_QUALITY, STREAM_JPEG_QUALITY])
                self._jpeg = data.tobytes() if ok else b""
            return self._jpeg

    def input_png(self) -> bytes:
        import cv2

        with self._lock:
            if self._png is None:
                self._png = cv2.imencode(".png", np.asarray(self.result.model_input, np.uint8))[1].tobytes()
            return self._png

    def roi(self) -> np.ndarray:
        """The region of interest: what the model classified, and what a label saves."""
        from ..frames import crop
        return crop(self.frame, self.box)


class Latest:
    """The newest Snapshot, handed to any number of readers; older ones are simply replaced.

    There is no queue anywhere: a reader that comes back late gets the
    newest frame and has missed the others, so a slow viewer drops frames
    and never holds memory or slows the camera loop.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._closed = False

    def publish(self, snapshot: Snapshot) -> None:
        with self._cond:
            self._snapshot = snapshot
            self._cond.notify_all()

    def get(self) -> Snapshot | None:
        return self._snapshot

    def wait_newer(self, after: int, timeout: float) -> Snapshot | None:
        """The newest snapshot numbered above `after`; None after `timeout` or once closed."""
        def ready():
            return self._closed or (self._snapshot is not None and self._snapshot.number > after)
        with self._cond:
            self._cond.wait_for(ready, timeout)
            if self._closed or self._snapshot is None or self._snapshot.number <= after:
                return None
            return self._snapshot

    def close(self) -> None:
        """Wake every waiting viewer: the server is stopping."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

