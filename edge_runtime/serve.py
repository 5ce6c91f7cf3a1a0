"""`python -m edge_runtime serve`: the camera and its classification in a browser, and a JSON API.

    python -m edge_runtime serve                           # http://127.0.0.1:8080/, this machine only
    python -m edge_runtime serve --host 0.0.0.0 --collect photos/   # the LAN; labelling needs the printed token
    python -m edge_runtime serve clip.mp4 --port 0         # a video file, in a loop; any free port

    GET  /                 the page: live video, region of interest, top-k, model input, fps, label buttons
    GET  /stream.mjpg      the camera as multipart/x-mixed-replace JPEG frames
    GET  /frame.jpg        the latest frame;   GET /input.png: the 28x28 input the model saw
    GET  /api/latest       the latest prediction (classify --json's fields, frame number, time);
                           ?after=N waits up to 2 s for a frame newer than N
    GET  /api/info         labels, model metadata, source, whether labelling is on
    POST /api/classify     an image in the body -> what `classify --json` says of that file
    POST /api/label        {"label": "Sneaker"}: save the current frame's region of interest
                           as <collect dir>/Sneaker/<time>.jpg, the layout `train --photos` reads
    GET  /healthz          200 while frames arrive, 503 when the camera stalled

Layout, as in webcam.py: pure functions on requests first (routing, token,
limits, JSON bodies), then `App`, which answers a request without touching a
socket and is tested directly; `CameraLoop` classifies frames in a thread and
publishes each to `Latest`; `Handler` and `Server` are the socket shell;
`start` and `run` deal with argv, signals and threads.

Why the standard library's ThreadingHTTPServer: one thread per connection
is what an MJPEG stream wants (each viewer blocks in its own send), the
client limit bounds the threads, and the device needs no new package
(picamera2's own mjpeg_server.py example does the same).
"""

from __future__ import annotations

import argparse
import errno
import hmac
import http.client
import ipaddress
import json
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .argtypes import count, positive_int, positive_number
from .capture import log_stderr
from .deployed import default_model_path
from .errors import ImageError, UsageError

DEFAULT_PORT = 8080
TOKEN_ENV_VAR = "EDGE_SERVE_TOKEN"
MIN_TOKEN_CHARS = 8

# Limits. Each bounds one way a client (or many) could make the device spend
# memory or threads; the defaults suit a Raspberry Pi with 1 GB.
MAX_CLIENTS = 32  # connections at once, viewers included; one thread each
CLIENT_TIMEOUT_S = 10.0  # per socket read or write: a stalled viewer or half-sent request is dropped
MAX_HEAD_BYTES = 16 * 1024  # request line + headers (the stdlib alone allows 100 lines of 64 KB)
MAX_UPLOAD_MB = 10.0  # POST /api/classify
MAX_JSON_BYTES = 4096  # POST /api/label
BODY_DEADLINE_S = 30.0  # a whole request body, however slowly it trickles in
UPLOADS_AT_ONCE = 2  # bodies read and decoded at once: a 10 MB upload decodes to far more
UPLOAD_WAIT_S = 5.0  # then 503
LONG_POLL_S = 2.0  # /api/latest?after=N waits at most this long
STALE_S = 5.0  # /healthz is 503 when the last frame is older than this
STREAM_SNDBUF = 256 * 1024  # per viewer: the most a stalled viewer holds in the kernel
STREAM_JPEG_QUALITY = 80
BOUNDARY = "frame"
LABEL_CONTENT_TYPE = "application/json"


class HttpError(Exception):
    """An answer other than 200: its status and a one-line message for {"error": ...}."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def json(self):
        return json.loads(self.body)


STREAM = object()  # App.handle's answer for a viewer of /stream.mjpg: the handler streams it


def json_response(obj, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(obj).encode(), "application/json", headers)


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """{"error": "..."}: one line, whatever the message was made of."""
    return json_response({"error": " ".join(str(message).split())}, status, headers)


# -- pure functions on requests ---------------------------------------------------------

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine. Pure."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def host_name(host_header: str) -> str:
    """'example.local:8080' -> 'example.local', '[::1]:8080' -> '::1'. Pure."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str | None, loopback_only: bool) -> bool:
    """On a loopback bind, only requests addressed to this machine's own names. Pure.

    A web page elsewhere can point a name it controls at 127.0.0.1 (DNS
    rebinding) and then read this server as its own origin; the Host header
    still carries that name, so refusing it stops the attack.
    """
    if not loopback_only:
        return True
    if not host_header:
        return False
    name = host_name(host_header)
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """A browser's POST from another site carries that site's Origin: refuse it (CSRF). Pure.

    No Origin header at all is a program (curl, a script), not a browser page.
    """
    if origin is None:
        return True
    parts = urlsplit(origin)
    return bool(host_header) and parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()


