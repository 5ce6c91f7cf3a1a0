"""python -m tools.frame_profile: where a camera frame's preprocessing time goes.

Times each step of `edge_runtime.photo.photo_to_input` (the steps `photo_steps`
yields: shrink, Lab, background colours, colour distance, ...) inside whole
runs of the pipeline, so every step sees the caches the step before it left,
as in a real frame. Per frame: the median of each step over --runs runs, the
sum of those medians, and the median of photo_to_input itself, timed in
alternation with the stepped runs.

The frames:
- `synthetic`: the 640x480 frame `make bench` classifies whole
  (edge_runtime.synthetic.synthetic_frame);
- a few photos from data/photos made into 640x480 camera frames;
- each of them cut to the camera's default centre region of interest, which
  is what `webcam` and `serve` classify (edge_runtime.frames.compute_roi).

--against REV also times edge_runtime/photo.py as it is at git revision REV
(with --set NAME=VALUE overriding its constants), alternating run by run with
the working tree's so both see the same machine load, and says whether the two
give identical model inputs on these frames.

Writes benchmarks/frame_path.json and .md. A workstation measurement: on a
shared machine every figure moves with the load, which is recorded.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from edge_runtime import atomic, process
from edge_runtime.argtypes import HelpFormatter, count
from edge_runtime.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
PHOTO_DIR = ROOT / "data" / "photos"
FRAME_SHAPE = (480, 640)  # (height, width): the synthetic frame's, and the camera frames made of photos
# Photos of data/photos made into camera frames (name: file): garments on a bed or a
# floor, shoes, and a catalogue shot on white; of each kind the first in labels.csv in
# which the segmentation finds a garment both in the whole frame and in its centre ROI
# (in others the garment fills the frame and nothing stands out).
CAMERA_PHOTOS = {
    "T-shirt on a bed": "images/t-shirt/00003aeb-ace5-43bf-9a0c-dc31a03e9cd2.jpg",
    "trousers on a floor": "images/clothing-dataset/unlabelled/04df942f-d19c-4abe-b917-9c348623b665.jpg",
    "sneakers": "images/shoes/0bacb2c4-3d90-4835-b23e-aa7c2284d1bc.jpg",
    "ankle boot on white": "images/abo/029b8a0e.jpg",
}


# -- the steps ------------------------------------------------------------------------

def legacy_steps(photo, image, size):
    """photo_to_input of a photo module without `photo_steps` (this project before it
    had one), as the same named steps, calling that module's own functions in its
    photo_to_input's order. Checked against its photo_to_input by `check_steps`."""
    import cv2
    bgr = photo.to_bgr(image)
    yield "to_bgr", bgr
    bgr = photo.shrink(bgr)
    yield "shrink", bgr
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    yield "lab", lab
    background = photo.background_colors(lab)
    yield "background_colors", background
    distance = photo.color_distance(lab, background)
    yield "color_distance", distance
    mask = photo.foreground(distance)
    yield "foreground", mask
    if min(mask.shape) >= 8:
        mask = photo.clean_mask(mask)
        yield "clean_mask", mask
    if mask.sum() < photo.MIN_GARMENT_FRACTION * mask.size:
        return np.zeros(size, np.uint8)
    mask = photo.main_blobs(mask)
    yield "main_blobs", mask
    mask = photo.fill_holes(mask)
    yield "fill_holes", mask
    rows, cols = photo.bounding_box(mask)
    yield "bounding_box", (rows, cols)
    gray = cv2.cvtColor(bgr[rows, cols], cv2.COLOR_BGR2GRAY)
    yield "gray", gray
    dark = photo.is_dark(background)
    garment = photo.garment_intensity(gray, dark)
    yield "garment_intensity", garment
    garment = photo.stretch(garment, mask[rows, cols], 1.0 if dark else photo.INVERTED_GAMMA)
    yield "stretch", garment
    canvas = photo.fit_to_canvas(garment, size)
    yield "fit_to_canvas", canvas
    model_input = photo.full_range(canvas)
    yield "full_range", model_input
    return model_input


def steps_of(photo, image, size):
    """The step generator for `image`: the module's photo_steps, else legacy_steps."""
    if hasattr(photo, "photo_steps"):
        return photo.photo_steps(image, size)
    return legacy_steps(photo, image, size)


def run_steps(steps, clock=time.perf_counter_ns) -> tuple[list[tuple[str, int]], object]:
    """Run a step generator to its end: ([(step, ns since the previous step)], its result)."""
    times = []
    previous = clock()
    while True:
        try:
            name, _ = next(steps)
        except StopIteration as done:
            return times, done.value
        now = clock()
        times.append((name, now - previous))
        previous = now


