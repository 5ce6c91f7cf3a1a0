"""Frame sources: parsing, end of file vs stalled camera, backoff, reopening, the
latest-frame reader, error messages, picamera2 (faked). No camera needed."""

from __future__ import annotations

import itertools
import sys
import threading
import time
import types

import numpy as np
import pytest

from edge_runtime import capture
from edge_runtime.capture import Backoff, FrameStream, LatestFrameReader, SourceSpec, parse_source
from edge_runtime.errors import CameraError, UsageError


def frame(i: int) -> np.ndarray:
    """A tiny BGR frame whose pixels say which frame it is."""
    return np.full((4, 6, 3), i % 256, np.uint8)


class FakeCapture:
    """cv2.VideoCapture stand-in: delivers `n` frames; reads listed in `fail` return (False, None)."""

    def __init__(self, n: int = 10, fail=(), read_delay_s: float = 0.0):
        self.n, self.fail, self.read_delay_s = n, set(fail), read_delay_s
        self.reads = self.delivered = 0
        self.released = False

    def read(self):
        self.reads += 1
        if self.read_delay_s:
            time.sleep(self.read_delay_s)
        if self.reads in self.fail or self.delivered >= self.n:
            return False, None
        self.delivered += 1
        return True, frame(self.delivered - 1)

    def release(self):
        self.released = True

    def isOpened(self):
        return not self.released