def check_token(authorization: str | None, token: str | None) -> None:
    """HttpError 401 without the bearer token, 403 with a wrong one; nothing when no token is set. Pure.

    hmac.compare_digest takes as long for a nearly right token as for a wrong
    one, so the time of an answer tells nothing about the token.
    """
    if token is None:
        return
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HttpError(401, "this needs the token serve printed at start: send the header "
                             "'Authorization: Bearer TOKEN' (the page asks for it)",
                        (("WWW-Authenticate", 'Bearer realm="fashion-edge"'),))
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HttpError(403, "wrong token; serve prints the right one at start")


def body_length(headers: Mapping[str, str], limit: int) -> int:
    """The request body's size from Content-Length, or HttpError 411/400/413 before anything is read. Pure."""
    if headers.get("Transfer-Encoding"):
        raise HttpError(411, "send the body with a Content-Length; chunked transfer is not accepted")
    text = headers.get("Content-Length")
    if text is None:
        raise HttpError(411, "a Content-Length header is needed")
    if not text.strip().isdigit():
        raise HttpError(400, f"bad Content-Length {text!r}")
    n = int(text)
    if n > limit:
        raise HttpError(413, f"body is {n} bytes, more than the {limit} allowed here")
    return n


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


def part_header(length: int) -> bytes:
    """The header of one JPEG in the multipart stream. Pure."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n").encode()


def next_due(due: float, interval: float, now: float) -> float:
    """When a paced video file's next frame is due. Pure.

    One interval after the last one, but never more than one interval behind
    `now`: after a stall (a slow machine) the file goes on at its own pace
    instead of racing to catch up.
    """
    return max(due + interval, now - interval)


def urls_to_open(host: str, port: int, token: str | None, hostname: str, addresses: list[str]) -> list[str]:
    """The addresses to print: where a browser can reach this server. Pure.

    A wildcard bind (0.0.0.0, ::) is reachable at this machine's name on the
    LAN (name.local, mDNS: Raspberry Pi OS answers it) and at its addresses.
    The token goes in the fragment (#token=): the browser keeps it, it is
    never sent in a request line or a Referer.
    """
    def url(h: str) -> str:
        h = f"[{h}]" if ":" in h and not h.startswith("[") else h
        return f"http://{h}:{port}/" + (f"#token={token}" if token else "")
    if host not in WILDCARD_HOSTS:
        return [url(host)]
    names = [hostname if "." in hostname else f"{hostname}.local"] if hostname else []
    return [url(h) for h in dict.fromkeys(names + addresses)]


# -- the latest classified frame ----------------------------------------------------------


class Snapshot:
    """One classified frame, as every endpoint sees it; its JPEG and PNG are made once, on demand.

    Encoding on demand keeps JPEG work out of the camera loop: without
    viewers nothing is encoded, and with twenty, each frame once.
    """

    def __init__(self, fr, fps: float):
        from .frames import json_record

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
        from .frames import crop
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


# -- answering requests, without sockets --------------------------------------------------

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
        from .collect import NONE
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
        from .serve_page import PAGE
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
        from . import __version__
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
        from .imageio import decode
        from .photo import WORK_SIDE

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
        from .collect import class_folder, save_frame

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
        from .collect import class_folder
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
        from .photo import photo_to_input
        model_input = photo_to_input(image, self.classifier.input_size)  # outside the lock: OpenCV only
        with self._lock:
            return self.classifier.classify_input(model_input, self.top_k)


def photo_count(folder: Path) -> int:
    """Photos saved in a class folder (finished ones: temporaries start with '.')."""
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(".jpg") and not e.name.startswith("."))
    except OSError:
        return 0


# -- the camera loop ----------------------------------------------------------------------


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
        from . import capture

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
        from .frames import FpsMeter, classify_frames

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


# -- the socket shell -----------------------------------------------------------------------


class HeadLimit:
    """A request's rfile that allows at most `limit` bytes for the request line and headers together.

    BaseHTTPRequestHandler alone accepts 100 header lines of 64 KB each,
    6.5 MB per connection; 16 KB is more than any browser or curl sends.
    """

    def __init__(self, raw, limit: int):
        self.raw, self.limit, self.left = raw, limit, limit

    def reset(self, limit: int | None) -> None:
        self.left = limit

    def readline(self, size: int = -1) -> bytes:
        if self.left is None:
            return self.raw.readline(size)
        cap = self.left + 1 if size is None or size < 0 else min(size, self.left + 1)
        line = self.raw.readline(cap)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong(f"request line and headers over {self.limit} bytes")
        return line

    def __getattr__(self, name):
        return getattr(self.raw, name)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the page's polling reuses its connection
    # Headers and body go out in separate writes: without this, Nagle's algorithm
    # and the client's delayed ACK hold each small JSON answer back by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "fashion-edge"

    def version_string(self) -> str:
        return self.server_version  # no Python version: nothing for a scanner to match

    def setup(self) -> None:
        self.timeout = self.server.client_timeout  # StreamRequestHandler sets it on the socket
        super().setup()
        self.rfile = HeadLimit(self.rfile, MAX_HEAD_BYTES)

    def handle_one_request(self) -> None:
        self.rfile.reset(MAX_HEAD_BYTES)
        try:
            super().handle_one_request()
        except http.client.LineTooLong as e:  # in the request line; header lines are caught by the stdlib
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414, str(e))
        except TimeoutError:
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        refusal = self.server.app.precheck(self.command, self.path, self.headers)
        if refusal is not None:
            self._send(refusal)  # and the client never sends the body
            return False
        return super().handle_expect_100()

    def _handle(self) -> None:
        self.rfile.reset(None)  # the head is read; the body has its own limit
        app: App = self.server.app
        response = app.handle(self.command, self.path, self.headers, self._read_body)
        if response is STREAM:
            self._stream(app)
        else:
            self._send(response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

    def _read_body(self, n: int) -> bytes:
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks, left = [], n
        try:
            while left:
                if time.monotonic() > deadline:
                    raise HttpError(408, f"request body not received within {BODY_DEADLINE_S:.0f} s")
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    raise HttpError(400, f"request body ended after {n - left} of {n} bytes")
                chunks.append(chunk)
                left -= len(chunk)
        except TimeoutError:
            raise HttpError(408, f"request body stalled after {n - left} of {n} bytes") from None
        return b"".join(chunks)

    def _send(self, response: Response) -> None:
        if response.status >= 400:
            self.close_connection = True  # an unread body may follow; start afresh
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:  # the client left before the answer
            self.close_connection = True

    def _stream(self, app: App) -> None:
        self.close_connection = True  # the stream is the rest of this connection
        try:
            # A small send buffer bounds what a stalled viewer holds and lets its
            # write time out sooner; the kernel would otherwise grow it to megabytes.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            self.end_headers()
        except OSError:
            return
        app.stream(self.wfile.write)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, headers too long) as JSON too."""
        text = message or HTTPStatus(code).phrase
        if explain and explain not in text:
            text = f"{text}: {explain}"
        if getattr(self, "request_version", "") == "HTTP/0.9":  # the stdlib's guess for a malformed line
            self.request_version = "HTTP/1.0"  # so the answer has a status line and headers
        self.close_connection = True
        self._send(error_response(code, text))

    def log_message(self, format: str, *args) -> None:
        pass  # a line per request would flood the journal: the page polls several times a second


def refuse(sock: socket.socket, body: bytes) -> None:
    """Answer 503 on a connection over the client limit, without a thread for it."""
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.settimeout(0.5)
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0)  # read what arrived, so closing doesn't reset the connection under the answer
        sock.recv(65536)
    except OSError:
        pass


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a client limit, one-line error logs and no reverse DNS lookups."""

    daemon_threads = True  # viewers never hold the process at exit
    block_on_close = False
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], app: App, max_clients: int = MAX_CLIENTS,
                 client_timeout: float = CLIENT_TIMEOUT_S, log: Callable[[str], None] = log_stderr):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app, self.client_timeout, self.max_clients, self.log = app, client_timeout, max_clients, log
        self.clients, self.refused = 0, 0
        self._lock = threading.Lock()
        self._busy = error_response(503, f"too many clients ({max_clients}); try again in a moment").body
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's fully qualified name: a DNS
        # query that takes seconds on a Pi without a network. Nothing here uses it.
        import socketserver
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request, client_address) -> None:
        with self._lock:
            full = self.clients >= self.max_clients
            if full:
                self.refused += 1
            else:
                self.clients += 1
        if full:
            refuse(request, self._busy)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.clients -= 1

    def handle_error(self, request, client_address) -> None:
        kind, error, _ = sys.exc_info()
        if isinstance(error, OSError):  # a client that vanished mid-request: routine
            return
        self.log(f"error: request from {client_address[0]}: {kind.__name__}: {error}")


def make_server(host: str, port: int, app: App, max_clients: int, client_timeout: float) -> Server:
    """Bind, or a UsageError that says why not and what to do."""
    try:
        return Server((host, port), app, max_clients, client_timeout, app.log)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from e
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use (another serve?); stop it or pick another "
                             f"with --port (ss -ltnp 'sport = :{port}' names it)") from e
        if e.errno == errno.EACCES:
            raise UsageError(f"port {port} needs root privileges; use one above 1023, such as {DEFAULT_PORT}") from e
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from e
        raise UsageError(f"can't listen on {host}:{port} ({e.strerror or e})") from e


# -- the command ------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    from .frames import add_camera_arguments

    add_camera_arguments(parser, "video file (played in a loop), stream URL or camera index, instead of --camera")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every network "
                             "(then labelling and uploads need the token)")
    parser.add_argument("--port", type=count(0, 65535), default=DEFAULT_PORT, help="TCP port (0: any free one)")
    parser.add_argument("--collect", type=Path, default=None, metavar="DIR",
                        help="turn on the label buttons: each saves the frame's region of interest as "
                             "DIR/<class>/<time>.jpg, for python -m train --photos DIR")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV_VAR) or None,
                        help=f"the token labelling and uploads need (default: ${TOKEN_ENV_VAR}, else one is "
                             "generated when --host is not a loopback address)")
    parser.add_argument("--max_clients", type=positive_int, default=MAX_CLIENTS,
                        help="connections at once (viewers, pages, API calls); more get 503")
    parser.add_argument("--max_upload_mb", type=positive_number, default=MAX_UPLOAD_MB,
                        help="largest image POST /api/classify accepts (413 above)")
    parser.add_argument("--client_timeout", type=positive_number, default=CLIENT_TIMEOUT_S,
                        help="seconds a client may stall a read or write before it is dropped")


def resolve_token(token: str | None, host: str) -> tuple[str | None, bool]:
    """(the token, whether it was generated). A loopback bind needs none unless one is given."""
    if token is not None:
        if len(token) < MIN_TOKEN_CHARS:
            raise UsageError(f"--token: use at least {MIN_TOKEN_CHARS} characters")
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(12), True


def prepare_collect_dir(path: Path) -> Path:
    """Create the collect dir and check it takes files, so a bad path is an error at start, not at a click."""
    import tempfile
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise UsageError(f"--collect {path}: can't write there ({e.strerror or e})") from e
    return path


def local_addresses() -> list[str]:
    """This machine's address on the LAN (the one its default route uses), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: connecting a UDP socket sends nothing
            address = s.getsockname()[0]
        return [] if address.startswith("127.") else [address]
    except OSError:
        return []


