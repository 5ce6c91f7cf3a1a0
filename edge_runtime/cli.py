"""`python -m edge_runtime <command>` and the `edge-classify` console script.

A thin shell: each command lives in its own module exposing
`configure(parser)` (add its arguments) and `run(args) -> int` (exit status).
This file parses argv, maps named errors to one-line messages and exit
codes, and keeps tracebacks for `--debug`.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, NoReturn

from .errors import EdgeError

# command -> module; modules are imported only when their command runs or
# its arguments are set up, so `doctor` works even when OpenCV is broken.
COMMANDS = {
    "classify": ("edge_runtime.classify", "classify image files, directories and globs"),
    "webcam": ("edge_runtime.webcam", "classify frames from a camera, video file or stream"),
    "doctor": ("edge_runtime.doctor", "check this device: Python, numpy, interpreter, model, cameras, display"),
    "bench": ("edge_runtime.bench", "measure latency and memory of a model on this device"),
    "info": ("edge_runtime.info", "print a model's metadata"),
}

MODEL_ENV_VAR = "EDGE_MODEL"
INTERRUPTED = 130  # main()'s status for Ctrl-C: 128 + SIGINT, what shells report
MODEL_FILENAME = "fashion_mnist_int8.tflite"


def default_model_path() -> Path:
    """Where the deployed model is, when --model is not given.

    EDGE_MODEL, else models/<name> in the current directory (the project
    checkout or an unpacked Pi bundle), else models/ beside this package.
    """
    if os.environ.get(MODEL_ENV_VAR):
        return Path(os.environ[MODEL_ENV_VAR])
    here = Path.cwd() / "models" / MODEL_FILENAME
    if here.is_file():
        return here
    beside = Path(__file__).resolve().parent.parent / "models" / MODEL_FILENAME
    return beside if beside.is_file() else here


def printable(text: str) -> str:
    """`text` fit for one terminal line. Pure.

    A newline or an escape code in a file name would break the one-line-per-file
    output or drive the terminal, so such characters are written escaped, as
    repr() writes them. For people only: --json records keep the name as it is
    (JSON escapes it itself), so a program gets back the exact path.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (and at most `maximum`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


positive_int = count(1)

# More than the cores of any device this runs on. The interpreter does not
# check: 0 fails as "not a loadable model" and 100000 crashes the process.
MAX_THREADS = 256
thread_count = count(1, MAX_THREADS)  # interpreter threads


def probability(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model and --threads, shared by every command that runs a model."""
    parser.add_argument("--model", type=Path, default=None,
                        help=f"a .tflite model with metadata; None means ${MODEL_ENV_VAR}, else models/{MODEL_FILENAME}")
    parser.add_argument("--threads", type=thread_count, default=1,
                        help=f"interpreter threads (1 to {MAX_THREADS})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge_runtime", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--verbose", "-v", action="store_true", help="say which interpreter and model are used")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module_name)
        importlib.import_module(module_name).configure(p)
    return parser


def _in_import_lock_callback(frame) -> bool:
    """Is Python running importlib's weakref callback that drops a module lock?
    Imports run it constantly (TensorFlow's thousands of modules), and it runs
    in a context where exceptions can't propagate."""
    while frame is not None:
        if frame.f_code.co_name == "cb" and frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def interruptible(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's main(): Ctrl-C at any point ends it with status 130, no traceback.

    Catching KeyboardInterrupt is not enough on its own. While numpy, OpenCV
    or TensorFlow import (the first seconds of every run) the interrupt can
    come out as another exception: an ImportError from a C extension, a
    RuntimeError from a class being built. So a handler notes that Ctrl-C was
    pressed, and an exception after that counts as the interrupt. Commands
    still see KeyboardInterrupt and can clean up as before.
    """
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        pressed = finished = False

        def ask_again():
            if not finished:
                os.kill(os.getpid(), signal.SIGINT)

        def on_sigint(signum, frame):
            nonlocal pressed
            pressed = True
            if _in_import_lock_callback(frame):
                # An exception raised here is printed as "Exception ignored" and
                # dropped, and the Ctrl-C with it: ask again in a moment instead.
                threading.Timer(0.01, ask_again).start()
                return
            raise KeyboardInterrupt

        previous = None
        try:
            # SIG_IGN (started by nohup or as a background job) stays ignored, as Python leaves it.
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            return INTERRUPTED
        except Exception:
            if pressed:  # the interrupt, wrapped by the code it hit (ImportError, RuntimeError, ...)
                return INTERRUPTED
            raise
        finally:
            finished = True
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    return wrapper


def exit_with(status: int) -> NoReturn:
    """End the process with a command's status, as `sys.exit` does, except
    that an interrupted command ends killed by SIGINT, as Python ends one
    that doesn't catch Ctrl-C, only without the traceback.

    A shell shows both as 130, but a shell script's loop stops only for the
    signal: bash takes a child's exit(130) to mean it handled Ctrl-C itself,
    and runs the next command. It also keeps the status the same every time:
    CPython ends with SIGINT anyway, caught or not, once a KeyboardInterrupt
    has passed through code that a C extension ran with PyRun_String (1 in 60
    Ctrl-Cs during TensorFlow's import, exit(130) then became SIGINT).
    """
    if status != INTERRUPTED:
        sys.exit(status)
    # Python shuts down as usual (atexit, buffers), then kills itself with SIGINT.
    sys.excepthook = _quiet_on_interrupt
    raise KeyboardInterrupt


def _quiet_on_interrupt(kind, value, traceback) -> None:
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)


@interruptible
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `edge-classify photo.jpg` is shorthand for `classify photo.jpg`.
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["classify", *argv]
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except EdgeError as e:
        if args.debug:
            raise
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return e.exit_code


def console_script() -> NoReturn:
    """The `edge-classify` entry point."""
    exit_with(main())


if __name__ == "__main__":
    exit_with(main())
