"""`serve` under attack and under load (issue #31): each case that once broke it, as it is answered now.

1. concurrent uploads and the log: no foreign line in an upload's warnings, fd 2 and the log intact;
2. a 380 KB PNG that decodes to 392 MB: refused from its header, memory untouched;
3. SIGTERM under uploads and labels: exit 0, no partial file; partial files of killed runs removed;
4. slow request heads: they hold no client slot, real requests are answered;
5. slow uploads: the decoding slots are taken only once a body is in;
6. labelling as fast as possible: 429 with Retry-After and one log line; failed saves are logged
   and answered without the folder's path;
7. parsing: non-ASCII and duplicate Content-Length, chunked with a length, deep JSON, folded headers;
8. a LAN bind: Host allow-list or the token for reads, slowed-down wrong tokens, no paths in /api/info.
The helpers and fixtures (a real model, a generated video, servers on 127.0.0.1) are test_serve's.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import serve
from edge_runtime.serve import command
from test_serve import (assert_one_line_error, ask, classifier, make_app, photo_like, post_label,  # noqa: F401
                        running, snapshot_of, start_cli, video, wait_for)

ROOT = Path(__file__).resolve().parents[1]


def damaged_jpeg(image: np.ndarray) -> bytes:
    """A JPEG whose data meets an end marker two thirds through: it decodes, and libjpeg warns."""
    data = bytearray(cv2.imencode(".jpg", image)[1].tobytes())
    at = len(data) * 2 // 3
    data[at:at + 2] = b"\xff\xd9"
    return bytes(data)


def status_kb(field: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))


# -- 1. the log --------------------------------------------------------------------------------


def test_concurrent_uploads_keep_their_own_warnings_and_the_log_keeps_every_line(classifier, tiny_int8_model,
                                                                                 fashion, capfd):
    """Two clients upload a damaged JPEG while a third thread logs (as a labelling client makes the
    server do): 18 of 18 uploads once came back with "saved Bag/..." in their warnings, and two
    uploads at once left fd 2 on a deleted file, so later log lines were lost."""
    from edge_runtime.serve import logs
    logger = logs.LOG.getChild("concurrency")
    handler = logs.to_stderr(logger)  # what `serve` does: the log goes through a copy of fd 2
    try:
        app = make_app(classifier, tiny_int8_model, log=logger)
        damaged = damaged_jpeg(photo_like(fashion.test_images[0]))
        stderr = os.fstat(2)
        answers: list[dict] = []

        def upload():
            for _ in range(15):
                answers.append(ask(app, "POST", "/api/classify", damaged).json())

        def log_lines():
            for i in range(200):
                logger.info(f"saved Bag/{i:03d}.jpg (frame {i})")

        threads = [threading.Thread(target=upload) for _ in range(2)] + [threading.Thread(target=log_lines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        logs.remove_handler(handler, logger)
    assert len(answers) == 30
    assert all(a["warnings"] == ["upload: Corrupt JPEG data: premature end of data segment"] for a in answers)
    assert (os.fstat(2).st_dev, os.fstat(2).st_ino) == (stderr.st_dev, stderr.st_ino)
    err = capfd.readouterr().err.splitlines()
    assert err == [f"saved Bag/{i:03d}.jpg (frame {i})" for i in range(200)]  # each whole, on its own line


def test_log_lines_are_one_line_with_their_level_and_journald_priority(monkeypatch):
    from edge_runtime.serve import logs
    import logging
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "127.0.0.1: a\nb\x1b[2J", None, None)
    assert logs.OneLine().format(record) == "warning: 127.0.0.1: a\\nb\\x1b[2J"
    record.levelno = logging.ERROR
    assert logs.OneLine(journal=True).format(record).startswith("<3>error: ")
    info = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    assert logs.journal_is_stderr()
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not logs.journal_is_stderr()


# -- 2. a decompression bomb ----------------------------------------------------------------------


def test_a_16_bit_rgba_png_bomb_is_refused_without_the_memory(classifier, tiny_int8_model):
    """7000x7000 16-bit RGBA: 380 KB that took 8.9 s and 1.8 GB (3.4 GB two at once) before."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")
    image = np.zeros((7000, 7000, 4), np.uint16)
    image[::97, ::89] = 65535
    bomb = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    del image
    app = make_app(classifier, tiny_int8_model)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    before = status_kb("VmRSS")
    response = ask(app, "POST", "/api/classify", bomb, Content_Type="image/png")
    peak_mb = (status_kb("VmHWM") - before) / 1024
    assert_one_line_error(response, 400, "7000x7000 16-bit PNG with 4 channels would take 748 MB",
                          "200 MB allowed")
    assert peak_mb < 50, f"{peak_mb:.0f} MB"


