"""`python -m edge_runtime classify PATH...`: classify image files, directories and globs.

    python -m edge_runtime classify photo.jpg shoes/ 'shop/*.png'
    python -m edge_runtime classify --json --threshold 0.6 photos/ > results.jsonl
    python -m edge_runtime classify --save_input seen/ photo.jpg   # what did the model see?
    python -m edge_runtime classify --own my-photos/ photos/       # your own photos of each class mixed in

One line per image on stdout (or one JSON object with --json). A file that
can't be read, or a glob or directory without images, is reported on stderr
and skipped; the exit status is then 1. No path matching anything at all is
a usage error (exit status 2).

OpenCV is imported only in `run`, so setting up the command line (which
imports every command module) works without it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

from .argtypes import add_model_arguments, add_own_argument, add_threshold_argument, positive_int
from .deployed import find_model
from .process import printable
from .errors import EdgeError, UsageError

ENLARGE = 10  # the --save_input copy for people is 10x bigger (280x280 for a 28x28 input)


# -- arguments --------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, directories (searched recursively for "
                             ".jpg/.jpeg/.png/.webp/.bmp) or glob patterns")
    parser.add_argument("--top_k", type=positive_int, default=3, help="how many classes to show per image")
    add_threshold_argument(parser)
    add_own_argument(parser)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per image (path, label, score, top_k, or error; own_photos with --own)")
    parser.add_argument("--save_input", type=Path, default=None, metavar="DIR",
                        help="write each image's 28x28 model input (and a 10x enlarged copy) as PNG into DIR")
    parser.add_argument("--naive", action="store_true",
                        help="baseline preprocessing (grayscale, squash, invert) instead of garment detection")
    add_model_arguments(parser)


# -- finding the files --------------------------------------------------------------

def images_in(directory: str) -> list[str]:
    """Image files under a directory, recursively, sorted.

    Hidden files and directories are skipped (macOS leaves `._photo.jpg`
    resource files next to photos copied from it), and symlinked
    directories are not followed (no loops).
    """
    from .imageio import is_image_name  # OpenCV: only when the command runs
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if is_image_name(f) and not f.startswith(".")]
    return found


def expand_paths(patterns: list[str]) -> tuple[list[str], list[str]]:
    """(files to classify, patterns that matched nothing).

    A directory yields its image files; a glob yields its matches (directories
    among them are searched too); any other path is taken as named, even if it
    doesn't exist or has no image extension, so reading it reports what is
    wrong. Duplicates are dropped, order is kept.
    """
    files, unmatched = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            matches = images_in(pattern)
        elif not os.path.lexists(pattern) and glob.has_magic(pattern):
            matches = []
            for match in sorted(glob.glob(pattern, recursive=True)):
                matches += images_in(match) if os.path.isdir(match) else [match]
        else:
            matches = [pattern]
        if not matches:
            unmatched.append(pattern)
        files += matches
    return list(dict.fromkeys(files)), unmatched


# -- output -------------------------------------------------------------------------

def human_line(name: str, result, width: int = 0) -> str:
    """'photo.jpg  Sneaker 0.97  (Sandal 0.02, Ankle boot 0.01)'. Pure.

    For an unknown image every top-k class goes in the parentheses, so the
    best guess is still visible.
    """
    if result.nothing_found:
        return f"{printable(name):<{width}}  nothing found (no garment stands out from the background)"
    others = result.top_k if result.is_unknown else result.top_k[1:]
    line = f"{printable(name):<{width}}  {result.label} {result.best.score:.2f}"
    if others:
        line += "  (" + ", ".join(f"{p.label} {p.score:.2f}" for p in others) + ")"
    return line


def save_input(directory: Path, name: str, model_input, taken: set[str]) -> Path:
    """Write the model input as <stem>.png and a nearest-neighbour <stem>_x10.png; returns the first.

    Names are made unique within one run (photo.png, photo-2.png, ...), as two
    directories may both hold a photo.jpg. cv2.imencode + Python's write
    handles any file name, which cv2.imwrite doesn't on every platform;
    the write is atomic, so a run stopped mid-way leaves no half-written PNG.
    """
    import cv2

    from .atomic import write_bytes
    stem = Path(name).stem or "image"
    unique, n = stem, 1
    while unique in taken:
        n += 1
        unique = f"{stem}-{n}"
    taken.add(unique)
    big = cv2.resize(model_input, None, fx=ENLARGE, fy=ENLARGE, interpolation=cv2.INTER_NEAREST)
    path = directory / f"{unique}.png"
    write_bytes(path, cv2.imencode(".png", model_input)[1].tobytes())
    write_bytes(directory / f"{unique}_x{ENLARGE}.png", cv2.imencode(".png", big)[1].tobytes())
    return path


def error_record(name: str, kind: str, message: str) -> dict:
    """The --json line for a file that could not be classified. Pure."""
    return {"path": name, "error": {"type": kind, "message": message}}


# -- the command ----------------------------------------------------------------------

def classify_file(classifier, path: str, preprocess, k: int, warn=None):
    """Read one file and classify it -> Result. Raises ImageError for unreadable files;
    `warn` gets the decoder's complaints about a damaged file that still decoded."""
    from .imageio import read_model_input
    return classifier.classify_input(read_model_input(path, preprocess, classifier.input_size, warn), k)