class Service:
    """A running `serve`: the camera loop and the HTTP server, each in its thread."""

    def __init__(self, app: App, server: Server, camera: CameraLoop, token_generated: bool = False):
        self.app, self.server, self.camera, self.token_generated = app, server, camera, token_generated
        self.finished = threading.Event()  # a signal, or the camera loop ended
        self.started = time.monotonic()
        self._http = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def host(self) -> str:
        return self.server.server_address[0]

    @property
    def url(self) -> str:
        """Where this machine itself reaches the server (what tests and tools use)."""
        host = self.host
        if host in WILDCARD_HOSTS:
            host = "::1" if self.server.address_family == socket.AF_INET6 else "127.0.0.1"
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def start(self) -> "Service":
        self.camera.start()
        self._http.start()
        return self

    def stop(self) -> None:
        """Ask everything to stop (safe from a signal handler: it only sets an event)."""
        self.finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    def close(self) -> None:
        """Stop and release everything: the camera, the listening socket, the viewers."""
        self.finished.set()
        self.camera.stop()
        self.app.latest.close()  # wakes the viewers; their threads end
        self.server.shutdown()
        self.server.server_close()
        self.camera.join()

    def banner(self, hostname: str | None = None, addresses: list[str] | None = None) -> list[str]:
        hostname = socket.gethostname() if hostname is None else hostname
        addresses = local_addresses() if addresses is None else addresses
        urls = urls_to_open(self.host, self.port, self.app.token, hostname, addresses)
        lines = [f"serving {self.app.source_name} with {self.app.model_name}"]
        if self.app.loopback:
            lines.append(f"open {urls[0]}  (this machine only; --host 0.0.0.0 to be seen from the LAN)")
        else:
            lines += ["open from another machine:"] + [f"  {u}" for u in urls]
        if self.app.token:
            lines.append(f"labelling and uploads need the token {self.app.token}"
                         + (" (generated; --token or $" + TOKEN_ENV_VAR + " to fix one)" if self.token_generated
                            else "") + "; the links above carry it")
        if self.app.collect_dir is not None:
            lines.append(f"labelled photos go to {self.app.collect_dir}/<class>/ (python -m train --photos "
                         f"{self.app.collect_dir})")
        lines.append("Ctrl-C to stop")
        return lines