def check_steps(photo, image, size) -> list[str]:
    """The step names for `image`, after checking that the steps end in exactly
    photo_to_input's output (so what is timed is what runs)."""
    times, result = run_steps(steps_of(photo, image, size))
    expected = photo.photo_to_input(image, size)
    if not np.array_equal(result, expected):
        raise AssertionError("the timed steps do not give photo_to_input's output")
    return [name for name, _ in times]


# -- timing ---------------------------------------------------------------------------

def _median_us(samples_ns: list[int]) -> float:
    return round(float(np.median(samples_ns)) / 1e3, 1)


def frame_profile(frame: np.ndarray, size: tuple[int, int] = (28, 28), runs: int = 300, warmup: int = 20,
                  photos: dict | None = None) -> dict:
    """Each step of photo_to_input on `frame` -> median µs, the sum of those medians, and
    photo_to_input's own median.

    `photos` maps a name to a photo module (default {"photo": edge_runtime.photo}); with
    several, their runs alternate (run i: each module once, the order turning each run),
    so all see the same machine load. Returns {name: {"steps": {step: µs}, "sum_us",
    "total_us", "runs"}} for several modules, that dict itself for one.
    """
    if runs < 1:
        raise ValueError(f"runs must be 1 or more, got {runs}")
    if photos is None:
        from edge_runtime import photo
        photos = {"photo": photo}
    names = {key: check_steps(module, frame, size) for key, module in photos.items()}
    steps = {key: {step: [] for step in names[key]} for key in photos}
    totals: dict[str, list[int]] = {key: [] for key in photos}
    order = list(photos)
    clock = time.perf_counter_ns
    was_enabled = gc.isenabled()
    gc.disable()  # a collection of someone else's garbage would land in one sample
    try:
        for i in range(warmup + runs):
            for key in order[i % len(order):] + order[:i % len(order)]:
                module = photos[key]
                times, _ = run_steps(steps_of(module, frame, size), clock)
                start = clock()
                module.photo_to_input(frame, size)
                total = clock() - start
                if i >= warmup:
                    for step, ns in times:
                        steps[key][step].append(ns)
                    totals[key].append(total)
    finally:
        if was_enabled:
            gc.enable()
    result = {}
    for key in photos:
        medians = {step: _median_us(v) for step, v in steps[key].items()}
        result[key] = {"steps": medians, "sum_us": round(sum(medians.values()), 1),
                       "total_us": _median_us(totals[key]), "runs": runs}
    return result if len(photos) > 1 else result[next(iter(photos))]


# -- the frames -----------------------------------------------------------------------

