"""`serve`: the web view and JSON API.

First the pure functions on requests (token, limits, labels, routing), then
`App` answered directly, without sockets: each endpoint's JSON, bad images,
wrong labels, tokens, path tricks. Then a real server on 127.0.0.1 playing a
generated video of garments: the stream, the client limit, a stalled viewer,
slow and oversized requests. Then the command itself: SIGTERM, Ctrl-C, a
port in use. The browser end to end is tests/test_serve_browser.py.
"""

from __future__ import annotations

import http.client
import io
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import cli, frames, serve
from edge_runtime.classifier import Classifier
from edge_runtime.serve import App, HttpError, Latest, Snapshot
from edge_runtime.frames import RoiSpec

ROOT = Path(__file__).resolve().parents[1]
FRAME_H, FRAME_W, GARMENT_SIDE = 480, 640, 216


# -- a video of garments ------------------------------------------------------------------------


def photo_like(image28: np.ndarray) -> np.ndarray:
    """A 640x480 BGR frame: the 28x28 image enlarged, dark on white, in the default region of interest."""
    canvas = np.zeros((FRAME_H, FRAME_W), np.uint8)
    big = cv2.resize(image28, (GARMENT_SIDE, GARMENT_SIDE), interpolation=cv2.INTER_CUBIC)
    y, x = (FRAME_H - GARMENT_SIDE) // 2, (FRAME_W - GARMENT_SIDE) // 2
    canvas[y:y + GARMENT_SIDE, x:x + GARMENT_SIDE] = big
    return cv2.cvtColor(255 - canvas, cv2.COLOR_GRAY2BGR)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 15.0, repeat: int = 1) -> Path:
    """MJPG .avi: every OpenCV build writes and reads it, headless ones included."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (FRAME_W, FRAME_H))
    assert writer.isOpened()
    for frame in frames:
        for _ in range(repeat):
            writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory, fashion) -> Path:
    frames = [photo_like(fashion.test_images[i]) for i in range(6)]
    return write_video(tmp_path_factory.mktemp("video") / "garments.avi", frames, repeat=5)


@pytest.fixture(scope="module")
def classifier(tiny_int8_model) -> Classifier:
    return Classifier(tiny_int8_model, threshold=None)


def snapshot_of(frame: np.ndarray, classifier, number: int = 0, fps: float = 12.5) -> Snapshot:
    fr = next(frames.classify_frames([frame], classifier, RoiSpec("center")))
    fr.number = number
    return Snapshot(fr, fps)


def list_logger() -> tuple[logging.Logger, list[str]]:
    """A logger of its own whose lines (as serve writes them: 'error: ...') go to a list."""
    lines: list[str] = []
    logger = logging.getLogger(f"test_serve.{next(LOGGERS)}")
    serve.logs.to_callable(lines.append, logger)
    return logger, lines


LOGGERS = itertools.count()


def make_app(classifier, tiny_int8_model, **overrides) -> App:
    logger, logs = list_logger()
    settings = dict(labels=classifier.labels, metadata=classifier.metadata, threshold=classifier.threshold,
                    latest=Latest(), classify_image=serve.UploadClassifier(Classifier(tiny_int8_model, threshold=None)),
                    source_name="video file test.avi", model_name="fashion_mnist_int8.tflite", log=logger)
    settings.update(overrides)
    app = App(**settings)
    app.logs = logs
    return app


def ask(app: App, method: str, target: str, body: bytes = b"", **headers) -> serve.Response:
    headers = {"Host": "127.0.0.1:8080", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if method == "POST" and "Content-Length" not in headers:
        headers["Content-Length"] = str(len(body))
    stream = io.BytesIO(body)
    response = app.handle(method, target, headers, stream.read)
    assert response is serve.STREAM or isinstance(response, serve.Response)
    return response


def post_label(app: App, label, **headers) -> serve.Response:
    return ask(app, "POST", "/api/label", json.dumps({"label": label}).encode(),
               Content_Type="application/json", **headers)


def assert_one_line_error(response: serve.Response, status: int, *fragments: str) -> str:
    assert response.status == status, response.body
    assert response.content_type == "application/json"
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body["error"]


# -- pure functions on requests -----------------------------------------------------------------


def test_loopback_and_host_header():
    for host in ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"):
        assert serve.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.20", "raspberrypi.local", ""):
        assert not serve.is_loopback(host), host
    for header in ("127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "app.localhost:1"):
        assert serve.host_allowed(header, loopback_only=True), header
    for header in ("evil.example:8080", "127.0.0.1.evil.example", None, ""):
        assert not serve.host_allowed(header, loopback_only=True), header  # DNS rebinding
    assert serve.host_allowed("raspberrypi.local:8080", loopback_only=False)


def test_same_origin():
    assert serve.same_origin(None, "pi.local:8080")  # curl, a script: not a browser page
    assert serve.same_origin("http://pi.local:8080", "pi.local:8080")
    assert not serve.same_origin("http://evil.example", "pi.local:8080")
    assert not serve.same_origin("null", "pi.local:8080")  # a sandboxed frame, a file:// page
    assert not serve.same_origin("http://pi.local:8080", None)


def test_token_checks_are_constant_time(monkeypatch):
    serve.check_token(None, None)  # no token set: anyone on a loopback bind
    with pytest.raises(HttpError) as e:
        serve.check_token(None, "a-secret-token")
    assert e.value.status == 401 and ("WWW-Authenticate", 'Bearer realm="fashion-edge"') in e.value.headers
    for header in ("Basic a-secret-token", "Bearer", "a-secret-token"):
        with pytest.raises(HttpError) as e:
            serve.check_token(header, "a-secret-token")
        assert e.value.status == 401
    compared = []
    real = serve.access.hmac.compare_digest
    monkeypatch.setattr(serve.access.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    with pytest.raises(HttpError) as e:
        serve.check_token("Bearer a-secret-tokem", "a-secret-token")
    assert e.value.status == 403
    serve.check_token("bearer  a-secret-token ", "a-secret-token")
    assert compared == [(b"a-secret-tokem", b"a-secret-token"), (b"a-secret-token", b"a-secret-token")]


def test_body_length():
    assert serve.body_length({"Content-Length": "12"}, 100) == 12
    cases = [({}, 411), ({"Transfer-Encoding": "chunked"}, 411), ({"Content-Length": "-1"}, 400),
             ({"Content-Length": "1e3"}, 400), ({"Content-Length": "101"}, 413)]
    for headers, status in cases:
        with pytest.raises(HttpError) as e:
            serve.body_length(headers, 100)
        assert e.value.status == status, headers


def test_parse_label_takes_only_the_models_labels():
    choices = ["T-shirt/top", "Sneaker", "none"]
    assert serve.parse_label(b'{"label": "T-shirt/top"}', choices) == "T-shirt/top"
    assert serve.parse_label('{"label": "none"}'.encode(), choices) == "none"
    bad = [b"", b"Sneaker", b"[1]", b'{"label": 3}', b'{"name": "Sneaker"}', b'{"label": ["Sneaker"]}',
           b'{"label": "sneaker"}', b'{"label": "../../etc/passwd"}', b'{"label": "Sneaker/../../x"}',
           b'{"label": "/tmp/x"}', b'{"label": "Sneaker\\u0000"}', b"\xff\xfe", b'{"label": "T-shirt_top"}']
    for body in bad:
        with pytest.raises(HttpError) as e:
            serve.parse_label(body, choices)
        assert e.value.status == 400 and "\n" not in e.value.message, body


def test_small_pure_helpers():
    assert serve.parse_after({}) is None and serve.parse_after({"after": ["41"]}) == 41
    with pytest.raises(HttpError):
        serve.parse_after({"after": ["x"]})
    assert serve.part_header(123) == b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 123\r\n\r\n"
    assert serve.next_due(10.0, 0.1, 10.05) == pytest.approx(10.1)  # on time: one interval on
    assert serve.next_due(10.0, 0.1, 13.0) == pytest.approx(12.9)  # after a stall: no race to catch up
    assert serve.urls_to_open("127.0.0.1", 8080, None, "pi", []) == ["http://127.0.0.1:8080/"]
    assert serve.urls_to_open("0.0.0.0", 8080, "tok", "pi", ["192.168.1.5"]) == [
        "http://pi.local:8080/#token=tok", "http://192.168.1.5:8080/#token=tok"]
    assert serve.urls_to_open("::", 81, None, "pi.lan", ["fe80::1"]) == ["http://pi.lan:81/", "http://[fe80::1]:81/"]


def test_resolve_token():
    assert serve.resolve_token(None, "127.0.0.1") == (None, False)
    token, generated = serve.resolve_token(None, "0.0.0.0")
    assert generated and len(token) >= 16
    assert serve.resolve_token("my-own-long-token", "127.0.0.1") == ("my-own-long-token", False)
    for short in ("short", "8-chars!", "fifteen-chars-x"):  # an 8-character token was accepted before
        with pytest.raises(serve.UsageError, match="at least 16"):
            serve.resolve_token(short, "0.0.0.0")


# -- App: each endpoint, answered directly ------------------------------------------------------


def test_before_the_first_frame(classifier, tiny_int8_model):
    app = make_app(classifier, tiny_int8_model)
    assert_one_line_error(ask(app, "GET", "/api/latest"), 503, "no frame yet")
    assert_one_line_error(ask(app, "GET", "/frame.jpg"), 503, "no frame yet")
    health = ask(app, "GET", "/healthz")
    assert health.status == 503 and health.json()["ok"] is False and health.json()["frames"] == 0


def test_latest_info_and_images(classifier, tiny_int8_model, fashion):
    app = make_app(classifier, tiny_int8_model)
    frame = photo_like(fashion.test_images[0])
    snapshot = snapshot_of(frame, classifier, number=7)
    app.latest.publish(snapshot)

    latest = ask(app, "GET", "/api/latest")
    record = latest.json()
    fr = next(frames.classify_frames([frame], classifier, RoiSpec("center")))
    expected = {k: v for k, v in frames.json_record(fr).items() if k not in ("time", "latency_ms", "frame")}
    assert {k: record[k] for k in expected} == expected  # classify --json's fields, as webcam prints them
    assert record["frame"] == 7 and record["roi"] == [176, 96, 288, 288] and record["frame_size"] == [640, 480]
    assert record["fps"] == 12.5 and abs(record["timestamp"] - time.time()) < 60 and "time" in record
    assert latest.headers == () and latest.content_type == "application/json"

    png = ask(app, "GET", "/input.png?frame=7")
    assert png.content_type == "image/png"
    model_input = cv2.imdecode(np.frombuffer(png.body, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(model_input, snapshot.result.model_input)
    jpeg = ask(app, "GET", "/frame.jpg")
    assert jpeg.content_type == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(jpeg.body, np.uint8), cv2.IMREAD_COLOR).shape == frame.shape

    info = ask(app, "GET", "/api/info").json()
    assert info["labels"] == classifier.labels and info["choices"] == classifier.labels + ["none"]
    assert info["model"]["accuracy"] == classifier.metadata["accuracy"]["accuracy"]
    assert info["model"]["threshold"] == classifier.threshold == classifier.metadata["unknown_threshold"]
    assert info["collect"] is False and info["token_required"] is False and info["counts"] == {}

    health = ask(app, "GET", "/healthz")
    assert health.status == 200 and health.json()["ok"] is True and health.json()["frames"] == 8

    page = ask(app, "GET", "/")
    assert page.status == 200 and page.content_type.startswith("text/html")
    html = page.body.decode()
    for element in ('id="video"', 'id="roi"', 'id="label"', 'id="topk"', 'id="input"', 'id="buttons"',
                    'id="stats"', 'id="model"', "/api/latest?after=", "/stream.mjpg", "/api/label"):
        assert element in html, element
    assert "http://" not in html and "https://" not in html  # nothing from the internet
    headers = dict(page.headers)
    assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"


def test_latest_after_waits_for_a_newer_frame(classifier, tiny_int8_model, fashion, monkeypatch):
    monkeypatch.setattr(serve.app, "LONG_POLL_S", 0.3)
    app = make_app(classifier, tiny_int8_model)
    first = snapshot_of(photo_like(fashion.test_images[0]), classifier, number=3)
    app.latest.publish(first)
    t = time.monotonic()
    assert ask(app, "GET", "/api/latest?after=3").json()["frame"] == 3  # nothing newer: the current one
    assert time.monotonic() - t >= 0.25
    newer = snapshot_of(photo_like(fashion.test_images[1]), classifier, number=4)
    threading.Timer(0.1, app.latest.publish, [newer]).start()
    t = time.monotonic()
    assert ask(app, "GET", "/api/latest?after=3").json()["frame"] == 4
    assert time.monotonic() - t < 0.25  # answered when the frame came, not at the timeout
    assert_one_line_error(ask(app, "GET", "/api/latest?after=soon"), 400, "frame number")


def test_classify_upload_answers_what_classify_json_says(classifier, tiny_int8_model, fashion, tmp_path, capsys):
    app = make_app(classifier, tiny_int8_model)
    for i, (suffix, image) in enumerate([(".jpg", photo_like(fashion.test_images[3])),
                                         (".png", photo_like(fashion.test_images[4])[:300, :200])]):
        path = tmp_path / f"photo{i}{suffix}"
        path.write_bytes(cv2.imencode(suffix, image)[1].tobytes())
        assert cli.main(["classify", "--json", "--model", str(tiny_int8_model), str(path)]) == 0
        expected = json.loads(capsys.readouterr().out)
        del expected["path"]
        response = ask(app, "POST", "/api/classify", path.read_bytes(), Content_Type="image/jpeg")
        assert response.status == 200 and response.json() == expected


def test_bad_uploads_are_400_with_the_one_line_message(classifier, tiny_int8_model, fashion, monkeypatch):
    app = make_app(classifier, tiny_int8_model, max_upload_bytes=100_000)
    jpeg = cv2.imencode(".jpg", photo_like(fashion.test_images[0]))[1].tobytes()
    assert_one_line_error(ask(app, "POST", "/api/classify", b"not an image at all"), 400,
                          "upload: not a decodable image")
    assert_one_line_error(ask(app, "POST", "/api/classify", jpeg[:len(jpeg) // 2]), 400, "upload: truncated JPEG")
    # A 100-byte PNG that claims 60000x60000 pixels: refused from its header, never decoded.
    bomb = (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (60000).to_bytes(4, "big") * 2
            + b"\x08\x02\x00\x00\x00" + b"\x00" * 4 + b"\x00\x00\x00\x00IEND" + b"\x00" * 4)
    assert_one_line_error(ask(app, "POST", "/api/classify", bomb), 400, "megapixel")
    assert_one_line_error(ask(app, "POST", "/api/classify", b""), 400, "empty body")
    # Refused from the headers alone: the body is never read.
    never = {"Host": "localhost", "Content-Length": "100001"}
    response = app.handle("POST", "/api/classify", never, lambda n: pytest.fail("body read"))
    assert_one_line_error(response, 413, "100001 bytes", "100000")
    response = app.handle("POST", "/api/classify", {"Host": "localhost"}, lambda n: pytest.fail("body read"))
    assert_one_line_error(response, 411, "Content-Length")
    # Every upload slot taken: 503, not a growing pile of decoded images.
    monkeypatch.setattr(serve.app, "UPLOAD_WAIT_S", 0.1)
    for _ in range(app.uploads_at_once):
        app._upload_slots.acquire()
    assert_one_line_error(ask(app, "POST", "/api/classify", jpeg), 503, "busy")


def test_label_saves_the_region_of_interest_atomically(classifier, tiny_int8_model, fashion, tmp_path):
    collect = tmp_path / "collect"
    collect.mkdir()
    app = make_app(classifier, tiny_int8_model, collect_dir=collect)
    assert_one_line_error(post_label(app, "Sneaker"), 503, "no frame yet")
    frame = photo_like(fashion.test_images[0])
    app.latest.publish(snapshot_of(frame, classifier, number=11))

    response = post_label(app, "T-shirt/top")
    assert response.status == 200, response.body
    body = response.json()
    assert body["label"] == "T-shirt/top" and body["frame"] == 11 and body["count"] == 1
    assert body["saved"].startswith("T-shirt_top/") and body["saved"].endswith(".jpg")
    saved = collect / body["saved"]
    image = cv2.imread(str(saved))
    assert image.shape == (288, 288, 3)  # the region of interest: what the model classified
    assert np.abs(image.astype(int) - frames.crop(frame, (176, 96, 288, 288)).astype(int)).mean() < 3
    assert post_label(app, "none").status == 200 and (collect / "none").is_dir()
    assert post_label(app, "T-shirt/top").json()["count"] == 2
    files = sorted(p.relative_to(collect).as_posix() for p in collect.rglob("*") if p.is_file())
    assert len(files) == 3 and not any(Path(f).name.startswith(".") for f in files)  # no temporaries left
    assert ask(app, "GET", "/api/info").json()["counts"]["T-shirt/top"] == 2
    assert app.logs[0].startswith("saved T-shirt_top/")


def test_label_refusals_write_nothing(classifier, tiny_int8_model, fashion, tmp_path):
    collect = tmp_path / "collect"
    collect.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    app = make_app(classifier, tiny_int8_model, collect_dir=collect)
    app.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), classifier))
    for label in ("sneaker", "../outside", "../../etc/passwd", "/tmp/x", "Sneaker/../../outside", "", None, 7):
        assert_one_line_error(post_label(app, label), 400)
    assert_one_line_error(ask(app, "POST", "/api/label", b'{"label": "Sneaker"}'), 415, "application/json")
    assert_one_line_error(ask(app, "POST", "/api/label", b'{"label": "Sneaker"}', Content_Type="text/plain"), 415)
    assert_one_line_error(ask(app, "POST", "/api/label", b"x" * 5000, Content_Type="application/json"), 413)
    # A class folder someone made a symbolic link out of the collect dir.
    (collect / "Bag").symlink_to(outside)
    assert_one_line_error(post_label(app, "Bag"), 409, "outside")
    assert list(outside.iterdir()) == [] and [p.name for p in collect.iterdir()] == ["Bag"]
    off = make_app(classifier, tiny_int8_model)
    off.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), classifier))
    assert_one_line_error(post_label(off, "Sneaker"), 409, "--collect DIR")


def test_token_on_a_lan_bind(classifier, tiny_int8_model, fashion, tmp_path):
    app = make_app(classifier, tiny_int8_model, collect_dir=tmp_path, token="a-secret-token", loopback=False)
    app.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), classifier))
    host = {"Host": "raspberrypi.local:8080"}
    for path in ("/", "/api/latest", "/api/info", "/frame.jpg", "/input.png", "/healthz"):
        assert ask(app, "GET", path, **host).status == 200, path  # viewing needs no token
    assert ask(app, "GET", "/stream.mjpg", **host) is serve.STREAM
    jpeg = cv2.imencode(".jpg", photo_like(fashion.test_images[0]))[1].tobytes()
    for send in (lambda **h: post_label(app, "Bag", **host, **h),
                 lambda **h: ask(app, "POST", "/api/classify", jpeg, **host, **h)):
        assert_one_line_error(send(), 401, "token")
        assert_one_line_error(send(Authorization="Bearer wrong-token"), 403, "wrong token")
        assert send(Authorization="Bearer a-secret-token").status == 200
    assert list(tmp_path.rglob("*.jpg")) and len(list(tmp_path.rglob("*.jpg"))) == 1
    assert ask(app, "GET", "/api/info", **host).json()["token_required"] is True
    # Expect: 100-continue is answered from the head: no token, no body sent.
    head = {**host, "Content-Length": "5000"}
    assert app.precheck("POST", "/api/classify", head).status == 401
    assert app.precheck("POST", "/api/classify", {**head, "Authorization": "Bearer a-secret-token"}) is None
    assert app.precheck("POST", "/api/classify", {**head, "Content-Length": str(app.max_upload_bytes + 1),
                                                  "Authorization": "Bearer a-secret-token"}).status == 413


@pytest.mark.parametrize("target", [
    "/../../etc/passwd", "/api/../api/label", "/api/latest/..", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd",
    "/api/latest/", "/API/LATEST", "/stream.mjpg/../../x", "/api/%6catest", "/input.png/..", "/index.html/",
    "/collect/Sneaker/", "/models/fashion_mnist_int8.tflite", "/.env", "/" + "a" * 5000,
    "http://evil.example/etc/passwd",
])
def test_path_tricks_are_404(classifier, tiny_int8_model, target):
    app = make_app(classifier, tiny_int8_model)
    assert_one_line_error(ask(app, "GET", target), 404, "no such page")


def test_methods_hosts_and_origins(classifier, tiny_int8_model, fashion, tmp_path):
    app = make_app(classifier, tiny_int8_model, collect_dir=tmp_path)
    app.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), classifier))
    response = ask(app, "DELETE", "/api/label")
    assert_one_line_error(response, 405, "use POST")
    assert response.headers == (("Allow", "POST"),)
    assert_one_line_error(ask(app, "POST", "/api/latest"), 405, "use GET")
    assert ask(app, "GET", "/api/latest?x=../../etc/passwd&after=").status == 400  # after= is not a number
    assert ask(app, "GET", "/input.png?path=/etc/passwd").content_type == "image/png"  # queries name nothing
    assert_one_line_error(ask(app, "GET", "/api/latest", Host="evil.example"), 403, "localhost")
    assert_one_line_error(post_label(app, "Bag", Origin="http://evil.example"), 403, "another web site")
    assert post_label(app, "Bag", Origin="http://127.0.0.1:8080").status == 200  # the page itself
    assert list(tmp_path.rglob("*.jpg")) and len(list(tmp_path.rglob("*.jpg"))) == 1


def test_a_bug_is_500_json_and_one_log_line(classifier, tiny_int8_model, monkeypatch):
    app = make_app(classifier, tiny_int8_model)

    def broken(query):
        raise KeyError("labels")
    monkeypatch.setattr(app, "info", broken)
    assert_one_line_error(ask(app, "GET", "/api/info"), 500, "internal error (KeyError)")
    assert app.logs == ["error: GET /api/info: KeyError: 'labels'"]


def test_stream_gives_a_slow_viewer_the_latest_frame_only(classifier, tiny_int8_model, fashion):
    """A viewer whose writes are slow receives fewer frames, always the newest; the publisher never waits."""
    app = make_app(classifier, tiny_int8_model)
    snapshots = [snapshot_of(photo_like(fashion.test_images[i % 3]), classifier, number=i) for i in range(40)]
    received = []

    def slow_write(data: bytes):
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1])
        assert head.startswith(b"--frame\r\nContent-Type: image/jpeg") and len(rest) == length + 2
        received.append(app.latest.get().number)
        time.sleep(0.05)

    viewer = threading.Thread(target=app.stream, args=(slow_write, 0.05))
    viewer.start()
    publish_times = []
    for snapshot in snapshots:  # 40 frames at 100 fps; the viewer manages ~20 a second
        t = time.perf_counter()
        app.latest.publish(snapshot)
        publish_times.append(time.perf_counter() - t)
        time.sleep(0.01)
    time.sleep(0.2)
    app.latest.close()
    viewer.join(5)
    assert not viewer.is_alive() and app.viewers == 0
    assert 3 <= len(received) < 30 and received == sorted(received)  # frames dropped, never out of order
    assert received[-1] == 39  # it ends on the newest
    assert max(publish_times) < 0.005  # the camera loop never waited for the viewer
    assert app.frames_streamed == len(received)


# -- a real server on 127.0.0.1 -----------------------------------------------------------------


def serve_args(video: Path, model: Path, *extra: str):
    return cli.build_parser().parse_args(["serve", str(video), "--port", "0", "--model", str(model), *extra])


@pytest.fixture
def running(video, tiny_int8_model, tmp_path):
    """Start serve in this process; yields a function (extra args) -> Service. Stops them all at the end."""
    services = []

    def start(*extra: str) -> serve.Service:
        logs: list[str] = []
        service = serve.start(serve_args(video, tiny_int8_model, *extra), log=logs.append)
        service.logs = logs
        services.append(service)
        wait_for(lambda: service.app.latest.get() is not None, 20, "no first frame")
        return service
    yield start
    for service in services:
        service.close()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(what)


def get(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10):
    """(status, headers, body) of a request; errors included."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def closed_by_server(sock: socket.socket, timeout: float = 10) -> bool:
    """Read what is left; True when the server closed the connection, False if it stayed open."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def read_parts(sock_file, n: int) -> list[bytes]:
    """The first n JPEGs of a multipart stream, after its response head."""
    parts = []
    while len(parts) < n:
        line = sock_file.readline()
        if not line:
            break
        if line.startswith(b"Content-Length:"):
            length = int(line.split(b":")[1])
            sock_file.readline()  # the blank line
            parts.append(sock_file.read(length))
    return parts


def open_stream(port: int, timeout: float = 10) -> tuple[socket.socket, object]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    f = sock.makefile("rb")
    status = f.readline()
    head = []
    while (line := f.readline()) not in (b"\r\n", b""):
        head.append(line)
    return sock, (status, head, f)


def test_end_to_end_over_http(running, tmp_path, fashion):
    service = running("--collect", str(tmp_path / "collect"))
    url = service.url
    status, headers, body = get(url + "healthz")
    assert status == 200 and json.loads(body)["ok"] is True
    status, headers, body = get(url + "api/latest")
    latest = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"
    assert {"time", "frame", "label", "score", "top_k", "unknown", "latency_ms", "fps", "roi"} <= set(latest)
    status, headers, body = get(url)
    assert status == 200 and b'id="buttons"' in body and "default-src 'none'" in headers["Content-Security-Policy"]

    sock, (status_line, head, f) = open_stream(service.port)
    with sock:
        assert status_line.startswith(b"HTTP/1.1 200")
        assert b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n" in head
        parts = read_parts(f, 3)
        frames = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
        assert len(frames) == 3 and all(fr.shape == (480, 640, 3) for fr in frames)

    label = json.dumps({"label": "Sneaker"}).encode()
    status, _, body = get(url + "api/label", label, {"Content-Type": "application/json"})
    assert status == 200 and (tmp_path / "collect" / json.loads(body)["saved"]).is_file()
    jpeg = cv2.imencode(".jpg", photo_like(fashion.test_images[2]))[1].tobytes()
    status, _, body = get(url + "api/classify", jpeg, {"Content-Type": "image/jpeg"})
    assert status == 200 and json.loads(body)["label"] in service.app.choices + ["unknown"]
    status, _, body = get(url + "api/classify", b"GIF89a nonsense", {"Content-Type": "image/gif"})
    assert status == 400 and json.loads(body) == {"error": "upload: not a decodable image (truncated or not "
                                                           "JPEG/PNG/WEBP/BMP)"}
    status, _, body = get(url + "nothing/here")
    assert status == 404 and "error" in json.loads(body)


def test_client_limit(running):
    service = running("--max_clients", "2")
    first, _ = open_stream(service.port)
    second, _ = open_stream(service.port)
    try:
        status, headers, body = get(service.url + "api/latest")
        assert status == 503 and "too many clients (2)" in json.loads(body)["error"] and headers["Retry-After"]
        assert service.server.refused == 1
    finally:
        first.close()
    wait_for(lambda: get(service.url + "api/latest")[0] == 200, 10, "a freed slot was not reused")
    second.close()


def test_a_stalled_viewer_is_dropped_and_never_slows_the_others(running):
    service = running("--client_timeout", "1")
    stalled = socket.create_connection(("127.0.0.1", service.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
    sock, (_, _, f) = open_stream(service.port)
    with sock, stalled:
        wait_for(lambda: service.app.viewers == 2, 5, "both viewers connected")
        frames_before, t = service.camera.frames, time.monotonic()
        parts = read_parts(f, 45)  # 3 s of the 15 fps video
        elapsed = time.monotonic() - t
        loop_rate = (service.camera.frames - frames_before) / elapsed
        assert len(parts) == 45 and 45 / elapsed > 12, f"{45 / elapsed:.1f} fps to the reading viewer"
        assert loop_rate > 12, f"camera loop at {loop_rate:.1f} fps"
        wait_for(lambda: service.app.viewers == 1, 10, "the stalled viewer was never dropped")
        assert closed_by_server(stalled)  # what the stalled client finally reads ends


def test_slow_and_oversized_requests(running):
    service = running("--client_timeout", "1", "--max_upload_mb", "0.01")
    port = service.port
    # Half a request line, then nothing: 408 after the timeout, and the connection is closed.
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(b"GET /api/lat")
    t = time.monotonic()
    answer = slow.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request head not complete within 1 s" in answer
    assert time.monotonic() - t < 5
    slow.close()
    assert service.server.clients == 0  # it never had a slot

    def raw(request: bytes) -> tuple[int, dict]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            response = http.client.HTTPResponse(s)
            response.begin()
            return response.status, json.loads(response.read())

    status, body = raw(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 20000 + b"\r\n\r\n")
    assert status == 431 and "16384 bytes" in body["error"]
    status, body = raw(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 414 and "16384 bytes" in body["error"]
    status, body = raw(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n")
    assert status == 413 and "999999999 bytes" in body["error"]
    status, body = raw(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc")
    assert status == 408 and "stalled after 3 of 100 bytes" in body["error"]
    # Expect: 100-continue (curl, for uploads over 1 KB): refused before the body is sent, or invited.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        response = http.client.HTTPResponse(s)
        response.begin()
        assert response.status == 400 and "not a decodable image" in json.loads(response.read())["error"]
    status, body = raw(b"HELLO\r\n\r\n")
    assert status == 400 and "error" in body
    status, body = raw(b"BREW /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 501 and "BREW" in body["error"]
    assert service.logs == []  # none of it is an error of the server's


def test_in_process_start_and_close_release_everything(video, tiny_int8_model):
    service = serve.start(serve_args(video, tiny_int8_model))
    port = service.port
    wait_for(lambda: service.app.latest.get() is not None, 20, "no first frame")
    viewer, _ = open_stream(port)
    with viewer:
        service.close()
        assert not service.camera.thread.is_alive()
        assert closed_by_server(viewer, 5)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the next serve does
        s.bind(("127.0.0.1", port))  # the port is free again


# -- the command ---------------------------------------------------------------------------------


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", serve.TOKEN_ENV_VAR)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def start_cli(*argv: str) -> tuple[subprocess.Popen, list[str]]:
    """Start `python -m edge_runtime serve ...`; returns it and its banner, up to "Ctrl-C to stop"."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", *argv], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = []
    while True:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            pytest.fail(f"serve ended before its banner: {banner} {proc.stderr.read()}")
        banner.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C to stop"):
            return proc, banner