def start(args, opener=None, log: Callable[[str], None] | None = None) -> Service:
    """Load the model, bind the port, open the source and start both threads; errors are named and early."""
    from . import capture
    from .classifier import Classifier
    from .frames import source_fps

    if (args.width is None) != (args.height is None):
        raise UsageError("give both --width and --height, or neither")
    token, generated = resolve_token(args.token, args.host)
    collect = prepare_collect_dir(args.collect) if args.collect is not None else None
    model = args.model or default_model_path()
    classifier = Classifier(model, num_threads=args.threads, threshold=args.threshold)
    # A second interpreter for uploads: an interpreter is not thread-safe, and an
    # upload must never wait for, or hold up, the camera loop.
    uploads = UploadClassifier(Classifier(model, num_threads=args.threads, metadata=classifier.metadata,
                                          threshold=classifier.threshold), args.top_k)
    spec = capture.parse_source(args.source, args.camera, width=args.width, height=args.height, fps=args.fps)
    latest = Latest()
    app = App(labels=classifier.labels, metadata=classifier.metadata, threshold=classifier.threshold,
              latest=latest, classify_image=uploads, collect_dir=collect, token=token,
              loopback=is_loopback(args.host), source_name=spec.name, model_name=Path(model).name,
              top_k=args.top_k, max_upload_bytes=int(args.max_upload_mb * 2**20),
              **({"log": log} if log else {}))
    server = make_server(args.host, args.port, app, args.max_clients, args.client_timeout)
    try:
        stream = capture.FrameStream(spec, opener=opener, loop=not spec.live,  # opens it: CameraError names it
                                     backoff=capture.Backoff(give_up_after_s=args.reconnect_timeout))
    except BaseException:
        server.server_close()
        raise
    service_box: list[Service] = []
    camera = CameraLoop(stream, classifier, latest, live=spec.live, roi=args.roi, roi_size=args.roi_size,
                        top_k=args.top_k, smooth=args.smooth, rate=args.rate,
                        file_fps=1.0 if spec.live else source_fps(stream),
                        on_exit=lambda: service_box and service_box[0].stop())
    app.stats = lambda: {**camera.stats(), "clients": server.clients, "clients_refused": server.refused}
    service = Service(app, server, camera, generated)
    service_box.append(service)
    return service.start()


def run(args) -> int:
    from .process import StopFlag

    service = start(args)
    for line in service.banner():
        print(line, flush=True)  # flushed: systemd's journal and a pipe see it now
    with StopFlag(service.stop) as stop:
        try:
            while not service.wait(0.5):  # a timeout, so the main thread stays responsive to signals
                pass
        finally:
            service.close()
    camera = service.camera
    if camera.error is not None:
        raise camera.error  # a CameraError is one `error:` line and exit status 6
    elapsed = time.monotonic() - service.started
    app = service.app
    print(f"stopped ({stop.signal_name or 'end of stream'}): {camera.frames} frames in {elapsed:.1f} s "
          f"({camera.frames / elapsed if elapsed else 0:.1f} fps), {app.frames_streamed} frames streamed, "
          f"{app.saved} photos saved, {service.server.refused} clients refused", file=sys.stderr)
    return 0
