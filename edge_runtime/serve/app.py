"""`App`: answers one request without touching a socket; what the tests call."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..capture import log_stderr
from ..errors import ImageError, UsageError
from .access import check_token, host_allowed, same_origin
from .http import MAX_JSON_BYTES, STREAM, HttpError, Response, body_length, error_response, json_response, part_header
from .snapshots import Latest, Snapshot

MAX_UPLOAD_MB = 10.0  # POST /api/classify
UPLOADS_AT_ONCE = 2  # bodies read and decoded at once: a 10 MB upload decodes to far more
UPLOAD_WAIT_S = 5.0  # then 503
LONG_POLL_S = 2.0  # /api/latest?after=N waits at most this long
STALE_S = 5.0  # /healthz is 503 when the last frame is older than this
LABEL_CONTENT_TYPE = "application/json"


def parse_label(body: bytes, choices: list[str]) -> str:
    """The class name in a /api/label body, checked against the model's labels. Pure.

    Only a name from `choices` gets through, so nothing a client sends can
    name a path: the folder is made from the model's own label.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, 'body is not JSON; send {"label": "<class name>"}') from None
    label = data.get("label") if isinstance(data, dict) else None
    if not isinstance(label, str):
        raise HttpError(400, 'send {"label": "<class name>"} with the class name as a string')
    if label not in choices:
        raise HttpError(400, f"unknown label {label[:80]!r}; one of: {', '.join(choices)}")
    return label


def parse_after(query: Mapping[str, list[str]]) -> int | None:
    """?after=N of /api/latest: the last frame number the client has; None when absent. Pure."""
    values = query.get("after")
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise HttpError(400, f"after={values[-1][:40]!r}: expected a frame number") from None



# path -> {method: endpoint}. Paths match exactly: nothing is unquoted,
# normalised or looked up on disk, so no request can name a file.
ROUTES = {
    "/": {"GET": "page"},
    "/index.html": {"GET": "page"},
    "/stream.mjpg": {"GET": "stream"},
    "/frame.jpg": {"GET": "frame_jpg"},
    "/input.png": {"GET": "input_png"},
    "/api/latest": {"GET": "latest_record"},
    "/api/info": {"GET": "info"},
    "/api/classify": {"POST": "classify"},
    "/api/label": {"POST": "label"},
    "/healthz": {"GET": "healthz"},
}
WRITING = ("classify", "label")  # need the token when one is set

