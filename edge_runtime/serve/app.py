"""`App`: answers one request without touching a socket; what the tests call.

`handle(method, target, headers, read_body, client)` checks, from the head
alone and in this order, the Host, the route and method, the origin, the
token (wrong ones are counted per client and slowed down), the rate of
writes and the body's size; only then is the body read, and only once it
has arrived does an upload wait for one of the few decoding slots. Every
refusal is an HttpError with a one-line message; a bug is a 500 whose
details go to the log, not to the client.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import ImageError, UsageError
from .access import Limiter, Refusals, check_token, host_allowed, host_name, same_origin
from .http import MAX_JSON_BYTES, STREAM, HttpError, Response, body_length, error_response, json_response, part_header
from .logs import LOG
from .snapshots import Latest, Snapshot

MAX_UPLOAD_MB = 10.0  # POST /api/classify
UPLOADS_AT_ONCE = 2  # uploads decoded at once: a 10 MB upload decodes to far more
UPLOAD_WAIT_S = 5.0  # for a decoding slot, once the body is in; then 503
UPLOAD_BODIES = 6  # upload bodies arriving at once, at --max_upload_mb each: the memory they may take
MAX_DECODE_MB = 200.0  # what decoding one upload may allocate (imageio's max_bytes); 2 at once on a 1 GB Pi
LONG_POLL_S = 2.0  # /api/latest?after=N waits at most this long
STALE_S = 5.0  # /healthz is 503 when the last frame is older than this
LABEL_CONTENT_TYPE = "application/json"
# Labels a second (and burst) per client address: a person clicks a button a
# few times a second at most; a script that saved the same frame 442 times a
# second filled the disk. Labels are also limited for everyone together.
# (Uploads write nothing; the decoding slots and the body budget bound them.)
LABEL_RATE, LABEL_BURST = 5.0, 10
LABEL_RATE_ALL, LABEL_BURST_ALL = 10.0, 20
# Wrong tokens per client address: 5 at once, then one every 6 s (10 a minute).
TOKEN_FAILURE_RATE, TOKEN_FAILURE_BURST = 1 / 6, 5
EVERYONE = "*"


class BodyBudget:
    """Bytes of request bodies being received at once: reserved from Content-Length before reading."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.total:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n


