"""`webcam --own DIR`: own photos mixed into every frame, and in the window the collect keys
save into DIR and add the saved photo to them at once.

The loop runs for real (a video file, the small trained model, the real interpreter, OpenCV
decoding what was saved); only the window is stood in for, as this machine's OpenCV may have
no GUI: `show` answers with the keys a person would press.
"""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from edge_runtime import imprint, webcam
from edge_runtime.classifier import Classifier
from edge_runtime.errors import UsageError
from edge_runtime.imageio import decode

from test_classify_own import SUMMARY, make_own_dir
from test_webcam import json_lines, no_display, parse, video  # noqa: F401 (fixtures)


def test_headless_with_own_photos_every_frame_mixes_them_in(video, tiny_int8_model, tmp_path, no_display, capsys):
    own = make_own_dir(tmp_path / "own", classes=("Sneaker", "none"), each=3)
    assert webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--max_frames", "6")) == 0
    alone = json_lines(capsys.readouterr().out)
    assert webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--max_frames", "6", "--own", str(own))) == 0
    out, err = capsys.readouterr()
    mixed = json_lines(out)
    assert SUMMARY.fullmatch(err.splitlines()[0]).group(1, 2, 4) == ("6", "2", "6"), err
    assert len(mixed) == len(alone) == 6
    assert [r["top_k"] for r in mixed] != [r["top_k"] for r in alone]  # the own photos count


def test_own_and_collect_in_another_folder_is_a_usage_error(video, tiny_int8_model, tmp_path):
    with pytest.raises(UsageError, match="--collect .* and --own .*: with --own the labelled frames go into"):
        webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--own", str(tmp_path / "a"),
                         "--collect", str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()


def test_keys_save_into_the_own_folder_and_teach_at_once(video, tiny_int8_model, tmp_path, monkeypatch, capsys):
    own_dir = tmp_path / "own"  # not there yet: --own makes it, as --collect does
    keys = {2: ord("7"), 4: ord("n"), 5: ord("7")}  # frame -> key: Sneaker, none, Sneaker
    shown = []

    def show(frame):
        shown.append(frame.shape)
        return True, keys.get(len(shown), 255)
    live = []
    real_own_photos = webcam.own_photos

    def own_photos(args, classifier):
        folder, own = real_own_photos(args, classifier)
        live.append((own, classifier))
        return folder, own
    monkeypatch.setattr(webcam, "open_window", lambda headless: True)
    monkeypatch.setattr(webcam, "show", show)
    monkeypatch.setattr(webcam, "own_photos", own_photos)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    assert webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--max_frames", "8",
                            "--own", str(own_dir))) == 0
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert SUMMARY.fullmatch(lines[0]).group(1, 4) == ("0", "0")
    assert [line.split()[0] for line in lines[1:7]] == ["saved", "own", "saved", "own", "saved", "own"], lines
    assert lines[2] == "own photos of Sneaker: 1" and lines[4] == "own photos of none: 1"
    assert lines[6] == "own photos of Sneaker: 2"

    # Every classifier the loop uses now has the imprint of the three saved photos.
    (own, classifier), = live
    assert classifier.own is own.imprint and own.counts()["Sneaker"] == 2 and own.counts()["none"] == 1
    # imprint.json holds each saved file by its SHA-256, with the embedding a restart computes.
    saved = sorted(own_dir.glob("*/*.jpg"))
    assert len(saved) == 3 and {p.parent.name for p in saved} == {"Sneaker", "none"}
    document = json.loads((own_dir / imprint.IMPRINT_FILE).read_text())
    by_file = {p["file"]: p for p in document["photos"]}
    clf = Classifier(tiny_int8_model)
    for path in saved:
        entry = by_file[f"{path.parent.name}/{path.name}"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        fresh = imprint.embed_photos(clf, [decode(path.read_bytes())])[0]
        np.testing.assert_allclose(entry["embedding"], fresh, atol=1e-4)
    restarted = imprint.from_folder(own_dir, clf)
    assert restarted.counts() == own.counts() and not restarted.skipped


def test_a_key_once_the_imprint_is_full_saves_nothing(tiny_int8_model, tmp_path, monkeypatch):
    own_dir = make_own_dir(tmp_path / "own", classes=("Bag",), each=2)
    args = parse("--model", str(tiny_int8_model), "--own", str(own_dir))
    classifier = Classifier(tiny_int8_model)
    folder, own = webcam.own_photos(args, classifier)
    monkeypatch.setattr(imprint, "MAX_PHOTOS", 2)
    frame = np.full((480, 640, 3), 200, np.uint8)
    fr = type("FrameResult", (), {"box": (176, 96, 288, 288), "frame": frame})()
    lines = webcam.save_labelled(folder, "Bag", fr, classifier.labels, own)
    assert len(lines) == 1 and lines[0].startswith("warning: the own photos are as many as an imprint takes")
    assert len(list((own_dir / "Bag").iterdir())) == 2