PAGE_HEADERS = (
    # Everything the page needs is in it: no other site is ever contacted.
    ("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),  # no other page can frame the label buttons and trick a click
    ("Referrer-Policy", "no-referrer"),
)


@dataclass
class App:
    """What a request can reach: the model's labels and metadata, the latest frame, the collect dir.

    `handle(method, target, headers, read_body)` answers one request: it
    checks the host, route, method, origin and token and the body's size
    before reading a byte of the body, then calls the endpoint.
    """

    labels: list[str]
    metadata: dict
    threshold: float
    latest: Latest
    classify_image: Callable[[np.ndarray], object]  # BGR image -> Result, for uploads (thread-safe)
    collect_dir: Path | None = None
    token: str | None = None
    loopback: bool = True
    source_name: str = ""
    model_name: str = ""
    top_k: int = 3
    max_upload_bytes: int = int(MAX_UPLOAD_MB * 2**20)
    uploads_at_once: int = UPLOADS_AT_ONCE
    log: Callable[[str], None] = log_stderr
    stats: Callable[[], dict] = dict  # the camera loop's and the server's counters, for /healthz
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        from ..collect import NONE
        self.choices = [*self.labels, NONE]  # what a label button may say: a class, or none of them
        self._upload_slots = threading.BoundedSemaphore(self.uploads_at_once)
        self._count_lock = threading.Lock()
        self.viewers = 0
        self.frames_streamed = 0
        self.saved = 0

    # -- dispatch ---------------------------------------------------------------------------

    def gate(self, method: str, target: str, headers: Mapping[str, str]) -> tuple[str, dict]:
        """(endpoint, query) for a request, or HttpError; reads no body."""
        if not host_allowed(headers.get("Host"), self.loopback):
            raise HttpError(403, "this server answers only requests addressed to localhost or 127.0.0.1 "
                                 "(it is bound to this machine); use --host 0.0.0.0 for the LAN")
        parts = urlsplit(target)
        methods = ROUTES.get(parts.path)
        if methods is None:
            raise HttpError(404, f"no such page: {parts.path[:80]}; try / or /api/latest")
        if method not in methods:
            allowed = ", ".join(methods)
            raise HttpError(405, f"{method} is not allowed on {parts.path}; use {allowed}", (("Allow", allowed),))
        endpoint = methods[method]
        if endpoint in WRITING:
            if not same_origin(headers.get("Origin"), headers.get("Host")):
                raise HttpError(403, "refusing a request sent by another web site")
            check_token(headers.get("Authorization"), self.token)
        if endpoint == "label" and headers.get("Content-Type", "").split(";")[0].strip().lower() != LABEL_CONTENT_TYPE:
            # Also keeps plain HTML forms on other sites out: they can't send JSON.
            raise HttpError(415, f"send the label as {LABEL_CONTENT_TYPE}: "
                                 '{"label": "<class name>"} with Content-Type: application/json')
        return endpoint, parse_qs(parts.query, keep_blank_values=True)

    def body_limit(self, endpoint: str) -> int:
        return self.max_upload_bytes if endpoint == "classify" else MAX_JSON_BYTES

    def precheck(self, method: str, target: str, headers: Mapping[str, str]) -> Response | None:
        """The refusal for a request, from its head alone, or None: what `Expect: 100-continue` asks.

        curl sends that for any upload over 1 KB and waits for the answer, so
        an upload that is too large or lacks the token is never sent at all.
        """
        try:
            endpoint, _ = self.gate(method, target, headers)
            if endpoint in WRITING:
                body_length(headers, self.body_limit(endpoint))
        except HttpError as e:
            return error_response(e.status, e.message, e.headers)
        return None

    def handle(self, method: str, target: str, headers: Mapping[str, str],
               read_body: Callable[[int], bytes]) -> Response | object:
        """A Response, or STREAM for a viewer of /stream.mjpg (the handler streams it)."""
        try:
            endpoint, query = self.gate(method, target, headers)
            if endpoint == "stream":
                return STREAM
            if endpoint == "classify":
                n = body_length(headers, self.body_limit(endpoint))
                # Bounded before the body is read: each upload may decode to many times its size.
                if not self._upload_slots.acquire(timeout=UPLOAD_WAIT_S):
                    raise HttpError(503, f"busy: {self.uploads_at_once} uploads are being classified; try again",
                                    (("Retry-After", "2"),))
                try:
                    return self.classify(read_body(n))
                finally:
                    self._upload_slots.release()
            if endpoint == "label":
                return self.label(read_body(body_length(headers, self.body_limit(endpoint))))
            return getattr(self, endpoint)(query)
        except HttpError as e:
            return error_response(e.status, e.message, e.headers)
        except (ImageError, UsageError) as e:  # a bad image or label: the client's to fix
            return error_response(400, str(e))
        except Exception as e:  # a bug: the client gets one line, the log says where
            self.log(f"error: {method} {target[:200]}: {type(e).__name__}: {e}")
            return error_response(500, f"internal error ({type(e).__name__}); the server's log has the details")

    # -- endpoints --------------------------------------------------------------------------

    def page(self, query) -> Response:
        from .page import PAGE
        return Response(200, PAGE.encode(), "text/html; charset=utf-8", PAGE_HEADERS)

    def _snapshot(self) -> Snapshot:
        snapshot = self.latest.get()
        if snapshot is None:
            raise HttpError(503, "no frame yet: the camera is starting", (("Retry-After", "1"),))
        return snapshot

    def latest_record(self, query) -> Response:
        after = parse_after(query)
        snapshot = self.latest.wait_newer(after, LONG_POLL_S) if after is not None else None
        return json_response((snapshot or self._snapshot()).record)

    def frame_jpg(self, query) -> Response:
        return Response(200, self._snapshot().jpeg(), "image/jpeg")

    def input_png(self, query) -> Response:
        return Response(200, self._snapshot().input_png(), "image/png")

    def info(self, query) -> Response:
        accuracy = self.metadata.get("accuracy") or {}
        photos = {source: figures.get("accuracy") for source, figures in (accuracy.get("photos") or {}).items()
                  if isinstance(figures, dict) and figures.get("accuracy") is not None}
        from .. import __version__
        return json_response({
            "labels": self.labels, "choices": self.choices,
            "model": {"file": self.model_name, "variant": self.metadata.get("variant"),
                      "accuracy": accuracy.get("accuracy"), "photo_accuracy": photos,
                      "threshold": self.threshold, "created": self.metadata.get("created")},
            "source": self.source_name, "collect": self.collect_dir is not None,
            "counts": self.counts(), "token_required": self.token is not None, "top_k": self.top_k,
            "version": __version__,
        })

    def healthz(self, query) -> Response:
        snapshot = self.latest.get()
        age = time.time() - snapshot.record["timestamp"] if snapshot else None
        body = {"ok": age is not None and age < STALE_S, "frames": snapshot.number + 1 if snapshot else 0,
                "last_frame_age_s": None if age is None else round(age, 3),
                "fps": snapshot.record["fps"] if snapshot else 0.0, "viewers": self.viewers,
                "frames_streamed": self.frames_streamed, "photos_saved": self.saved,
                "uptime_s": round(time.monotonic() - self.started, 1), **self.stats()}
        if not body["ok"]:
            body["error"] = ("no frame yet: the camera is starting" if age is None
                             else f"no frame for {age:.0f} s: the camera stalled")
        return json_response(body, 200 if body["ok"] else 503)

    def classify(self, body: bytes) -> Response:
        """What `classify --json` prints for the same file, without "path"."""
        from ..imageio import decode
        from ..photo import WORK_SIDE

        if not body:
            raise HttpError(400, "empty body: send the image file's bytes (curl --data-binary @photo.jpg)")
        warnings: list[str] = []
        image = decode(body, "upload", warn=warnings.append, working_side=WORK_SIDE)  # ImageError: 400
        result = self.classify_image(image)
        record = {**result.to_dict(), "unknown": result.is_unknown}
        if warnings:
            record["warnings"] = warnings
        return json_response(record)

    def label(self, body: bytes) -> Response:
        from ..collect import class_folder, save_frame

        if self.collect_dir is None:
            raise HttpError(409, "labelling is off: start serve with --collect DIR")
        label = parse_label(body, self.choices)
        snapshot = self._snapshot()
        root = self.collect_dir.resolve()
        folder = self.collect_dir / class_folder(label)
        # The name is the model's own label, but the folder could be a symbolic
        # link someone made on the device: never write outside the collect dir.
        if not folder.resolve().is_relative_to(root):
            raise HttpError(409, f"{folder} leads outside {self.collect_dir}; remove that link")
        try:
            path = save_frame(self.collect_dir, label, self.labels, snapshot.roi())
        except OSError as e:
            raise HttpError(507 if e.errno == errno.ENOSPC else 500,
                            f"can't save in {self.collect_dir}: {e.strerror or e}") from e
        with self._count_lock:
            self.saved += 1
        saved = path.relative_to(self.collect_dir).as_posix()
        self.log(f"saved {saved} (frame {snapshot.number})")
        return json_response({"saved": saved, "label": label, "frame": snapshot.number,
                              "count": photo_count(folder)})

    def counts(self) -> dict[str, int]:
        from ..collect import class_folder
        if self.collect_dir is None:
            return {}
        return {label: photo_count(self.collect_dir / class_folder(label)) for label in self.choices}

    # -- the stream ---------------------------------------------------------------------------

    def stream(self, write: Callable[[bytes], object], poll_s: float = 1.0) -> int:
        """Write each new frame to one viewer until it goes away or the server stops; returns frames sent.

        Each viewer waits for the newest frame it hasn't had; while a write
        blocks (a slow network) newer frames replace older ones, so it gets
        fewer frames, not older ones. A write that blocks for the client
        timeout raises, and the viewer is dropped.
        """
        sent, last = 0, -1
        with self._count_lock:
            self.viewers += 1
        try:
            while not self.latest.closed:
                snapshot = self.latest.wait_newer(last, poll_s)
                if snapshot is None:
                    continue
                data = snapshot.jpeg()
                write(part_header(len(data)) + data + b"\r\n")
                last, sent = snapshot.number, sent + 1
        except (OSError, ValueError):  # gone, reset, or timed out (TimeoutError is an OSError)
            pass
        finally:
            with self._count_lock:
                self.viewers -= 1
                self.frames_streamed += sent
        return sent


class UploadClassifier:
    """`classify`'s path from a decoded image to a Result, callable from any handler thread."""

    def __init__(self, classifier, top_k: int = 3):
        self.classifier, self.top_k = classifier, top_k
        self._lock = threading.Lock()  # one interpreter: one inference at a time

    def __call__(self, image: np.ndarray):
        from ..photo import photo_to_input
        model_input = photo_to_input(image, self.classifier.input_size)  # outside the lock: OpenCV only
        with self._lock:
            return self.classifier.classify_input(model_input, self.top_k)


def photo_count(folder: Path) -> int:
    """Photos saved in a class folder (finished ones: temporaries start with '.')."""
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(".jpg") and not e.name.startswith("."))
    except OSError:
        return 0

