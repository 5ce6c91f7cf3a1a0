"""`serve --own DIR`: the label buttons save into DIR and teach the model at once; 'forget'
sets a class's own photos aside; /api/info counts them; the camera loop goes on classifying
while requests change the imprint.

`App` answered directly first (as tests/test_serve.py does), with the small trained model, its
real interpreter and real JPEG decoding of what was saved; then serve running on 127.0.0.1 on a
generated video; then the command's errors. The page's counts and forget in a real browser are
in tests/test_serve_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from pathlib import Path

import numpy as np

from edge_runtime import frames, imprint, serve
from edge_runtime.classifier import Classifier
from edge_runtime.own import FORGOTTEN, OwnPhotos, load_own

from test_classify_own import SUMMARY, make_own_dir
from test_serve import (assert_one_line_error, ask, get, make_app, photo_like, post_label, run_cli, running,
                        snapshot_of, video, wait_for)  # noqa: F401 (video and running are fixtures)


def own_app(tiny_int8_model, fashion, folder: Path, **overrides):
    """An App as `serve --own folder` makes it: two interpreters (the camera's and the uploads'),
    both with the folder's imprint, and the latest frame one of the test images."""
    camera = Classifier(tiny_int8_model, threshold=None)
    uploads = serve.UploadClassifier(Classifier(tiny_int8_model, threshold=None))
    lines: list[str] = []
    imprint_ = load_own(folder, camera, say=lines.append)
    uploads.classifier.own = imprint_
    own = OwnPhotos(folder, imprint_, [camera, uploads.classifier], uploads.embed)
    app = make_app(camera, tiny_int8_model, collect_dir=folder, own=own, classify_image=uploads, **overrides)
    app.camera = camera
    app.latest.publish(snapshot_of(photo_like(fashion.test_images[0]), camera, number=3))
    return app


def label_json(app, label, **headers):
    response = post_label(app, label, **headers)
    assert response.status == 200, response.body
    return response.json()


def test_a_label_is_saved_embedded_and_counted_at_once(tiny_int8_model, fashion, tmp_path):
    folder = tmp_path / "own"
    folder.mkdir()
    app = own_app(tiny_int8_model, fashion, folder)
    info = ask(app, "GET", "/api/info").json()
    assert info["collect"] is True and info["own"] == dict.fromkeys(app.choices, 0)
    before = app.camera.own
    frame = photo_like(fashion.test_images[0])
    probabilities = app.camera.classify(frames.crop(frame, (176, 96, 288, 288))).probabilities

    body = label_json(app, "Bag")
    assert body["own"] == 1 and body["count"] == 1 and body["saved"].startswith("Bag/")
    assert app.logs == [f"saved {body['saved']} (frame 3), own photos of Bag: 1"]  # one line per action
    info = ask(app, "GET", "/api/info").json()
    assert info["own"]["Bag"] == 1 and info["counts"]["Bag"] == 1 and sum(info["own"].values()) == 1

    # A new imprint, handed to both interpreters; the one they had is left as it was.
    after = app.camera.own
    assert after is not before and after is app.own.imprint is app.classify_image.classifier.own
    assert len(before.photos) == 0 and len(after.photos) == 1
    mixed = app.camera.classify(frames.crop(frame, (176, 96, 288, 288))).probabilities
    assert mixed[app.labels.index("Bag")] > probabilities[app.labels.index("Bag")]  # its own frame: now more a Bag

    # imprint.json on disk: the saved file, by its SHA-256; a restart embeds nothing new.
    saved = folder / body["saved"]
    document = json.loads((folder / imprint.IMPRINT_FILE).read_text())
    assert [(p["file"], p["sha256"]) for p in document["photos"]] == \
        [(body["saved"], hashlib.sha256(saved.read_bytes()).hexdigest())]
    lines: list[str] = []
    load_own(folder, Classifier(tiny_int8_model), say=lines.append)
    assert SUMMARY.fullmatch(lines[0]).group(1, 4) == ("1", "0")

    # An upload is classified with the own photos too, and says so as classify --json does.
    upload = ask(app, "POST", "/api/classify", saved.read_bytes(), Content_Type="image/jpeg").json()
    assert upload["own_photos"] == 1