def camera_frame(image: np.ndarray, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """A photo as a camera would frame it: the largest centred crop of the frame's
    aspect ratio, resized (INTER_CUBIC) to `shape` (h, w). Pure."""
    import cv2
    h, w = image.shape[:2]
    out_h, out_w = shape
    crop_w, crop_h = min(w, round(h * out_w / out_h)), min(h, round(w * out_h / out_w))
    x, y = (w - crop_w) // 2, (h - crop_h) // 2
    return cv2.resize(image[y:y + crop_h, x:x + crop_w], (out_w, out_h), interpolation=cv2.INTER_CUBIC)


def centre_roi(frame: np.ndarray) -> np.ndarray:
    """The part of a frame `webcam` and `serve` classify by default."""
    from edge_runtime.frames import RoiSpec, compute_roi, crop
    return crop(frame, compute_roi(frame.shape, RoiSpec("center")))


def profile_frames(photo_dir: Path = PHOTO_DIR) -> dict[str, np.ndarray]:
    """{name: BGR frame}: the synthetic frame, CAMERA_PHOTOS as 640x480 frames, and the
    centre ROI of each."""
    from edge_runtime.imageio import read_image
    from edge_runtime.synthetic import synthetic_frame
    frames = {"synthetic": synthetic_frame()}
    for name, file in CAMERA_PHOTOS.items():
        frames[name] = camera_frame(read_image(photo_dir / file))
    frames.update({f"{name}, centre ROI": centre_roi(frame) for name, frame in list(frames.items())})
    return frames


# -- another revision's photo.py ------------------------------------------------------

def parse_setting(text: str) -> tuple[str, float]:
    """argparse type for --set: NAME=NUMBER, a constant of photo.py."""
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name.isidentifier() or number is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=NUMBER, e.g. WORK_SIDE=96")
    return name, number


def photo_module(source: str, name: str, settings: list[tuple[str, float]] = ()) -> types.ModuleType:
    """A module made of photo.py source text, inside the edge_runtime package (for its
    relative imports), with constants overridden: NAME=VALUE keeps the constant's type."""
    module = types.ModuleType(f"edge_runtime._photo_{name}")
    module.__package__ = "edge_runtime"
    exec(compile(source, f"photo.py@{name}", "exec"), module.__dict__)  # noqa: S102 - this repository's own code
    for key, value in settings:
        if not isinstance(module.__dict__.get(key), (int, float)):
            raise UsageError(f"--set {key}: photo.py has no numeric constant {key}")
        module.__dict__[key] = type(module.__dict__[key])(value)
    return module


def photo_at(revision: str, settings: list[tuple[str, float]] = ()) -> types.ModuleType:
    """edge_runtime/photo.py as it is at git `revision` (WORKTREE: the file on disk), or
    the photo.py-like file at the path `revision`."""
    if revision == "WORKTREE":
        return photo_module((ROOT / "edge_runtime" / "photo.py").read_text(), "worktree", settings)
    if revision.endswith(".py") and Path(revision).is_file():
        return photo_module(Path(revision).read_text(), "file", settings)
    done = subprocess.run(["git", "show", f"{revision}:edge_runtime/photo.py"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise UsageError(f"--against {revision}: {done.stderr.strip() or 'git show failed'}")
    return photo_module(done.stdout, revision.replace("-", "_").replace(".", "_"), settings)


def swapped(other: types.ModuleType, functions: list[str], settings: list[tuple[str, float]] = ()) -> types.ModuleType:
    """Today's photo.py with `functions` taken from `other`: the steps call them by
    module-level name, so the pipeline runs everything else as today."""
    module = photo_module((ROOT / "edge_runtime" / "photo.py").read_text(), "swapped", settings)
    for name in functions:
        if not callable(getattr(other, name, None)) or not callable(getattr(module, name, None)):
            raise UsageError(f"--swap {name}: not a function of both photo.py versions")
        setattr(module, name, getattr(other, name))
    return module


def revision_name(revision: str) -> str:
    """A commit's short hash and subject, or the revision as given."""
    if revision == "WORKTREE" or revision.endswith(".py"):
        return revision
    done = subprocess.run(["git", "log", "-1", "--format=%h %s", revision], cwd=ROOT, capture_output=True, text=True)
    text = done.stdout.strip()
    if done.returncode != 0 or not text:
        return revision
    return text if len(text) <= 80 else text[:79] + "…"


# -- report -----------------------------------------------------------------------------

def markdown(report: dict) -> str:
    """The step tables. Pure."""
    against = report.get("against")
    machine = report["machine"]
    lines = ["# Frame path: photo_to_input step by step", "",
             f"{report['created']} · {machine.get('cpu')}, {machine.get('cores_usable')} cores usable, "
             f"OpenCV {machine.get('opencv')} ({machine.get('opencv_threads')} threads), "
             f"numpy {machine.get('numpy')}, Python {machine.get('python')}  ",
             f"Command: `{report['command']}`  ",
             f"Load average at start: {', '.join(map(str, report['load_average']['start']))}; "
             f"at the end: {', '.join(map(str, report['load_average']['end']))} (on "
             f"{machine.get('cores_usable')} cores: other work slows every figure)  ",
             f"Median µs of {report['runs']} runs per frame after {report['warmup']} warm-up runs; "
             "a step's time is measured inside whole runs of the pipeline."]
    if against:
        what = (f"today's photo.py with {', '.join(against['swap'])} from `{against['revision']}`"
                if against.get("swap") else f"`{against['revision']}`")
        lines += [f"Against: {what} ({against['describes']}), run by run in alternation."]
    label = f"with {', '.join(against['swap'])} from {against['revision']}" if against and against.get("swap") \
        else f"at {against['revision']}" if against else ""
    for name, r in report["frames"].items():
        lines += ["", f"## {name} ({r['shape'][1]}x{r['shape'][0]})", ""]
        mine = r["profile"]
        if against:
            other = r["against"]
            lines += [f"| step | µs {label} | µs now | change |", "|---|---:|---:|---:|"]
            steps = list(dict.fromkeys(list(other["steps"]) + list(mine["steps"])))
            for step in steps:
                a, b = other["steps"].get(step), mine["steps"].get(step)
                lines.append(f"| {step} | {_cell(a)} | {_cell(b)} | {_change(a, b)} |")
            lines.append(f"| sum of the steps | {other['sum_us']:.0f} | {mine['sum_us']:.0f} | "
                         f"{_change(other['sum_us'], mine['sum_us'])} |")
            lines.append(f"| **photo_to_input** | **{other['total_us']:.0f}** | **{mine['total_us']:.0f}** | "
                         f"**{_change(other['total_us'], mine['total_us'])}** |")
            lines.append("")
            lines.append("Model inputs identical to the other revision's: " + ("yes" if r["identical"] else "**no**"))
        else:
            lines += ["| step | µs | share |", "|---|---:|---:|"]
            for step, us in mine["steps"].items():
                lines.append(f"| {step} | {_cell(us)} | {us / mine['sum_us']:.0%} |")
            lines.append(f"| sum of the steps | {mine['sum_us']:.0f} | |")
            lines.append(f"| **photo_to_input** | **{mine['total_us']:.0f}** | |")
    return "\n".join(lines) + "\n"


def _cell(us: float | None) -> str:
    return "–" if us is None else f"{us:.1f}" if us < 10 else f"{us:.0f}"


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None or before <= 0:
        return ""
    return f"{(after - before) / before:+.0%}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.frame_profile", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--runs", type=count(1), default=300, help="timed runs per frame (the median is kept)")
    parser.add_argument("--warmup", type=count(0), default=20, help="untimed runs first")
    parser.add_argument("--against", metavar="REV",
                        help="also time edge_runtime/photo.py at this git revision (WORKTREE: the file on disk; "
                             "or a path to a .py file with photo.py's functions), in alternation")
    parser.add_argument("--set", dest="settings", type=parse_setting, action="append", default=[],
                        metavar="NAME=VALUE", help="override a constant of the --against photo.py, e.g. WORK_SIDE=96")
    parser.add_argument("--swap", action="append", default=[], metavar="FUNCTION",
                        help="time instead today's photo.py with this function taken from the --against "
                             "revision (repeatable): what one change is worth within all the others")
    parser.add_argument("--frames", default=None, metavar="NAMES",
                        help="comma-separated substrings: profile only the frames whose names contain one")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="directory for frame_path.{json,md}")
    return parser.parse_args(argv)


@process.command
def main(argv=None) -> int:
    args = parse_args(argv)
    import os

    from edge_runtime import photo
    from edge_runtime.bench import machine_info
    if args.settings and not args.against:
        raise UsageError("--set changes the --against photo.py: give --against REV (WORKTREE for the file on disk)")
    frames = profile_frames()
    if args.frames:
        wanted = [w.strip() for w in args.frames.split(",") if w.strip()]
        frames = {k: v for k, v in frames.items() if any(w in k for w in wanted)}
        if not frames:
            raise UsageError(f"--frames {args.frames}: no frame's name contains any of these")
    if args.swap and not args.against:
        raise UsageError("--swap takes functions from the --against photo.py: give --against REV")
    modules = {"now": photo}
    if args.against:
        modules["against"] = photo_at(args.against, args.settings)
    if args.swap:
        modules["against"] = swapped(modules["against"], args.swap, args.settings)
    load_start = [round(x, 2) for x in os.getloadavg()]
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
              "command": "python -m tools.frame_profile " + " ".join(sys.argv[1:] if argv is None else argv),
              "runs": args.runs, "warmup": args.warmup, "frames": {}}
    if args.against:
        report["against"] = {"revision": args.against, "describes": revision_name(args.against),
                             "settings": dict(args.settings), "swap": args.swap}
    for name, frame in frames.items():
        print(f"{name}: {frame.shape[1]}x{frame.shape[0]}", file=sys.stderr, flush=True)
        timed = frame_profile(frame, runs=args.runs, warmup=args.warmup, photos=modules)
        entry = {"shape": list(frame.shape)}
        if args.against:
            entry.update(profile=timed["now"], against=timed["against"],
                         identical=bool(np.array_equal(photo.photo_to_input(frame),
                                                       modules["against"].photo_to_input(frame))))
        else:
            entry["profile"] = timed
        report["frames"][name] = entry
    report["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    text = markdown(report)
    atomic.write_text(args.out / "frame_path.json", json.dumps(report, indent=2) + "\n")
    atomic.write_text(args.out / "frame_path.md", text)
    print(text)
    print(f"wrote {args.out}/frame_path.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    process.exit_with(main())