def local_url(banner: list[str]) -> str:
    line = next(l for l in banner if l.startswith("open http://"))
    return line.split()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_stops_cleanly_on_sigterm_and_ctrl_c(video, tiny_int8_model, sig):
    proc, banner = start_cli(str(video), "--port", "0", "--model", str(tiny_int8_model))
    try:
        url = local_url(banner)
        assert url.startswith("http://127.0.0.1:") and "this machine only" in banner[1]
        wait_for(lambda: get(url + "api/latest")[0] == 200, 20, "no frame served")
        viewer, _ = open_stream(int(url.rsplit(":", 1)[1].strip("/")))
        with viewer:
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"stopped ({sig.name})" in err and "Traceback" not in err


def test_cli_lan_bind_prints_a_token_and_needs_it(video, tiny_int8_model, tmp_path):
    proc, banner = start_cli(str(video), "--host", "0.0.0.0", "--port", "0", "--model", str(tiny_int8_model),
                             "--collect", str(tmp_path))
    try:
        text = "\n".join(banner)
        token_line = next(l for l in banner if l.startswith("labelling and uploads need the token "))
        token = token_line.split()[6]
        assert "(generated;" in token_line and f"#token={token}" in text
        port = next(l for l in banner if "#token=" in l).split(":")[2].split("/")[0]
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: get(url + "api/latest")[0] == 200, 20, "no frame served")
        label = json.dumps({"label": "Bag"}).encode()
        assert get(url + "api/label", label, {"Content-Type": "application/json"})[0] == 401
        status, _, body = get(url + "api/label", label, {"Content-Type": "application/json",
                                                         "Authorization": f"Bearer {token}"})
        assert status == 200 and (tmp_path / json.loads(body)["saved"]).is_file()
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "saved Bag/" in err and "stopped (SIGTERM)" in err


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", "serve", *argv], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_cli_errors_are_one_line(video, tiny_int8_model, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(str(video), "--port", str(port), "--model", str(tiny_int8_model))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run_cli(str(video), "--port", "0", "--model", str(tiny_int8_model), "--collect", str(blocker / "photos"))
    assert r.returncode == 2 and r.stderr.startswith("error: --collect") and r.stderr.count("\n") == 1
    r = run_cli(str(video), "--port", "0", "--model", str(tmp_path / "none.tflite"))
    assert r.returncode == 4 and r.stderr.count("\n") == 1 and "make train convert" in r.stderr
    r = run_cli(str(tmp_path / "missing.avi"), "--port", "0", "--model", str(tiny_int8_model))
    assert r.returncode == 6 and r.stderr.count("\n") == 1 and "not found" in r.stderr
    r = run_cli(str(video), "--host", "0.0.0.0", "--token", "eight-ch", "--model", str(tiny_int8_model))
    assert r.returncode == 2 and "at least 16 characters" in r.stderr
    r = run_cli(str(video), "--host", "203.0.113.9", "--port", "0", "--model", str(tiny_int8_model))
    assert r.returncode == 2 and "not an address of this machine" in r.stderr and r.stderr.count("\n") == 1
    for flag in (["--port", "70000"], ["--max_clients", "0"], ["--client_timeout", "nan"]):
        r = run_cli(str(video), *flag)
        assert r.returncode == 2 and flag[0] in r.stderr