def test_forget_moves_the_files_aside_and_drops_them(tiny_int8_model, fashion, tmp_path):
    folder = make_own_dir(tmp_path / "own", classes=("Sneaker", "Trouser"), each=3)
    app = own_app(tiny_int8_model, fashion, folder)
    assert ask(app, "GET", "/api/info").json()["own"]["Sneaker"] == 3
    label_json(app, "Sneaker")
    sneakers = sorted(p.name for p in (folder / "Sneaker").iterdir())
    assert len(sneakers) == 4
    app.logs.clear()

    response = ask(app, "POST", "/api/forget", json.dumps({"label": "Sneaker"}).encode(),
                   Content_Type="application/json")
    assert response.status == 200, response.body
    body = response.json()
    assert body["label"] == "Sneaker" and body["forgotten"] == 4 and body["own"] == 0
    moved = folder / body["moved_to"]
    assert body["moved_to"].startswith(f"{FORGOTTEN}/") and moved.parent.parent == folder / FORGOTTEN
    assert sorted(p.name for p in moved.iterdir()) == sneakers  # the user's photos, kept
    assert not (folder / "Sneaker").exists()
    assert app.logs == [f"forgot 4 own photos of Sneaker, files moved to {body['moved_to']}/"]
    info = ask(app, "GET", "/api/info").json()
    assert info["own"]["Sneaker"] == 0 and info["own"]["Trouser"] == 3 and info["counts"]["Sneaker"] == 0
    assert app.camera.own.counts() == info["own"]
    document = json.loads((folder / imprint.IMPRINT_FILE).read_text())
    assert {p["label"] for p in document["photos"]} == {"Trouser"} and len(document["photos"]) == 3
    # .forgotten/ is not a class: a restart neither imprints nor warns about it.
    restarted = imprint.from_folder(folder, Classifier(tiny_int8_model))
    assert restarted.counts()["Sneaker"] == 0 and restarted.skipped == []

    # Forgetting a class with no own photos moves nothing; a new label starts the class again.
    body = ask(app, "POST", "/api/forget", b'{"label": "Bag"}', Content_Type="application/json").json()
    assert body == {"label": "Bag", "forgotten": 0, "moved_to": None, "own": 0}
    assert label_json(app, "Sneaker")["own"] == 1