# -- 3. stopping ---------------------------------------------------------------------------------


def test_partial_files_of_dead_writers_and_our_own_are_removed(tmp_path):
    folder = tmp_path / "Bag"
    folder.mkdir()
    dead, live = folder / ".20261206-1.jpg.partial-999999999", folder / ".20261206-2.jpg.partial-1"
    ours, photo = folder / f".20261206-3.jpg.partial-{os.getpid()}", folder / "20261206-4.jpg"
    for path in (dead, live, ours, photo):
        path.write_bytes(b"x")
    removed = command.remove_partials(tmp_path, lambda pid: pid == 1)
    assert sorted(removed) == sorted([dead, ours])
    assert live.exists() and photo.exists() and not dead.exists() and not ours.exists()


def test_sigterm_under_uploads_and_labels_exits_0_and_leaves_no_partial_file(video, tiny_int8_model, fashion,
                                                                             tmp_path):
    """4 of 10 stops with uploads in flight ended in SIGABRT ("terminate called without an active
    exception": a thread still in OpenCV as Python finalised), and 9 of 27 left .partial- files."""
    jpeg = cv2.imencode(".jpg", photo_like(fashion.test_images[1]))[1].tobytes()
    damaged = damaged_jpeg(photo_like(fashion.test_images[2]))
    for round_ in range(3):
        collect = tmp_path / f"collect{round_}"
        (collect / "Bag").mkdir(parents=True)
        (collect / "Bag" / ".20260101-000000-000000.jpg.partial-999999999").write_bytes(b"left by a killed run")
        proc, banner = start_cli(str(video), "--port", "0", "--model", str(tiny_int8_model), "--collect",
                                 str(collect))
        port = int(next(l for l in banner if l.startswith("open http://")).split(":")[2].split("/")[0])
        stop = threading.Event()

        def post(path, body, content_type):
            while not stop.is_set():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
                    conn.getresponse().read()
                    conn.close()
                except (OSError, http.client.HTTPException):
                    time.sleep(0.01)

        clients = ([threading.Thread(target=post, args=("/api/classify", b, "image/jpeg")) for b in (jpeg, damaged)]
                   + [threading.Thread(target=post, args=("/api/label", b'{"label": "Bag"}', "application/json"))
                      for _ in range(3)])
        try:
            for t in clients:
                t.start()
            time.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            stop.set()
            proc.kill()
            for t in clients:
                t.join(30)
        assert proc.returncode == 0, err[-2000:]
        assert "stopped (SIGTERM)" in err and "Traceback" not in err and "terminate called" not in err
        assert "removed Bag/.20260101-000000-000000.jpg.partial-999999999" in err
        assert [p.name for p in collect.rglob("*") if ".partial-" in p.name] == []
        assert any(collect.rglob("*.jpg"))  # labels were being saved


# -- 4. and 5. slow clients ---------------------------------------------------------------------------


