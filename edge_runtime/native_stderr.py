"""What native libraries write straight to file descriptor 2.

LiteRT's C++ core and the libjpeg inside OpenCV print to fd 2 themselves, so
sys.stderr can't see or filter it: the interpreter announces its XNNPACK
delegate on every run, and libjpeg says "Corrupt JPEG data: ..." without
naming the file. `captured()` points fd 2 at a temporary file for a moment
and hands back the lines, so the caller can attach them to the file they
belong to; `dropping(is_noise)` passes on all but the noise.

File descriptors belong to the process. Two captures at once would each
save and restore fd 2 and could leave it pointing at the other's deleted
temporary file, so captures take turns (`LOCK`, reentrant: one may nest in
another in the same thread). A line another thread writes to fd 2 meanwhile
is still captured with the caller's: a program that logs from other threads
while it captures (serve) writes its log through its own descriptor, a copy
of fd 2 taken at start.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import Callable, Iterator

LOCK = threading.RLock()  # held for the whole of each capture


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """Collect fd-2 output meanwhile; the yielded list holds its lines once the block ends.

    The caller decides what to pass on: nothing reaches the real stderr by itself.
    Where there is no usable fd 2, nothing is captured and the list stays empty.
    """
    lines: list[str] = []
    with LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (AttributeError, OSError, ValueError):  # no stderr at all
            yield lines
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                sys.stderr.flush()  # Python-level writes made meanwhile belong to the capture too
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                lines.extend(sink.read().decode("utf-8", "replace").splitlines())


@contextlib.contextmanager
def dropping(is_noise: Callable[[str], bool]) -> Iterator[None]:
    """Pass on what native code writes to fd 2 meanwhile, except the lines `is_noise` picks.

    On failure too: a library's own error lines must still reach the user.
    """
    lines: list[str] = []
    try:
        with captured() as lines:
            yield
    finally:
        write([line for line in lines if not is_noise(line)])


def write(lines: list[str]) -> None:
    """Pass captured lines on to the real stderr."""
    if lines:
        sys.stderr.write("".join(line + "\n" for line in lines))
        sys.stderr.flush()
