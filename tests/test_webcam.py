"""The webcam command: pure functions on arrays, then the whole loop, headless,
on a generated video of Fashion-MNIST test images made to look like photos
(dark garment on a white background, as the dataset's source photos were).

Labels are checked against `Classifier.classify` on the same decoded frame and
ROI (the loop must add nothing and lose nothing), and against the model's
answer on the original 28x28 image (the frames really show those garments).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import capture, display, frames, webcam
from edge_runtime.classifier import Classifier, Prediction, Result
from edge_runtime.errors import UsageError
from edge_runtime.frames import RoiSpec, compute_roi, crop, parse_roi

ROOT = Path(__file__).resolve().parents[1]
IMAGES, REPEAT = 20, 2  # test images in the video, frames per image
FRAME_H, FRAME_W, GARMENT_SIDE = 480, 640, 216  # px; the default ROI is a 288 px centre square


def photo_like(image28: np.ndarray, dx: int = 0) -> np.ndarray:
    """A 640x480 BGR frame: the 28x28 image enlarged, inverted (dark on white), near the centre."""
    canvas = np.zeros((FRAME_H, FRAME_W), np.uint8)
    big = cv2.resize(image28, (GARMENT_SIDE, GARMENT_SIDE), interpolation=cv2.INTER_CUBIC)
    y, x = (FRAME_H - GARMENT_SIDE) // 2, (FRAME_W - GARMENT_SIDE) // 2 + dx
    canvas[y:y + GARMENT_SIDE, x:x + GARMENT_SIDE] = big
    return cv2.cvtColor(255 - canvas, cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def video(tmp_path_factory, fashion) -> Path:
    """MJPG .avi (encodable by every OpenCV build, headless included): each image for REPEAT frames."""
    path = tmp_path_factory.mktemp("video") / "garments.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (FRAME_W, FRAME_H))
    assert writer.isOpened()
    for i in range(IMAGES):
        for r in range(REPEAT):
            writer.write(photo_like(fashion.test_images[i], dx=8 * r))  # moves a little, like a hand-held shot
    writer.release()
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture(scope="module")
def classifier(tiny_int8_model) -> Classifier:
    return Classifier(tiny_int8_model, threshold=None)  # the model's calibrated threshold: webcam's default, as classify's


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verbose", action="store_true")  # a global flag of the real CLI
    webcam.configure(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


# -- pure functions ----------------------------------------------------------------------


def test_parse_roi():
    assert parse_roi("center") == RoiSpec("center") and parse_roi("FULL") == RoiSpec("full")
    assert parse_roi("10,20,100,50") == RoiSpec("box", (10, 20, 100, 50), False)
    assert parse_roi("0.25,0.25,0.5,0.5").fractional
    for bad in ("middle", "1,2,3", "0,0,0,10", "-1,0,5,5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_roi(bad)


@pytest.mark.parametrize("argv", [("--roi", "nan,0,5,5"), ("--roi", "0,0,inf,5"), ("--max_frames", "-1"),
                                  ("--reconnect_timeout", "-1"), ("--reconnect_timeout", "nan"),
                                  ("--fps", "nan"), ("--fps", "0"), ("--rate", "nan"), ("--rate", "-1")])
def test_out_of_range_numbers_are_usage_errors(argv, capsys):
    """nan passes `< 0` checks (every comparison with it is False) and crashed later, or ran oddly."""
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2 and argv[0] in capsys.readouterr().err


def test_compute_roi():
    shape = (480, 640, 3)
    assert compute_roi(shape, RoiSpec("center"), 0.6) == (176, 96, 288, 288)
    assert compute_roi((640, 480), RoiSpec("center"), 1.0) == (0, 80, 480, 480)  # portrait, gray
    assert compute_roi(shape, RoiSpec("full")) == (0, 0, 640, 480)
    assert compute_roi(shape, parse_roi("0.25,0.5,0.5,0.5")) == (160, 240, 320, 240)
    assert compute_roi(shape, parse_roi("600,400,100,100")) == (600, 400, 40, 80)  # clipped to the frame
    with pytest.raises(UsageError, match="outside"):
        compute_roi(shape, parse_roi("700,10,50,50"))


def test_smoother_averages_the_last_n():
    s = frames.Smoother(3)
    outs = [s.update(np.array(p, np.float32)) for p in ([1, 0], [0, 1], [0, 1], [0, 1])]
    np.testing.assert_allclose(outs[0], [1, 0])
    np.testing.assert_allclose(outs[2], [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(outs[3], [0, 1])  # the first frame has left the window
    off = frames.Smoother(1)
    off.update(np.array([1.0, 0.0]))
    np.testing.assert_allclose(off.update(np.array([0.2, 0.8])), [0.2, 0.8], rtol=1e-6)


def test_fps_meter():
    meter = frames.FpsMeter(n=5)
    rates = [meter.tick(t * 0.1) for t in range(10)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(10.0)


HEADLESS = "  GUI:                           NONE\n    VTK support:                 NO\n"
QT = "  GUI:                           QT5\n    QT:                          YES (ver 5.15.13 )\n"
OLD_GTK = "  GUI: \n    GTK+:                        YES (ver 3.24.5)\n    VTK support: NO\n\n  Media I/O:\n"


def test_gui_backend_from_build_information():
    assert display.gui_backend(HEADLESS) is None
    assert display.gui_backend(QT) == "QT5"
    assert display.gui_backend(OLD_GTK) == "GTK+"
    assert display.gui_backend("  GUI: \n    GTK+: NO\n") is None
    real = display.gui_backend(cv2.getBuildInformation())  # this machine's OpenCV parses too
    assert real is None or (isinstance(real, str) and real.upper() != "NONE")


def test_choose_window():
    x11 = {"DISPLAY": ":0"}
    assert display.choose_window(False, x11, QT, "linux") == (True, None)
    assert display.choose_window(True, x11, QT, "linux") == (False, None)  # --headless: no notice
    window, notice = display.choose_window(False, {}, QT, "linux")
    assert not window and "no display" in notice
    window, notice = display.choose_window(False, {"WAYLAND_DISPLAY": "wayland-0"}, HEADLESS, "linux")
    assert not window and "no GUI support" in notice and "pip install opencv-python" in notice


def make_result(model_input=None, threshold=0.0) -> Result:
    probs = np.array([0.7, 0.2, 0.1], np.float32)
    top = [Prediction(0, "Sneaker", 0.7), Prediction(1, "Sandal", 0.2)]
    model_input = np.ones((28, 28), np.uint8) if model_input is None else model_input  # not empty: see Result
    return Result(top, probs, model_input, threshold)


def test_draw_overlay_box_labels_and_inset():
    frame = np.zeros((480, 640, 3), np.uint8)
    model_input = np.zeros((28, 28), np.uint8)
    model_input[10:18, 5:20] = 200
    box = (176, 96, 288, 288)
    out = webcam.draw_overlay(frame, box, make_result(model_input), fps=29.7, latency_ms=4.2, inset=True)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not frame.any()  # the input frame is left alone
    assert tuple(out[96 + 144, 176]) == webcam.GREEN  # left edge of the ROI box
    assert tuple(out[96 + 287, 176 + 144]) == webcam.GREEN  # bottom edge
    assert out[:60, :200].any()  # label text at the top left
    factor = 480 // (4 * 28)  # the inset is the model input enlarged without smoothing
    inset = out[1:1 + 28 * factor, 640 - 28 * factor - 1:639, 0]
    np.testing.assert_array_equal(inset, np.kron(model_input, np.ones((factor, factor), np.uint8)))
    unknown = webcam.draw_overlay(frame, box, make_result(threshold=0.9), 0, 0)
    assert tuple(unknown[96 + 144, 176]) == webcam.ORANGE
    gray = webcam.draw_overlay(np.zeros((120, 160), np.uint8), (0, 0, 160, 120), make_result(), 0, 0)
    assert gray.shape == (120, 160, 3)


def test_json_record():
    fr = frames.FrameResult(7, 1_700_000_000.5, np.zeros((2, 2, 3), np.uint8), (0, 0, 2, 2), make_result(), 3.14159)
    record = frames.json_record(fr)
    assert list(record) == ["time", "frame", "label", "score", "top_k", "nothing_found", "unknown", "latency_ms"]
    assert record["time"] == "2023-11-14T22:13:20.500+00:00" and record["frame"] == 7
    assert record["label"] == "Sneaker" and record["latency_ms"] == 3.142
    assert record["top_k"][1] == {"index": 1, "label": "Sandal", "score": pytest.approx(0.2)}
    json.dumps(record)


# -- the loop, headless, on a video file -----------------------------------------------------


def test_headless_run_on_a_video_file(video, classifier, tiny_int8_model, fashion, no_display, capsys):
    status = webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--top_k", "3"))
    out, err = capsys.readouterr()
    assert status == 0
    records = json_lines(out)
    frames = decoded_frames(video)
    assert len(records) == len(frames) == IMAGES * REPEAT  # every frame of a file, in order, then a clean end
    assert [r["frame"] for r in records] == list(range(len(frames)))
    assert err.count("no display") == 1  # the notice, once
    assert "stopped (end of stream)" in err and "Traceback" not in err
    for record, frame in zip(records, frames):
        box = compute_roi(frame.shape, RoiSpec("center"), 0.6)
        reference = classifier.classify(crop(frame, box), 3)  # file classification's path
        assert record["label"] == reference.label
        assert record["score"] == pytest.approx(reference.best.score, abs=1e-6)
        assert [p["index"] for p in record["top_k"]] == [p.index for p in reference.top_k]
        assert record["latency_ms"] > 0
    # The frames show known garments: the model says what it says about the originals.
    originals = [classifier.classify_input(fashion.test_images[i // REPEAT]).best.index for i in range(len(frames))]
    agreement = np.mean([r["top_k"][0]["index"] == o for r, o in zip(records, originals)])
    assert agreement >= 0.6, agreement


def test_smoothing_in_the_loop(video, classifier, tiny_int8_model, no_display, capsys):
    assert webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--smooth", "3", "--max_frames", "8")) == 0
    out, err = capsys.readouterr()
    records = json_lines(out)
    assert len(records) == 8 and "--max_frames 8" in err
    frames = decoded_frames(video)[:8]
    probs = [classifier.classify(crop(f, compute_roi(f.shape, RoiSpec("center"), 0.6))).probabilities
             for f in frames]
    for n, record in enumerate(records):
        mean = np.mean(probs[max(0, n - 2):n + 1], axis=0)
        assert record["top_k"][0]["index"] == int(np.argmax(mean))
        assert record["score"] == pytest.approx(float(mean.max()), abs=1e-5)


def test_save_records_annotated_frames(video, tiny_int8_model, tmp_path, no_display, capsys):
    out_path = tmp_path / "annotated.avi"
    assert webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--save", str(out_path),
                            "--inset", "--max_frames", "5")) == 0
    saved = decoded_frames(out_path)
    assert len(saved) == 5 and saved[0].shape == (FRAME_H, FRAME_W, 3)
    original = decoded_frames(video)[0]
    assert np.abs(saved[0].astype(int) - original.astype(int)).mean() > 1  # something was drawn
    with pytest.raises(UsageError, match="mp4 or .avi"):
        webcam.run(parse(str(video), "--model", str(tiny_int8_model), "--save", str(tmp_path / "x.gif")))


def test_save_to_a_directory_or_an_unwritable_place_is_refused_first(tiny_int8_model, tmp_path):
    """Refused before the model or the source is opened (the source here does not even exist),
    and not blamed on the codec."""
    (tmp_path / "clip.mp4").mkdir()
    missing = str(tmp_path / "missing.avi")
    with pytest.raises(UsageError, match=r"clip.mp4: is a directory"):
        webcam.run(parse(missing, "--model", str(tiny_int8_model), "--save", str(tmp_path / "clip.mp4")))
    with pytest.raises(UsageError, match=r"--save /sys/out.mp4: not writable"):  # even for root
        webcam.run(parse(missing, "--model", str(tiny_int8_model), "--save", "/sys/out.mp4"))


def test_save_keeps_the_earlier_recording_until_the_new_one_ends(video, tiny_int8_model, tmp_path):
    """Recording goes to a temporary file renamed over --save when the run ends (here by SIGTERM),
    so a run killed mid-recording (SIGKILL, power loss) leaves the earlier recording intact."""
    out_path = tmp_path / "out.avi"

    def record_then(sig):
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "webcam", str(video), "--loop",
                                 "--model", str(tiny_int8_model), "--save", str(out_path)], cwd=ROOT,
                                env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(3):  # recording: frames are being written
                assert proc.stdout.readline().startswith("{")
            proc.send_signal(sig)
            proc.communicate(timeout=30)
        finally:
            proc.kill()
        return proc.returncode

    assert record_then(signal.SIGTERM) == 0
    earlier = out_path.read_bytes()
    assert len(decoded_frames(out_path)) >= 3
    assert [f.name for f in tmp_path.iterdir()] == ["out.avi"]  # renamed: no temporary file left
    assert record_then(signal.SIGKILL) == -signal.SIGKILL
    assert out_path.read_bytes() == earlier


class FakeCamera:
    """A live camera: a frame every `delay_s`, forever; reads listed in `fail` return nothing."""

    def __init__(self, frames, fail=(), delay_s=0.02):
        self.frames, self.fail, self.delay_s = frames, set(fail), delay_s
        self.reads, self.released = 0, False

    def read(self):
        self.reads += 1
        time.sleep(self.delay_s)
        if self.reads in self.fail:
            return False, None
        return True, self.frames[self.reads % len(self.frames)]

    def release(self):
        self.released = True

    def isOpened(self):
        return True


def test_a_camera_that_fails_a_few_reads_is_retried_and_the_loop_resumes(
        video, tiny_int8_model, monkeypatch, no_display, capsys):
    camera = FakeCamera(decoded_frames(video)[:6], fail={3, 4, 5})  # a USB hiccup after two frames
    monkeypatch.setattr(capture, "open_capture", lambda spec: camera)  # reopening gets the same device back
    status = webcam.run(parse("--camera", "0", "--model", str(tiny_int8_model), "--max_frames", "4",
                              "--reconnect_timeout", "30"))
    out, err = capsys.readouterr()
    assert status == 0
    assert len(json_lines(out)) == 4
    assert "retry 1" in err and "frames again" in err and "failed reads retried" in err
    assert camera.released  # released in `finally`


def test_save_after_a_camera_error_keeps_what_was_recorded(video, tiny_int8_model, tmp_path, monkeypatch,
                                                           no_display, capsys):
    camera = FakeCamera(decoded_frames(video)[:4], fail=range(3, 10**6))  # two frames, then unplugged
    monkeypatch.setattr(capture, "open_capture", lambda spec: camera)
    with pytest.raises(capture.CameraError, match="delivered no frame"):
        webcam.run(parse("--camera", "0", "--model", str(tiny_int8_model), "--reconnect_timeout", "0",
                         "--save", str(tmp_path / "out.avi")))
    assert [f.name for f in tmp_path.iterdir()] == ["out.avi"]  # renamed: no temporary file left
    # A complete video of every frame classified before the error: one or two of the two the camera
    # gave, as a live source is read in a thread that keeps only the newest frame.
    classified = json_lines(capsys.readouterr().out)
    assert 1 <= len(classified) <= 2 and len(decoded_frames(tmp_path / "out.avi")) == len(classified)


def test_rate_limits_a_live_source_to_the_newest_frames(video, tiny_int8_model, monkeypatch, no_display, capsys):
    camera = FakeCamera(decoded_frames(video)[:6], delay_s=0.005)  # 200 frames/s
    monkeypatch.setattr(capture, "open_capture", lambda spec: camera)
    t0 = time.monotonic()
    assert webcam.run(parse("--camera", "0", "--model", str(tiny_int8_model), "--rate", "10",
                            "--max_frames", "4")) == 0
    elapsed = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert len(json_lines(out)) == 4 and elapsed >= 0.3  # 4 frames at most 10 a second
    skipped = int(re.search(r"(\d+) stale frames skipped", err).group(1))
    assert skipped > 10  # the reader thread kept reading; only the newest frames were classified


def test_frames_change_size_mid_stream(video, tiny_int8_model, tmp_path, monkeypatch, no_display, capsys):
    """A camera that switches resolution (USB renegotiation): every frame is still classified,
    and the recording keeps one frame size."""
    import cv2
    frames = decoded_frames(video)[:4]
    mixed = [frames[0], cv2.resize(frames[1], (320, 240)), frames[2], cv2.resize(frames[3], (1280, 720))]
    camera = FakeCamera(mixed, delay_s=0.0)
    monkeypatch.setattr(capture, "open_capture", lambda spec: camera)
    out_path = tmp_path / "mixed.avi"
    assert webcam.run(parse("--camera", "0", "--model", str(tiny_int8_model), "--max_frames", "6",
                            "--save", str(out_path))) == 0
    lines = json_lines(capsys.readouterr().out)
    assert len(lines) == 6 and all(line["label"] for line in lines)
    saved = decoded_frames(out_path)
    assert len(saved) == 6 and {f.shape for f in saved} == {saved[0].shape}


def test_busy_camera_is_one_line_naming_the_device(monkeypatch):
    """A device another program holds: V4L2 opens fail. Faked, as no camera is attached here."""
    import cv2

    class Unopened:
        def isOpened(self):
            return False

    monkeypatch.setattr(capture.Path, "exists", lambda self: True)
    monkeypatch.setattr(capture.os, "access", lambda path, mode: True)
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a, **k: Unopened())
    with pytest.raises(capture.CameraError, match=r"can't open .*0.*another program using it \(fuser /dev/video0\)"):
        capture.open_capture(capture.parse_source(None, "0"))


# -- the real command line ------------------------------------------------------------------


def run_cli(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", "webcam", *argv], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=120, **kw)


def test_cli_headless_by_itself_and_camera_errors_in_one_line(video, tiny_int8_model):
    done = run_cli(str(video), "--model", str(tiny_int8_model), "--max_frames", "3")
    assert done.returncode == 0, done.stderr
    assert len(json_lines(done.stdout)) == 3
    assert done.stderr.count("running headless") == 1
    missing = run_cli("--camera", "57", "--model", str(tiny_int8_model))
    assert missing.returncode == 6  # CameraError
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "camera 57" in errors[0] and "Traceback" not in missing.stderr


def test_sigterm_stops_cleanly(video, tiny_int8_model):
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "webcam", str(video), "--loop",
                             "--model", str(tiny_int8_model)], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # it is running: JSON lines arrive, flushed one by one
            assert proc.stdout.readline().startswith("{")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped (SIGTERM)" in err and "Traceback" not in err