def test_slow_request_heads_hold_no_client_slot(running):
    """40 connections sending a header byte at a time once held all 32 slots: every real request got 503."""
    service = running("--max_clients", "4", "--client_timeout", "3")
    port = service.port
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
    try:
        for s in slow:
            s.sendall(b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        for _ in range(20):
            status, _, _ = ask_http(port, "GET", "/api/latest")
            assert status == 200
        assert service.server.refused == 0
        # Each slow head gets 408 when its deadline passes, whole or not, and is closed.
        answers = [s.makefile("rb").read() for s in slow]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers)
    finally:
        for s in slow:
            s.close()
    # An idle keep-alive connection holds no slot either.
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(6)]
    for _ in range(3):
        for conn in conns:  # 6 keep-alive connections, 4 slots
            conn.request("GET", "/api/latest")
            assert conn.getresponse().read() and conn.sock is not None
    for conn in conns:
        conn.close()
    assert service.server.refused == 0


def ask_http(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read() or b"{}")
    finally:
        conn.close()


def test_slow_uploads_do_not_take_the_decoding_slots(running, fashion):
    """Two uploads trickling in once took both upload slots before their bodies arrived: 30 s of 503s."""
    service = running()
    port = service.port
    slow = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"\0" * 1000)
        slow.append(s)
    try:
        wait_for(lambda: service.server.clients == 3, 5, "the slow uploads did not arrive")
        jpeg = cv2.imencode(".jpg", photo_like(fashion.test_images[3]))[1].tobytes()
        for _ in range(5):
            t = time.monotonic()
            status, _, body = ask_http(port, "POST", "/api/classify", jpeg, {"Content-Type": "image/jpeg"})
            assert status == 200 and body["label"] and time.monotonic() - t < 3
    finally:
        for s in slow:
            s.close()


def test_upload_bodies_arriving_at_once_are_bounded(classifier, tiny_int8_model):
    app = make_app(classifier, tiny_int8_model, max_upload_bytes=1000)
    assert app.bodies.total == serve.app.UPLOAD_BODIES * 1000
    assert app.bodies.reserve(app.bodies.total - 10)
    response = app.handle("POST", "/api/classify", {"Host": "localhost", "Content-Length": "500"},
                          lambda n: pytest.fail("body read"))
    assert_one_line_error(response, 503, "MB of uploads are arriving")
    assert ("Retry-After", "2") in response.headers


# -- 6. writes: rate, failures --------------------------------------------------------------------


def test_labelling_faster_than_a_person_is_429_and_logged_once(classifier, tiny_int8_model, fashion, tmp_path):
    """442 saves a second of the same frame were accepted until the disk was full."""
    app = make_app(classifier, tiny_int8_model, collect_dir=tmp_path)
    app.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), classifier))
    statuses = [post_label(app, "Bag").status for _ in range(30)]
    assert statuses[:serve.app.LABEL_BURST] == [200] * serve.app.LABEL_BURST
    assert set(statuses[serve.app.LABEL_BURST:]) == {429}
    refused = post_label(app, "Bag")
    assert_one_line_error(refused, 429, "more than 5 labels a second")
    assert int(dict(refused.headers)["Retry-After"]) >= 1
    assert len(list(tmp_path.rglob("*.jpg"))) == serve.app.LABEL_BURST
    warnings = [line for line in app.logs if line.startswith("warning:")]
    assert warnings == ["warning: local: more than 5 labels a second: refused"]  # one line, not 21
    other = app.handle(
        "POST", "/api/label", {"Host": "localhost", "Content-Type": "application/json", "Content-Length": "16"},
        lambda n: b'{"label": "Bag"}', "10.0.0.9")
    assert other.status == 200  # another client has its own allowance


def test_a_failed_save_is_logged_and_the_client_is_not_told_the_path(classifier, tiny_int8_model, fashion, tmp_path):
    collect = tmp_path / "collect"
    collect.mkdir()
    (collect / "Bag").write_text("a file where the class folder should be")
    app = make_app(classifier, tiny_int8_model, collect_dir=collect)
    app.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), classifier))
    message = assert_one_line_error(post_label(app, "Bag"), 500, "can't save the photo")
    assert str(tmp_path) not in message
    assert len(app.logs) == 1 and app.logs[0].startswith("error: can't save a Bag photo in ")
    assert str(collect) in app.logs[0]  # the person at the device learns where
    assert app.save_failures == 1 and ask(app, "GET", "/healthz").json()["photo_save_failures"] == 1


