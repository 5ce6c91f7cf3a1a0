"""`python -m edge_runtime webcam`: classify frames from a camera, video file or stream.

    python -m edge_runtime webcam                     # Pi camera module if present, else camera 0
    python -m edge_runtime webcam --camera 1 --width 1280 --height 720
    python -m edge_runtime webcam clip.mp4 --headless # one JSON line per frame on stdout
    python -m edge_runtime webcam --save out.mp4 --inset --smooth 5
    python -m edge_runtime webcam --own my-photos/    # your photos mixed in; keys 0-9 and n add to them

Each frame: crop the region of interest (a centre square by default), run
the same photo preprocessing as `classify` (Classifier.classify), optionally
average the probabilities over the last N frames, then either draw the ROI
box, top-k labels, timing and FPS on the frame (window and/or --save), or
print a JSON line (headless: over SSH, under systemd, in CI).

With --own DIR the user's own photos in DIR are mixed into every frame's
classification (edge_runtime/own.py), and in the window the --collect keys
save into DIR and add the saved photo to them at once.

Layout, as in the TensorFlow Lite Raspberry Pi examples: the pure functions on
arrays (ROI, smoothing, overlay, JSON record) come first and are tested
directly; `classify_frames` is the loop body; `run` deals with argv, the
camera, the window, signals and files. OpenCV is imported inside functions
so building the CLI parser stays cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .argtypes import add_own_argument, count
from .atomic import commit, partial_path
from .deployed import find_model
from .display import choose_window
from .errors import UsageError
from .frames import Box, FpsMeter, add_camera_arguments, classify_frames, json_record, source_fps
from .process import StopFlag

# -- drawing ------------------------------------------------------------------------

GREEN, ORANGE, WHITE, BLACK = (0, 200, 0), (0, 140, 255), (255, 255, 255), (0, 0, 0)  # BGR


def draw_overlay(frame: np.ndarray, box: Box, result, fps: float, latency_ms: float,
                 inset: bool = False) -> np.ndarray:
    """A copy of the frame with the ROI box, top-k labels, timing and optionally the model input. Pure."""
    import cv2

    out = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = out.shape[:2]
    scale = max(0.4, h / 800)  # text size grows with the frame
    thick = max(1, int(round(scale * 2)))
    line_h = int(30 * scale) + 4
    x, y, bw, bh = box
    colour = ORANGE if result.is_unknown else GREEN
    cv2.rectangle(out, (x, y), (x + bw - 1, y + bh - 1), colour, thick)

    lines = [f"{i + 1}. {p.label} {p.score:.0%}" for i, p in enumerate(result.top_k)]
    if result.nothing_found:
        lines = ["nothing found"]
    elif result.is_unknown:
        lines.insert(0, "unknown")
    lines.append(f"{latency_ms:.1f} ms  {fps:.1f} fps")
    for i, text in enumerate(lines):
        org = (10, 10 + line_h * (i + 1) - 8)
        # dark outline under white text: readable on any background
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, thick, cv2.LINE_AA)

    if inset:  # what the model saw, enlarged without smoothing so its pixels stay visible
        model_input = np.asarray(result.model_input, np.uint8)
        factor = max(1, min(h, w) // (4 * model_input.shape[0]))
        big = np.repeat(np.repeat(model_input, factor, axis=0), factor, axis=1)
        ih, iw = big.shape
        if ih + 2 <= h and iw + 2 <= w:
            out[1:ih + 1, w - iw - 1:w - 1] = big[..., None]
            cv2.rectangle(out, (w - iw - 2, 0), (w - 1, ih + 1), WHITE, 1)
    return out


# -- the command --------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    add_camera_arguments(parser, "video file, stream URL (rtsp://, http://) or camera index, instead of --camera")
    parser.add_argument("--inset", action="store_true", help="show the 28x28 model input in a corner")
    parser.add_argument("--headless", action="store_true",
                        help="no window: one JSON line per frame on stdout (automatic without a display)")
    parser.add_argument("--save", type=Path, default=None, metavar="OUT.mp4",
                        help="record annotated frames (.mp4 mp4v, .avi MJPG)")
    parser.add_argument("--collect", type=Path, default=None, metavar="DIR",
                        help="in the window, keys 0-9 save the classified region as a photo of that class "
                             "(n: of none) into DIR/<class>/, the layout `python -m train --photos DIR` reads")
    add_own_argument(parser, saves=True)
    parser.add_argument("--loop", action="store_true", help="replay a video file at its end")
    parser.add_argument("--max_frames", type=count(0), default=0, help="stop after N classified frames (0 = no limit)")


# --save extension -> FourCC. mp4v and MJPG are built into every OpenCV wheel, headless included.
SAVE_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def check_save_path(path: Path) -> None:
    """UsageError unless a recording can be written at `path`, so a bad path never passes for a codec problem."""
    if path.is_dir():
        raise UsageError(f"--save {path}: is a directory; give a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() not in SAVE_CODECS:
        raise UsageError(f"--save {path}: use .mp4 or .avi")
    if not path.parent.is_dir():
        raise UsageError(f"--save {path}: directory {path.parent} does not exist")
    # Try it: os.access says yes to root even where creating files fails (/sys, read-only mounts).
    try:
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise UsageError(f"--save {path}: not writable ({e.strerror})") from e


def open_writer(path: Path, fps: float, size: tuple[int, int], recording: contextlib.ExitStack):
    """A cv2.VideoWriter for --save; the codec follows the file extension.

    It records to a temporary file beside `path` that is renamed over `path`
    when `recording` closes, however the run ended (the end of the source,
    Ctrl-C, a camera that died): the frames recorded so far are a complete
    video once released. Only a killed process leaves the temporary file, and
    any earlier recording at `path` stays intact.
    """
    import cv2

    check_save_path(path)  # again: the directory may have changed since the run started
    codec = SAVE_CODECS[path.suffix.lower()]
    tmp = partial_path(path, keep_suffix=True)  # OpenCV picks the container by the suffix
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        tmp.unlink(missing_ok=True)
        raise UsageError(f"--save {path}: this OpenCV can't encode {codec}; try a .avi file (MJPG)")

    def finish() -> None:
        writer.release()  # writes the index: the file is complete before it appears at `path`
        commit(tmp, path)
    recording.callback(finish)
    return writer


WINDOW_TITLE = "fashion-edge (q to quit)"


def open_window(headless: bool) -> bool:
    """Open the window if there is a display and a GUI-enabled OpenCV; else say once why not."""
    import cv2

    window, notice = choose_window(headless, os.environ, cv2.getBuildInformation())
    if window:
        try:
            cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)
        except cv2.error as e:  # a display variable pointing nowhere, a broken GUI backend
            window, notice = False, f"note: can't open a window ({str(e).splitlines()[0]}): running headless"
    if notice:
        print(notice, file=sys.stderr, flush=True)
    return window


def show(frame: np.ndarray) -> tuple[bool, int]:
    """Show a frame: (False when the user pressed q or Esc or closed the window, the key pressed)."""
    import cv2

    cv2.imshow(WINDOW_TITLE, frame)
    key = cv2.waitKey(1) & 0xFF
    return key not in (ord("q"), 27) and cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) >= 1, key


def collect_label(key: int, labels: list[str]) -> str | None:
    """The label a key saves a frame under with --collect: 0-9 the class of that index,
    n `none`; None for any other key. Pure."""
    from .collect import NONE
    if ord("0") <= key <= ord("9") and key - ord("0") < len(labels):
        return labels[key - ord("0")]
    return NONE if key == ord("n") else None


def save_labelled(collect: Path, label: str, fr, labels: list[str], own=None) -> list[str]:
    """A collect key's work: save the frame's region of interest under `label`, and with --own
    add it to the own photos at once; returns the lines to print."""
    from .collect import save_frame
    from .errors import ImageError
    from .process import printable
    if own is not None and own.full:
        return ["warning: the own photos are as many as an imprint takes; not saved (move a class folder out of "
                f"{printable(str(collect))} first)"]
    x, y, w, h = fr.box
    saved = save_frame(collect, label, labels, fr.frame[y:y + h, x:x + w])
    lines = [f"saved {printable(str(saved))}"]
    if own is not None:
        try:
            note = own.add(saved, label)
        except (ImageError, OSError) as e:  # the file just written can't be read back: say so, go on
            return lines + [f"warning: {printable(str(e))}: not added to the own photos"]
        lines.append(f"own photos of {label}: {own.counts()[label]}")
        if note:
            lines.append(f"warning: {printable(note)}")
    return lines


def own_photos(args, classifier):
    """--own: the collect folder (DIR itself) and the live own photos; --collect elsewhere is a usage error."""
    from .imprint import embed_photos
    from .own import OwnPhotos, load_own, saving_folder
    folder = saving_folder(args.own, args.collect)
    own = load_own(folder, classifier)
    return folder, OwnPhotos(folder, own, [classifier], lambda images: embed_photos(classifier, images))


def run(args) -> int:
    from . import capture
    from .classifier import Classifier

    if (args.width is None) != (args.height is None):
        raise UsageError("give both --width and --height, or neither")
    if args.save is not None:
        check_save_path(args.save)  # before the camera is opened, not at the first frame
    model = find_model(args.model)
    classifier = Classifier(model.path, num_threads=args.threads, threshold=args.threshold)
    collect, own = args.collect, None
    if args.own is not None:  # after the model: the photos go through it
        collect, own = own_photos(args, classifier)
    spec = capture.parse_source(args.source, args.camera, width=args.width, height=args.height, fps=args.fps)
    if args.loop and spec.live:
        raise UsageError("--loop replays a video file; a camera or stream runs until stopped")

    stream = capture.FrameStream(spec, loop=args.loop,  # opens it: CameraError here names the device
                                 backoff=capture.Backoff(give_up_after_s=args.reconnect_timeout))
    reader, writer, window = None, None, False
    stats = {"count": 0, "total_ms": 0.0, "max_ms": 0.0, "reason": "end of stream"}
    started = time.monotonic()
    with StopFlag(stream.stop) as stop, contextlib.ExitStack() as recording:
        try:
            window = open_window(args.headless)
            if args.verbose:
                print(f"source: {spec.name}; model: {model.path} ({model.source}; {classifier.backend.package} "
                      f"{classifier.backend.version}); threshold: {classifier.threshold}", file=sys.stderr)
            # Live sources: a reader thread keeps only the newest frame. Files: every frame, in order.
            reader = capture.LatestFrameReader(stream) if spec.live else None
            frames = reader if reader is not None else stream
            fps_meter = FpsMeter()
            min_interval = 1.0 / args.rate if (args.rate and spec.live) else 0.0
            for fr in classify_frames(frames, classifier, args.roi, args.roi_size, args.top_k, args.smooth):
                stats["count"] += 1
                stats["total_ms"] += fr.latency_ms
                stats["max_ms"] = max(stats["max_ms"], fr.latency_ms)
                fps = fps_meter.tick(time.monotonic())
                if not window:
                    print(json.dumps(json_record(fr)), flush=True)  # flushed: a pipe or journald sees it now
                if window or args.save:
                    annotated = draw_overlay(fr.frame, fr.box, fr.result, fps, fr.latency_ms, args.inset)
                    if args.save:
                        if writer is None:
                            save_size = annotated.shape[1::-1]  # (width, height) of the first frame
                            writer = open_writer(args.save, args.fps or source_fps(stream), save_size, recording)
                        if annotated.shape[1::-1] != save_size:
                            # A camera that changes resolution mid-run: a video file has one frame size.
                            import cv2
                            annotated = cv2.resize(annotated, save_size, interpolation=cv2.INTER_AREA)
                        writer.write(annotated)
                    if window:
                        keep_running, key = show(annotated)
                        if not keep_running:
                            stats["reason"] = "quit"
                            break
                        label = collect_label(key, classifier.labels) if collect else None
                        if label is not None:
                            for line in save_labelled(collect, label, fr, classifier.labels, own):
                                print(line, file=sys.stderr, flush=True)
                if stop.event.is_set():
                    break
                if args.max_frames and stats["count"] >= args.max_frames:
                    stats["reason"] = f"--max_frames {args.max_frames}"
                    break
                if min_interval:  # --rate: wait, while the reader thread keeps only the newest frame
                    stop.event.wait(max(0.0, min_interval - (time.monotonic() - fps_meter.times[-1])))
        finally:
            if reader is not None:
                reader.stop()
            stream.release()  # the camera is free for the next program, whatever happened
            if window:
                import cv2
                cv2.destroyAllWindows()
        if stop.signal_name:
            stats["reason"] = stop.signal_name
    elapsed = time.monotonic() - started
    count = stats["count"]
    dropped = f", {reader.dropped} stale frames skipped" if reader is not None else ""
    retries = f", {stream.retries} failed reads retried" if stream.retries else ""
    print(f"stopped ({stats['reason']}): {count} frames in {elapsed:.1f} s "
          f"({count / elapsed if elapsed else 0:.1f} fps), processing {stats['total_ms'] / max(count, 1):.1f} ms/frame "
          f"mean, {stats['max_ms']:.1f} max{dropped}{retries}", file=sys.stderr)
    return 0