def test_forget_is_guarded_as_labelling_is(tiny_int8_model, fashion, tmp_path):
    folder = make_own_dir(tmp_path / "own", classes=("Bag",), each=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    app = own_app(tiny_int8_model, fashion, folder)
    app.label_limit = app.label_limit_all = serve.Limiter(1000, 1000)  # the rate has its own check below

    def forget(body: bytes, **headers):
        return ask(app, "POST", "/api/forget", body, **{"Content_Type": "application/json", **headers})
    for label in ("bag", "../outside", "../../etc/passwd", "/tmp", "Bag/..", "", None, 7, ["Bag"]):
        error = assert_one_line_error(forget(json.dumps({"label": label}).encode()), 400)
        assert str(tmp_path) not in error  # no paths in answers
    assert_one_line_error(forget(b"[" * 5000), 413)
    assert_one_line_error(forget(b"[" * 4000), 400, "nested too deep")
    assert_one_line_error(forget(b'{"label": "Bag"'), 400, "not JSON")
    assert_one_line_error(forget(b'{"label": "Bag"}', Content_Type="text/plain"), 415, "application/json")
    assert_one_line_error(forget(b'{"label": "Bag"}', Origin="http://evil.example"), 403, "another web site")
    assert_one_line_error(ask(app, "GET", "/api/forget"), 405, "use POST")
    assert len(list((folder / "Bag").iterdir())) == 2 and not (folder / FORGOTTEN).exists()  # nothing moved

    # Without --own there is nothing to forget; on a LAN bind it needs the token.
    off = make_app(app.camera, tiny_int8_model, collect_dir=folder)
    assert_one_line_error(ask(off, "POST", "/api/forget", b'{"label": "Bag"}', Content_Type="application/json"),
                          409, "--own DIR")
    lan = own_app(tiny_int8_model, fashion, folder, token="a-secret-token-16", loopback=False)
    host = {"Host": "raspberrypi.local:8080"}
    assert_one_line_error(ask(lan, "POST", "/api/forget", b'{"label": "Bag"}', Content_Type="application/json",
                              **host), 401, "token")
    assert (folder / "Bag").is_dir()
    # Labels and forgets share one rate: a script can't move folders around faster than people click.
    responses = [ask(lan, "POST", "/api/forget", b'{"label": "Trouser"}', Content_Type="application/json",
                     Authorization="Bearer a-secret-token-16", **host) for _ in range(12)]
    assert [r.status for r in responses].count(200) == serve.app.LABEL_BURST
    assert_one_line_error(responses[-1], 429, "labels a second")


def test_a_label_that_cant_be_imprinted_stays_saved_and_says_so_once(tiny_int8_model, fashion, tmp_path, monkeypatch):
    folder = tmp_path / "own"
    folder.mkdir()
    app = own_app(tiny_int8_model, fashion, folder)

    def unreadable(path, label):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(app.own, "add", unreadable)
    body = label_json(app, "Coat")
    assert body["own"] is None and (folder / body["saved"]).is_file()
    assert len(app.logs) == 1 and app.logs[0].startswith(f"error: saved {body['saved']} (frame 3) but can't add")
    monkeypatch.undo()

    # imprint.json that can't be written (a folder in its place): labelling goes on, the log says why.
    (folder / imprint.IMPRINT_FILE).mkdir()
    app.logs.clear()
    body = label_json(app, "Coat")
    assert body["own"] == 1 and "imprint.json not saved" in app.logs[0] and len(app.logs) == 1

    # The most photos an imprint takes: refused before anything is saved.
    monkeypatch.setattr(imprint, "MAX_PHOTOS", 1)
    files = sorted(folder.rglob("*.jpg"))
    assert_one_line_error(post_label(app, "Coat"), 409, "forget a class first")
    assert sorted(folder.rglob("*.jpg")) == files


def test_forget_that_cant_move_the_folder_changes_nothing(tiny_int8_model, fashion, tmp_path):
    folder = make_own_dir(tmp_path / "own", classes=("Bag",), each=2)
    app = own_app(tiny_int8_model, fashion, folder)
    (folder / FORGOTTEN).write_text("a file where the folder goes")
    response = ask(app, "POST", "/api/forget", b'{"label": "Bag"}', Content_Type="application/json")
    error = assert_one_line_error(response, 500, "can't move the Bag photos aside")
    assert str(tmp_path) not in error and "log" in error
    assert app.own.counts()["Bag"] == 2 and len(list((folder / "Bag").iterdir())) == 2
    assert len(app.logs) == 1 and app.logs[0].startswith("error: can't forget the Bag photos")


def test_forget_never_moves_photos_out_of_the_own_folder(tiny_int8_model, fashion, tmp_path):
    folder = make_own_dir(tmp_path / "own", classes=("Bag",), each=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / FORGOTTEN).symlink_to(outside)  # made on the device by someone
    app = own_app(tiny_int8_model, fashion, folder)
    response = ask(app, "POST", "/api/forget", b'{"label": "Bag"}', Content_Type="application/json")
    error = assert_one_line_error(response, 409, "leads outside the own-photo folder")
    assert str(tmp_path) not in error and list(outside.iterdir()) == []
    assert app.own.counts()["Bag"] == 2 and len(list((folder / "Bag").iterdir())) == 2
    assert len(app.logs) == 1 and app.logs[0].startswith("error: not forgetting Bag")


def test_changing_the_imprint_while_frames_are_classified(tiny_int8_model, fashion, tmp_path):
    """The camera thread classifies without pause while another thread adds and forgets own photos:
    no error, and every result is probabilities of the old imprint or the new one."""
    folder = make_own_dir(tmp_path / "own", classes=("Sneaker", "none"), each=2)
    camera = Classifier(tiny_int8_model)
    embedder = Classifier(tiny_int8_model)
    lock = threading.Lock()

    def embed(images):
        with lock:
            return imprint.embed_photos(embedder, images)
    own = OwnPhotos(folder, load_own(folder, camera, say=lambda line: None), [camera], embed)
    frame = frames.crop(photo_like(fashion.test_images[5]), (176, 96, 288, 288))
    stop, errors, results = threading.Event(), [], []

    def classify_loop():
        try:
            while not stop.is_set():
                results.append(camera.classify(frame).probabilities)
        except BaseException as e:  # noqa: BLE001: any error at all fails the test
            errors.append(e)
    worker = threading.Thread(target=classify_loop)
    worker.start()
    try:
        photo = next((folder / "Sneaker").iterdir())
        for i in range(30):
            target = folder / "Bag" / f"{i:03d}.jpg"
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(photo.read_bytes())
            own.add(target, "Bag")
            if i % 10 == 9:
                own.forget("Bag", now=datetime(2026, 1, 1, 0, 0, i))
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive() and errors == []
    assert len(results) > 30
    for p in results:
        assert np.isfinite(p).all() and (p >= 0).all() and p.sum() <= 1.0 + 1e-5
    assert own.counts()["Bag"] == 0 and len(list((folder / FORGOTTEN).iterdir())) == 3


# -- serve running ------------------------------------------------------------------------------


def test_labelling_over_http_while_the_camera_loop_classifies(running, tmp_path):
    folder = make_own_dir(tmp_path / "own", classes=("Trouser",), each=2)
    service = running("--own", str(folder), "--collect", str(folder))  # the same folder twice is fine
    assert SUMMARY.fullmatch(service.logs[0]).group(1, 4) == ("2", "2")
    url = service.url
    banner = "\n".join(service.banner(hostname="test", addresses=[]))
    assert "count as own photos at once" in banner
    frames_before = service.camera.frames
    for label in ("Bag", "Bag", "Trouser", "none"):
        status, _, body = get(url + "api/label", json.dumps({"label": label}).encode(),
                              {"Content-Type": "application/json"})
        assert status == 200, body
    info = json.loads(get(url + "api/info")[2])
    assert info["own"]["Bag"] == 2 and info["own"]["Trouser"] == 3 and info["own"]["none"] == 1
    status, _, body = get(url + "api/forget", b'{"label": "Bag"}', {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["forgotten"] == 2
    assert json.loads(get(url + "api/info")[2])["own"]["Bag"] == 0
    wait_for(lambda: service.camera.frames > frames_before + 10, 10, "the camera loop stopped")
    assert service.camera.error is None and service.camera.thread.is_alive()
    assert service.camera.classifier.own is service.app.own.imprint
    assert [line.split()[0] for line in service.logs[1:]] == ["saved"] * 4 + ["forgot"], service.logs


def test_cli_own_errors_are_one_line(video, tiny_int8_model, tmp_path):
    r = run_cli(str(video), "--port", "0", "--model", str(tiny_int8_model), "--own", str(tmp_path / "a"),
                "--collect", str(tmp_path / "b"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--collect" in r.stderr and "--own" in r.stderr
    folder = make_own_dir(tmp_path / "own", classes=("Bag",), each=1)
    (folder / imprint.IMPRINT_FILE).write_bytes(b"[" * 10_000)
    r = run_cli(str(video), "--port", "0", "--model", str(tiny_int8_model), "--own", str(folder))
    assert r.returncode == 11 and r.stderr.count("\n") == 1 and "imprint.json: JSON nests deeper" in r.stderr
    assert "Traceback" not in r.stderr