# -- the device: systemd unit, bundle, doctor ------------------------------------------------------


def test_serve_unit_bundle_and_install_script():
    import re

    from tools import pi_bundle
    unit = (ROOT / "deploy" / "fashion-edge-serve.service").read_text()
    assert re.search(r'^ExecStart="@DIR@/run" serve --host 0\.0\.0\.0 ', unit, re.M)
    assert "--collect" in unit and "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit
    assert "@USER@" in unit and "SupplementaryGroups=video" in unit
    assert pi_bundle.DEPLOY["fashion-edge-serve.service"] == 0o644
    install = (ROOT / "deploy" / "install.sh").read_text()
    assert "--serve) SERVE=1" in install and "install_unit fashion-edge-serve" in install
    subprocess.run(["bash", "-n", str(ROOT / "deploy" / "install.sh")], check=True)
    shipped = [p.relative_to(ROOT).as_posix() for p in pi_bundle.runtime_files()]
    for module in ("__init__", "app", "http", "server", "command", "page"):
        assert f"edge_runtime/serve/{module}.py" in shipped, module


def test_doctor_says_whether_the_port_is_free(tmp_path):
    from edge_runtime import doctor
    free = doctor.check_port(doctor.Environment(port_in_use=lambda host, port: None, serve_port=8080))
    assert free.status == doctor.OK and "8080" in free.detail and "free" in free.detail
    taken = doctor.check_port(doctor.Environment(port_in_use=lambda host, port: "Address already in use",
                                                 serve_port=8080))
    assert taken.status == doctor.WARN and "in use" in taken.detail and "--port" in taken.fix
    with socket.socket() as s:  # the real probe, on this machine
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert doctor.port_in_use("0.0.0.0", port)
    assert doctor.port_in_use("0.0.0.0", port) is None


def test_pi_check_serve_step_on_this_machine(tiny_int8_model):
    """What tools/pi_check.py runs under the emulated aarch64: serve in-process, /api/latest answered."""
    from tools import pi_check
    result = pi_check._serve(tiny_int8_model)
    assert result["status"] == "ok", result
    assert result["latest"]["label"] and result["latest"]["frame"] >= 0
    bad = pi_check._serve(Path("/nonexistent/model.tflite"))
    assert bad["status"] == "failed" and "not found" in bad["detail"]