# -- 7. parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("head,status,words", [
    (b"POST /api/label HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5", 400, "two Content-Length"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400, "two Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded", 400, "folded"),
    (b"GET / HTTP/1.1\r\nno colon", 400, "Name: value"),
    (b"GET / HTTP/1.1\r\nBad Name: x", 400, "Name: value"),
    (b"GET /a\x00b HTTP/1.1\r\nHost: a", 400, "request target"),
    (b"GET /caf\xe9 HTTP/1.1\r\nHost: a", 400, "request target"),
    (b"GET / HTTP/2.0\r\nHost: a", 505, "HTTP/2.0"),
    (b"BREW / HTTP/1.1\r\nHost: a", 501, "BREW"),
    (b"GET /\r\nHost: a", 400, "request line"),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 65, 431, "64 header lines"),
])
def test_malformed_heads_are_refused_with_their_reason(head, status, words):
    with pytest.raises(serve.HttpError) as e:
        serve.parse_head(head)
    assert e.value.status == status and words in e.value.message, e.value.message


def test_a_head_parses_case_insensitively_and_joins_repeated_lists():
    request = serve.parse_head(b"\r\nPOST /api/label?x=1 HTTP/1.0\r\nhost: pi.local\r\nAccept: a\r\n"
                               b"ACCEPT: b\r\nContent-Length:  16 \r\nConnection: keep-alive")
    assert (request.method, request.target, request.version) == ("POST", "/api/label?x=1", "HTTP/1.0")
    assert request.headers.get("Host") == "pi.local" and request.headers["accept"] == "a, b"
    assert serve.body_length(request.headers, 100) == 16 and request.keep_alive
    assert not serve.parse_head(b"GET / HTTP/1.1\r\nConnection: close").keep_alive
    assert not serve.parse_head(b"GET / HTTP/1.0").keep_alive


@pytest.mark.parametrize("headers,status", [
    ({"Content-Length": "\u00b2"}, 400),  # isdigit() says yes, int() fails: this was a 500
    ({"Content-Length": "\u0661\u0662"}, 400),  # Arabic-Indic digits
    ({"Content-Length": "+5"}, 400),
    ({"Content-Length": "5", "Transfer-Encoding": "chunked"}, 400),
    ({"Transfer-Encoding": "chunked"}, 411),
])
def test_content_length_is_ascii_digits_and_alone(headers, status):
    with pytest.raises(serve.HttpError) as e:
        serve.body_length(headers, 100)
    assert e.value.status == status


def test_deeply_nested_label_json_is_400(classifier, tiny_int8_model, fashion, tmp_path):
    app = make_app(classifier, tiny_int8_model, collect_dir=tmp_path)
    body = b"[" * 2000 + b"]" * 2000
    response = ask(app, "POST", "/api/label", body[:4000], Content_Type="application/json")
    assert_one_line_error(response, 400, "nested too deep")
    assert app.logs == []


def test_bad_content_length_with_expect_100_continue_is_answered(running):
    """No answer at all came back for this before: the client waited for ever."""
    port = running().port
    for value in ("\u00b2".encode("latin-1"), b"5, 6"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + value +
                      b"\r\nExpect: 100-continue\r\n\r\n")
            assert s.makefile("rb").readline().startswith(b"HTTP/1.1 400 ")
    status, _, body = raw_request(port, b"POST /api/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                        b"application/json\r\nContent-Length: 16\r\nContent-Length: 3\r\n\r\n"
                                        b'{"label": "Bag"}')
    assert status == 400 and "two Content-Length headers" in body["error"]


def raw_request(port: int, data: bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        r = http.client.HTTPResponse(s)
        r.begin()
        return r.status, dict(r.getheaders()), json.loads(r.read())


# -- 8. a LAN bind ----------------------------------------------------------------------------------


def lan_app(classifier, tiny_int8_model, fashion, **overrides):
    app = make_app(classifier, tiny_int8_model, token="a-long-secret-token-123", loopback=False,
                   host_names=serve.machine_names("raspberrypi", ["camera.example.org"]), **overrides)
    app.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), classifier))
    return app