def run(args) -> int:
    from . import photo
    from .classifier import Classifier
    from .imageio import display_path

    if args.naive and args.own is not None:
        raise UsageError("--naive and --own: own photos are imprinted through the garment detection, "
                         "so they don't apply to naive inputs; drop one")
    files, unmatched = expand_paths(args.paths)
    if not any(os.path.lexists(f) for f in files):
        raise UsageError("no image files match " + " ".join(map(display_path, args.paths)))
    if args.save_input is not None:
        try:
            args.save_input.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--save_input {args.save_input}: can't create the directory ({e.strerror})") from e

    model = find_model(args.model)
    classifier = Classifier(model.path, num_threads=args.threads, threshold=args.threshold)
    preprocess = photo.naive_photo_to_input if args.naive else photo.photo_to_input
    if args.own is not None:
        from .own import load_own
        load_own(args.own, classifier)
    if getattr(args, "verbose", False):
        print(f"interpreter: {classifier.backend.package} {classifier.backend.version}; model: {model.path} "
              f"({model.source}); preprocessing: {preprocess.__name__}; threshold: {classifier.threshold}",
              file=sys.stderr)

    failed = len(unmatched)
    for pattern in unmatched:
        print(f"error: {printable(display_path(pattern))}: matches no image files", file=sys.stderr)
    try:
        failed += classify_all(classifier, files, preprocess, args)
    except BrokenPipeError:  # `classify ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush can't fail
        return 1
    return 1 if failed else 0


def classify_all(classifier, files: list[str], preprocess, args) -> int:
    """Classify and print each file in turn; returns how many failed."""
    from .imageio import display_path
    failed = 0
    width = min(60, max(len(display_path(f)) for f in files))  # aligns the human output
    taken: set[str] = set()
    for path in files:
        name = display_path(path)
        warnings: list[str] = []  # e.g. "photo.jpg: Corrupt JPEG data: premature end of data segment"
        try:
            result = classify_file(classifier, path, preprocess, args.top_k, warn=warnings.append)
            saved = save_input(args.save_input, name, result.model_input, taken) if args.save_input else None
        except (EdgeError, OSError) as e:  # unreadable image, or --save_input can't write
            failed += 1
            message = str(e) if isinstance(e, EdgeError) else f"{name}: can't save the model input ({e})"
            print(f"error: {printable(message)}", file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps(error_record(name, type(e).__name__, message)), flush=True)
            continue
        for warning in warnings:  # classified all the same: the picture may be partly garbage
            print(f"warning: {printable(warning)}", file=sys.stderr, flush=True)
        if args.json:
            record = {"path": name, **result.to_dict(), "unknown": result.is_unknown}
            if classifier.own is not None:  # --own: how many own photos were mixed in (0: the model alone)
                record["own_photos"] = len(classifier.own.photos)
            if saved is not None:
                record["model_input"] = str(saved)
            if warnings:
                record["warnings"] = warnings
            print(json.dumps(record), flush=True)
        else:
            print(human_line(name, result, width), flush=True)
    return failed