def parse_label(body: bytes, choices: list[str]) -> str:
    """The class name in a /api/label body, checked against the model's labels. Pure.

    Only a name from `choices` gets through, so nothing a client sends can
    name a path: the folder is made from the model's own label.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: [[[[... nested a thousand deep
        raise HttpError(400, 'body is not JSON (or nested too deep); send {"label": "<class name>"}') from None
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
    "/api/forget": {"POST": "forget"},
    "/healthz": {"GET": "healthz"},
}
WRITING = ("classify", "label", "forget")  # need the token when one is set
LABELLING = ("label", "forget")  # a JSON body {"label": ...}, rate-limited as people click

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
    """What a request can reach: the model's labels and metadata, the latest frame, the collect dir."""

    labels: list[str]
    metadata: dict
    threshold: float
    latest: Latest
    classify_image: Callable[[np.ndarray], object]  # BGR image -> Result, for uploads (thread-safe)
    collect_dir: Path | None = None
    own: object = None  # own.OwnPhotos with --own (collect_dir is its folder), else None
    token: str | None = None
    loopback: bool = True
    host_names: frozenset = frozenset()  # on a LAN bind: this machine's names and --allow_host
    source_name: str = ""  # as clients see it: no absolute path, no password
    model_name: str = ""
    top_k: int = 3
    max_upload_bytes: int = int(MAX_UPLOAD_MB * 2**20)
    uploads_at_once: int = UPLOADS_AT_ONCE
    max_decode_bytes: int = int(MAX_DECODE_MB * 2**20)
    log: logging.Logger = LOG
    stats: Callable[[], dict] = dict  # the camera loop's and the server's counters, for /healthz
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        from ..collect import NONE
        self.choices = [*self.labels, NONE]  # what a label button may say: a class, or none of them
        self._upload_slots = threading.BoundedSemaphore(self.uploads_at_once)
        self.bodies = BodyBudget(UPLOAD_BODIES * self.max_upload_bytes)
        self.label_limit = Limiter(LABEL_RATE, LABEL_BURST)
        self.label_limit_all = Limiter(LABEL_RATE_ALL, LABEL_BURST_ALL)
        self.token_failures = Limiter(TOKEN_FAILURE_RATE, TOKEN_FAILURE_BURST)
        self.refusals = Refusals()
        self._count_lock = threading.Lock()
        self.viewers = 0
        self.frames_streamed = 0
        self.saved = 0
        self.save_failures = 0

    # -- dispatch ---------------------------------------------------------------------------

    def gate(self, method: str, target: str, headers: Mapping[str, str], client: str = "local") -> tuple[str, dict]:
        """(endpoint, query) for a request, or HttpError; reads no body."""
        host_ok = host_allowed(headers.get("Host"), self.loopback, self.host_names)
        if not host_ok and (self.loopback or self.token is None):
            raise HttpError(403, self._host_refusal(headers.get("Host")))
        parts = urlsplit(target)
        methods = ROUTES.get(parts.path)
        if methods is None:
            raise HttpError(404, f"no such page: {parts.path[:80]}; try / or /api/latest")
        if method not in methods:
            allowed = ", ".join(methods)
            raise HttpError(405, f"{method} is not allowed on {parts.path}; use {allowed}", (("Allow", allowed),))
        endpoint = methods[method]
        if endpoint in WRITING or not host_ok:  # a name that isn't this machine's may read with the token
            if endpoint in WRITING and not same_origin(headers.get("Origin"), headers.get("Host")):
                raise HttpError(403, "refusing a request sent by another web site")
            try:
                self.check_token(headers.get("Authorization"), client)
            except HttpError as e:
                if host_ok or e.status == 429:
                    raise
                raise HttpError(403, self._host_refusal(headers.get("Host"))) from None
        if endpoint in LABELLING and headers.get("Content-Type", "").split(";")[0].strip().lower() != LABEL_CONTENT_TYPE:
            # Also keeps plain HTML forms on other sites out: they can't send JSON.
            raise HttpError(415, f"send the label as {LABEL_CONTENT_TYPE}: "
                                 '{"label": "<class name>"} with Content-Type: application/json')
        return endpoint, parse_qs(parts.query, keep_blank_values=True)

    def _host_refusal(self, host: str | None) -> str:
        shown = (host or "")[:80]
        if self.loopback:
            return ("this server answers only requests addressed to localhost or 127.0.0.1 "
                    "(it is bound to this machine); use --host 0.0.0.0 for the LAN")
        return (f"Host {shown!r} is not a name of this machine: open it by its address, its name or name.local, "
                f"or start serve with --allow_host {host_name(shown) or 'NAME'}" + ("" if self.token is None
                                                                          else "; programs may send the token"))

    def check_token(self, authorization: str | None, client: str) -> None:
        """check_token, with wrong tokens counted per client: after a few, 429 until it waits."""
        if self.token is None:
            return
        if self.token_failures.empty(client):
            raise HttpError(429, f"too many wrong tokens from {client}; try again in "
                                 f"{self.token_failures.wait_s(client)} s",
                            (("Retry-After", str(self.token_failures.wait_s(client))),))
        try:
            check_token(authorization, self.token)
        except HttpError as e:
            if e.status == 403:
                self.token_failures.allow(client)
                self._refused(client, "token", "wrong tokens")
            raise

    def _limit_labels(self, client: str) -> None:
        """429 when a client, or all of them together, label faster than people would."""
        if not self.label_limit.allow(client):
            self._too_many(client, "label", f"more than {LABEL_RATE:g} labels a second", self.label_limit)
        if not self.label_limit_all.allow(EVERYONE):
            self._too_many(client, "label-all", f"more than {LABEL_RATE_ALL:g} labels a second from all "
                                                "clients together", self.label_limit_all, EVERYONE)

    def _too_many(self, client: str, kind: str, what: str, limiter: Limiter, key: str | None = None):
        self._refused(client, kind, what)
        wait = limiter.wait_s(key or client)
        raise HttpError(429, f"{what}; try again in {wait} s", (("Retry-After", str(wait)),))

    def _refused(self, client: str, kind: str, what: str) -> None:
        """One log line for the first refusal of a kind from a client, then one a minute with the count."""
        count = self.refusals.note(client, kind)
        if count:
            self.log.warning(f"{client}: {what}: refused" + (f" ({count} times in the last minute)"
                                                             if count > 1 else ""))

    def precheck(self, method: str, target: str, headers: Mapping[str, str], client: str = "local") -> Response | None:
        """The refusal for a request, from its head alone, or None: what `Expect: 100-continue` asks.

        curl sends that for any upload over 1 KB and waits for the answer, so
        an upload that is too large or lacks the token is never sent at all.
        """
        try:
            endpoint, _ = self.gate(method, target, headers, client)
            if endpoint in WRITING:
                body_length(headers, self.body_limit(endpoint))
        except HttpError as e:
            return error_response(e.status, e.message, e.headers)
        return None

    def body_limit(self, endpoint: str) -> int:
        return self.max_upload_bytes if endpoint == "classify" else MAX_JSON_BYTES

    def handle(self, method: str, target: str, headers: Mapping[str, str],
               read_body: Callable[[int], bytes], client: str = "local") -> Response | object:
        """A Response, or STREAM for a viewer of /stream.mjpg (the handler streams it)."""
        try:
            endpoint, query = self.gate(method, target, headers, client)
            if endpoint == "stream":
                return STREAM
            if endpoint in WRITING:
                n = body_length(headers, self.body_limit(endpoint))
                if endpoint in LABELLING:
                    self._limit_labels(client)
                    return getattr(self, endpoint)(read_body(n))
                return self.upload(read_body, n)
            return getattr(self, endpoint)(query)
        except HttpError as e:
            return error_response(e.status, e.message, e.headers)
        except (ImageError, UsageError) as e:  # a bad image or label: the client's to fix
            return error_response(400, str(e))
        except Exception as e:  # a bug: the client gets one line, the log says where
            self.log.error(f"{method} {target[:200]}: {type(e).__name__}: {e}")
            return error_response(500, f"internal error ({type(e).__name__}); the server's log has the details")

    def upload(self, read_body: Callable[[int], bytes], n: int) -> Response:
        """An upload's body is read first, within the memory set aside for bodies; only then does it
        wait for a decoding slot, so a slow sender holds memory it declared, never a slot."""
        if not self.bodies.reserve(n):
            raise HttpError(503, f"busy: {self.bodies.used // 2**20} MB of uploads are arriving; try again",
                            (("Retry-After", "2"),))
        try:
            body = read_body(n)
            if not self._upload_slots.acquire(timeout=UPLOAD_WAIT_S):
                raise HttpError(503, f"busy: {self.uploads_at_once} uploads are being classified; try again",
                                (("Retry-After", "2"),))
            try:
                return self.classify(body)
            finally:
                self._upload_slots.release()
        finally:
            self.bodies.release(n)

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
            "counts": self.counts(), "own": self.own.counts() if self.own is not None else None,
            "token_required": self.token is not None, "top_k": self.top_k,
            "version": __version__,
        })

    def healthz(self, query) -> Response:
        snapshot = self.latest.get()
        age = time.time() - snapshot.record["timestamp"] if snapshot else None
        body = {"ok": age is not None and age < STALE_S, "frames": snapshot.number + 1 if snapshot else 0,
                "last_frame_age_s": None if age is None else round(age, 3),
                "fps": snapshot.record["fps"] if snapshot else 0.0, "viewers": self.viewers,
                "frames_streamed": self.frames_streamed, "photos_saved": self.saved,
                "photo_save_failures": self.save_failures,
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
        image = decode(body, "upload", warn=warnings.append, working_side=WORK_SIDE,  # ImageError: 400
                       max_bytes=self.max_decode_bytes)
        result = self.classify_image(image)
        record = {**result.to_dict(), "unknown": result.is_unknown}
        if self.own is not None:  # as classify --own --json says it
            record["own_photos"] = sum(self.own.counts().values())
        if warnings:
            record["warnings"] = warnings
        return json_response(record)

    def label(self, body: bytes) -> Response:
        from ..collect import class_folder, save_frame

        if self.collect_dir is None:
            raise HttpError(409, "labelling is off: start serve with --collect DIR or --own DIR")
        label = parse_label(body, self.choices)
        snapshot = self._snapshot()
        if self.own is not None and self.own.full:
            raise HttpError(409, "the own photos are as many as an imprint takes; forget a class first")
        root = self.collect_dir.resolve()
        folder = self.collect_dir / class_folder(label)
        # The name is the model's own label, but the folder could be a symbolic
        # link someone made on the device: never write outside the collect dir.
        if not folder.resolve().is_relative_to(root):
            self.log.error(f"not saving {label}: {folder} leads outside {self.collect_dir}; remove that link")
            raise HttpError(409, f"the folder for {label} leads outside the collect folder; the server's log "
                                 "says which")
        with self.own.lock if self.own is not None else contextlib.nullcontext():  # no forget in between
            try:
                path = save_frame(self.collect_dir, label, self.labels, snapshot.roi())
            except OSError as e:  # a full disk, a read-only or vanished folder: the person at the device must know
                with self._count_lock:
                    self.save_failures += 1
                self.log.error(f"can't save a {label} photo in {self.collect_dir}: {e.strerror or e}")
                raise HttpError(507 if e.errno in (errno.ENOSPC, errno.EDQUOT) else 500,
                                f"can't save the photo: {e.strerror or type(e).__name__}; the server's log says where")
            with self._count_lock:
                self.saved += 1
            saved = path.relative_to(self.collect_dir).as_posix()
            answer = {"saved": saved, "label": label, "frame": snapshot.number, "count": photo_count(folder)}
            if self.own is None:
                self.log.info(f"saved {saved} (frame {snapshot.number})")
                return json_response(answer)
            answer["own"] = self._add_own(path, saved, label, snapshot.number)
        return json_response(answer)

    def _add_own(self, path: Path, saved: str, label: str, frame: int) -> int | None:
        """Embed a saved photo into the own photos: its label's count of them, None if it failed
        (the photo stays saved and is imprinted at the next start). One log line either way."""
        try:
            note = self.own.add(path, label)
        except (ImageError, OSError) as e:
            self.log.error(f"saved {saved} (frame {frame}) but can't add it to the own photos: {e}")
            return None
        count = self.own.counts()[label]
        self.log.info(f"saved {saved} (frame {frame}), own photos of {label}: {count}"
                      + (f"; {note}" if note else ""))
        return count

    def forget(self, body: bytes) -> Response:
        """Drop a class's own photos from the imprint; its folder moves to <own dir>/.forgotten/<time>/."""
        if self.own is None:
            raise HttpError(409, "there are no own photos to forget: start serve with --own DIR")
        label = parse_label(body, self.choices)
        from ..own import FORGOTTEN
        aside = self.collect_dir / FORGOTTEN
        if not aside.resolve().is_relative_to(self.collect_dir.resolve()):  # a link someone made on the device
            self.log.error(f"not forgetting {label}: {aside} leads outside {self.collect_dir}; remove that link")
            raise HttpError(409, f"the folder forgotten photos go to leads outside the own-photo folder; the "
                                 "server's log says which")
        try:
            forgotten, moved_to, note = self.own.forget(label)
        except OSError as e:
            self.log.error(f"can't forget the {label} photos: moving their folder failed: {e.strerror or e}")
            raise HttpError(507 if e.errno in (errno.ENOSPC, errno.EDQUOT) else 500,
                            f"can't move the {label} photos aside: {e.strerror or type(e).__name__}; "
                            "the server's log says where")
        self.log.info(f"forgot {forgotten} own photos of {label}"
                      + (f", files moved to {moved_to}/" if moved_to else "") + (f"; {note}" if note else ""))
        return json_response({"label": label, "forgotten": forgotten, "moved_to": moved_to,
                              "own": self.own.counts()[label]})

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

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """Embeddings of decoded photos (imprint.embed_photos) on this interpreter, between uploads."""
        from ..imprint import embed_photos
        with self._lock:
            return embed_photos(self.classifier, images)


def photo_count(folder: Path) -> int:
    """Photos saved in a class folder (finished ones: temporaries start with '.')."""
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(".jpg") and not e.name.startswith("."))
    except OSError:
        return 0

