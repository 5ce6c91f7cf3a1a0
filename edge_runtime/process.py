"""Process plumbing shared by every command's `main`: Ctrl-C, exit statuses,
and turning a named error into one `error:` line.

    @process.command
    def main(argv=None) -> int:
        args = parser.parse_args(argv)
        process.show_tracebacks(args.debug)
        ...                      # raise any EdgeError; it becomes `error: <message>`

    if __name__ == "__main__":
        process.exit_with(main())
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from typing import Callable, NoReturn

from .errors import EdgeError

INTERRUPTED = 130  # a command's status for Ctrl-C: 128 + SIGINT, what shells report

_tracebacks = False  # set per run by show_tracebacks(); --debug


def printable(text: str) -> str:
    """`text` fit for one terminal line. Pure.

    A newline or an escape code in a file name would break the one-line-per-file
    output or drive the terminal, so such characters are written escaped, as
    repr() writes them. For people only: --json records keep the name as it is
    (JSON escapes it itself), so a program gets back the exact path.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def report(error: EdgeError) -> int:
    """Print a named error as one `error:` line on stderr; returns its exit status."""
    print(f"error: {printable(str(error))}", file=sys.stderr)
    return error.exit_code


def show_tracebacks(enabled: bool) -> None:
    """--debug: let named errors out of `command` with their traceback."""
    global _tracebacks
    _tracebacks = bool(enabled)


def in_import_lock_callback(frame) -> bool:
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
    still see KeyboardInterrupt and can clean up.
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
            if in_import_lock_callback(frame):
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


def command(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command's main(): `interruptible`, and a named error (EdgeError)
    raised anywhere in it ends the command with one `error:` line and its exit
    status, unless `show_tracebacks(True)` was called during this run."""
    @interruptible
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        show_tracebacks(False)
        try:
            return int(main(*args, **kwargs) or 0)
        except EdgeError as e:
            if _tracebacks:
                raise
            return report(e)
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


class StopFlag:
    """Set by SIGTERM/SIGINT (systemd stop, Ctrl-C): the loop ends after the current frame."""

    def __init__(self, on_stop: Callable[[], None]):
        self.event, self.on_stop, self.signal_name = threading.Event(), on_stop, None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        self.on_stop()

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