def test_a_lan_bind_answers_reads_only_for_its_own_names_or_the_token(classifier, tiny_int8_model, fashion):
    """With --host 0.0.0.0, GET /frame.jpg with Host: evil.example returned the camera (DNS rebinding)."""
    app = lan_app(classifier, tiny_int8_model, fashion)
    for host in ("192.168.1.20:8080", "[fe80::1]:8080", "raspberrypi.local:8080", "RaspberryPi:8080",
                 "raspberrypi.local.:8080", "camera.example.org", "localhost:8080", "other-pi.local"):
        assert ask(app, "GET", "/frame.jpg", Host=host).status == 200, host
    for path in ("/frame.jpg", "/stream.mjpg", "/input.png", "/api/latest", "/api/info", "/", "/healthz"):
        assert_one_line_error(ask(app, "GET", path, Host="evil.example"), 403, "not a name of this machine",
                              "--allow_host evil.example")
        ok = ask(app, "GET", path, Host="evil.example", Authorization="Bearer a-long-secret-token-123")
        assert ok is serve.STREAM or ok.status == 200, path
    assert_one_line_error(ask(app, "GET", "/frame.jpg", Host="evil.example", Authorization="Bearer wrong-one"), 403)
    assert_one_line_error(app.handle("GET", "/frame.jpg", {}, lambda n: b""), 403)  # no Host at all
    assert serve.host_allowed("evil.example", loopback_only=True) is False
    assert serve.host_allowed("192.168.1.20", loopback_only=True) is False  # a loopback bind: loopback names only


def test_wrong_tokens_are_slowed_down_per_client(classifier, tiny_int8_model, fashion, tmp_path):
    """~1,800 wrong tokens a second were answered before, without any slow-down."""
    app = lan_app(classifier, tiny_int8_model, fashion, collect_dir=tmp_path)
    host = {"Host": "raspberrypi.local"}

    def label(token, client="10.0.0.5"):
        headers = {**host, "Content-Type": "application/json", "Content-Length": "16",
                   "Authorization": f"Bearer {token}"}
        return app.handle("POST", "/api/label", headers, lambda n: b'{"label": "Bag"}', client)

    assert [label(f"guess-{i}").status for i in range(serve.app.TOKEN_FAILURE_BURST)] == [403] * 5
    refused = label("guess-5")
    assert_one_line_error(refused, 429, "too many wrong tokens from 10.0.0.5")
    assert int(dict(refused.headers)["Retry-After"]) >= 5
    assert label("a-long-secret-token-123").status == 429  # that address waits, right token or not
    assert label("a-long-secret-token-123", client="10.0.0.6").status == 200  # others don't
    assert [line for line in app.logs if "wrong tokens" in line] == ["warning: 10.0.0.5: wrong tokens: refused"]


def test_limiter_refills_and_forgets_old_clients():
    now = [0.0]
    limiter = serve.Limiter(rate=2.0, burst=3, keys=2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.empty("a") and limiter.wait_s("a") == 1
    now[0] = 0.5
    assert limiter.allow("a") and not limiter.allow("a")
    limiter.allow("b")
    limiter.allow("c")  # 2 keys kept: "a" is forgotten, and starts full again
    assert [limiter.allow("a") for _ in range(3)] == [True, True, True]


def test_api_info_shows_no_absolute_path():
    from edge_runtime.capture import parse_source
    assert command.public_source_name(parse_source("/home/pi/videos/clip.avi")) == "video file clip.avi"
    assert command.public_source_name(parse_source("rtsp://user:secret@cam.lan:554/live?key=abc")) == \
        "stream rtsp://cam.lan:554"
    assert command.public_source_name(parse_source("0")) == "camera 0"


def test_the_running_server_answers_info_without_paths(running, video):
    service = running()
    _, _, info = ask_http(service.port, "GET", "/api/info")
    assert info["source"] == f"video file {video.name}" and "/" not in info["source"]
    assert "/" not in info["model"]["file"]