class Recorder:
    """Injected sleep + clock: records waits and advances a fake clock instead of sleeping."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s

    def clock(self):
        return self.now


def stream(spec, caps, **kw):
    """A FrameStream over a sequence of fake captures (one per open/reopen)."""
    caps = iter(caps)
    rec = Recorder()
    s = FrameStream(spec, opener=lambda _spec: next(caps), sleep=rec.sleep, clock=rec.clock,
                    log=lambda m: None, **kw)
    return s, rec


CAMERA, FILE = SourceSpec("camera", 0), SourceSpec("file", "clip.avi")


# -- parsing -------------------------------------------------------------------------


def test_parse_source_kinds(monkeypatch):
    monkeypatch.setattr(capture, "csi_cameras", lambda: [])
    assert parse_source("2") == SourceSpec("camera", 2)
    assert parse_source(None, "1") == SourceSpec("camera", 1)
    assert parse_source("/dev/video3").target == 3
    assert parse_source(None, "csi") == SourceSpec("csi", 0)
    assert parse_source(None, "picamera2:1") == SourceSpec("csi", 1)
    assert parse_source("clip.mp4").kind == "file" and not parse_source("clip.mp4").live
    assert parse_source("rtsp://cam.local/live").kind == "stream" and parse_source("rtsp://x/y").live
    assert parse_source(None, "auto") == SourceSpec("camera", 0)  # no Pi camera found
    assert parse_source("0", "auto", width=320, height=240, fps=5).fps == 5


def test_auto_prefers_the_pi_camera(monkeypatch):
    monkeypatch.setattr(capture, "csi_cameras", lambda: [{"Model": "imx708", "Id": "/base/soc/i2c0mux/imx708"}])
    assert parse_source(None, "auto").kind == "csi"


def test_names_hide_passwords_and_name_the_device():
    assert "secret" not in parse_source("rtsp://admin:secret@10.0.0.1/stream").name
    if sys.platform.startswith("linux"):
        assert "/dev/video2" in SourceSpec("camera", 2).name


def test_source_and_camera_together_is_an_error():
    with pytest.raises(UsageError, match="either"):
        parse_source("clip.mp4", "1")


# -- end of file vs a stalled camera ---------------------------------------------------


def test_video_file_ends_cleanly_without_retry():
    cap = FakeCapture(n=5)
    s, rec = stream(FILE, [cap])
    assert [int(f[0, 0, 0]) for f in s] == [0, 1, 2, 3, 4]
    assert rec.sleeps == [] and s.retries == 0
    s.release()
    assert cap.released


def test_loop_replays_a_file():
    s, _ = stream(FILE, [FakeCapture(n=3), FakeCapture(n=3), FakeCapture(n=0)], loop=True)
    got = [int(s.read()[0, 0, 0]) for _ in range(6)]
    assert got == [0, 1, 2, 0, 1, 2]


def test_live_camera_is_retried_with_backoff_and_resumes():
    # reads 3..6 fail (4 failures): waits 0.25, 0.5, 1, 2; reopened after the 3rd failure
    first = FakeCapture(n=100, fail={3, 4, 5})
    second = FakeCapture(n=100, fail={1})
    s, rec = stream(CAMERA, [first, second], backoff=Backoff(reopen_after=3))
    frames = [s.read() for _ in range(4)]
    assert all(f is not None for f in frames)
    assert rec.sleeps == [0.25, 0.5, 1.0, 2.0]
    assert first.released and s.reopens == 1 and s.retries == 4


def test_backoff_is_bounded():
    assert list(itertools.islice(Backoff(initial_s=0.25, max_s=4).delays(), 8)) == [0.25, 0.5, 1, 2, 4, 4, 4, 4]


def test_a_dead_camera_gives_up_with_a_camera_error():
    s, rec = stream(CAMERA, itertools.repeat(FakeCapture(n=0)), backoff=Backoff(give_up_after_s=10))
    with pytest.raises(CameraError, match=r"camera 0.*no frame for 1\d s"):
        s.read()
    assert 10 <= sum(rec.sleeps) < 10 + 4  # gave up on time, never waited longer than max_s past it
    assert max(rec.sleeps) <= 4


def test_unplugged_camera_keeps_backing_off_until_it_returns():
    def opener(_spec, attempts=iter([FakeCapture(n=1), "unplugged", FakeCapture(n=5)])):
        cap = next(attempts)
        if cap == "unplugged":
            raise CameraError("can't open camera 0: /dev/video0 does not exist")
        return cap

    rec, logs = Recorder(), []
    s = FrameStream(CAMERA, opener=opener, sleep=rec.sleep, clock=rec.clock, log=logs.append,
                    backoff=Backoff(reopen_after=1))
    assert s.read() is not None  # the one frame of the first capture
    assert s.read() is not None  # failed, reopen failed (unplugged), reopen worked
    assert any("does not exist" in m for m in logs)
    assert rec.sleeps == [0.25, 0.5]


def test_stop_interrupts_a_backoff_wait():
    s = FrameStream(CAMERA, opener=lambda _spec: FakeCapture(n=0), log=lambda m: None,
                    backoff=Backoff(initial_s=30, max_s=30))  # real (event) sleep
    threading.Timer(0.2, s.stop).start()
    t0 = time.monotonic()
    assert s.read() is None
    assert time.monotonic() - t0 < 5


# -- latest frame wins -----------------------------------------------------------------


def test_reader_hands_out_the_newest_frame_and_counts_the_skipped():
    s, _ = stream(FILE, [FakeCapture(n=60, read_delay_s=0.002)])  # ends after 60 frames
    reader = LatestFrameReader(s)
    got = []
    for f in reader:
        got.append(int(f[0, 0, 0]))
        time.sleep(0.02)  # a slow model: ~10 frames arrive meanwhile
    assert got == sorted(set(got))  # never an old frame again
    assert got[-1] == 59  # the last frame still comes out
    assert reader.dropped > 0 and reader.dropped + len(got) == 60


def test_reader_passes_camera_errors_to_the_consumer():
    s, _ = stream(CAMERA, itertools.repeat(FakeCapture(n=2)), backoff=Backoff(give_up_after_s=1))
    reader = LatestFrameReader(s)
    with pytest.raises(CameraError):
        while reader.get() is not None:
            pass


# -- opening real things ---------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 device names")
def test_missing_camera_message_names_the_device_and_what_to_check():
    with pytest.raises(CameraError) as e:
        capture.open_capture(SourceSpec("camera", 57))
    message = str(e.value)
    assert "/dev/video57" in message and "ls /dev/video*" in message and "\n" not in message


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(CameraError, match="not found"):
        capture.open_capture(SourceSpec("file", str(tmp_path / "nope.mp4")))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(CameraError, match="can't decode"):
        capture.open_capture(SourceSpec("file", str(junk)))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(CameraError, match=r"empty.mp4 is empty \(0 bytes\)"):
        capture.open_capture(SourceSpec("file", str(tmp_path / "empty.mp4")))
    with pytest.raises(CameraError, match="is a directory; give a video file in it"):
        capture.open_capture(SourceSpec("file", str(tmp_path)))


def test_a_video_file_without_decodable_frames_is_a_camera_error(tmp_path):
    """A real AVI cut after its header: OpenCV opens it but decodes nothing. Not a clean 0-frame end."""
    import cv2
    good = tmp_path / "good.avi"
    writer = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    data = good.read_bytes()
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(data[:data.index(b"movi") + 4])
    s = FrameStream(SourceSpec("file", str(damaged)))
    with pytest.raises(CameraError, match=r"video file .*damaged.avi contains no decodable frames"):
        s.read()
    s.release()


# -- picamera2, faked ----------------------------------------------------------------------


def fake_picamera2(cameras=({"Model": "imx708", "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0},)):
    calls = {}

    class Picamera2:
        @staticmethod
        def global_camera_info():
            return list(cameras)

        def __init__(self, num):
            calls["num"] = num

        def create_video_configuration(self, main, controls):
            return {"main": main, "controls": controls}

        def configure(self, config):
            calls["config"] = config

        def start(self):
            calls["started"] = True

        def capture_array(self, name, wait=None):
            calls["wait"] = wait
            w, h = calls["config"]["main"]["size"]
            return np.zeros((h, w, 3), np.uint8)

        def stop(self):
            calls["stopped"] = True

        def close(self):
            calls["closed"] = True

    return types.SimpleNamespace(Picamera2=Picamera2), calls


def test_picamera2_capture_reads_bgr_and_releases(monkeypatch):
    module, calls = fake_picamera2()
    monkeypatch.setitem(sys.modules, "picamera2", module)
    cap = capture.open_capture(SourceSpec("csi", 0, width=320, height=240, fps=10))
    ok, f = cap.read()
    assert ok and f.shape == (240, 320, 3)
    assert calls["config"]["main"]["format"] == "RGB888" and calls["config"]["controls"] == {"FrameRate": 10.0}
    assert calls["wait"] > 0  # reads time out instead of hanging on a dead camera
    cap.release()
    assert calls["stopped"] and calls["closed"] and not cap.isOpened()
    assert capture.csi_cameras()[0]["Model"] == "imx708"


def test_picamera2_missing_or_no_camera(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(CameraError, match="python3-picamera2"):
        capture.open_capture(SourceSpec("csi", 0))
    assert capture.csi_cameras() == []
    module, _ = fake_picamera2(cameras=())
    monkeypatch.setitem(sys.modules, "picamera2", module)
    with pytest.raises(CameraError, match="ribbon cable"):
        capture.open_capture(SourceSpec("csi", 0))
