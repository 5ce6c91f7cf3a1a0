"""`serve`'s log: the standard `logging` module, one line per record, through its own descriptor.

    LOG.info("saved Bag/20261206-101502-123456.jpg (frame 6)")
    LOG.warning("127.0.0.1: more than 5 labels a second; answering 429")

Why its own descriptor: decoding an upload captures what libjpeg writes to
file descriptor 2 (edge_runtime.native_stderr) for that upload's warnings,
and fd 2 is the process's. A log line written to fd 2 meanwhile, from
another request's thread, would land in that upload's response and be lost
to the log. `to_stderr()` writes to a copy of fd 2 taken at start, which the
capture never touches: the same file, pipe or journal.

A StreamHandler holds its lock for a whole record, so lines from different
threads never run together; a message's own newlines are written escaped.
Under systemd (JOURNAL_STREAM names our stderr) each line starts with its
syslog priority, <3> error, <4> warning, <6> info, so journalctl shows the
level (`journalctl -p warning`).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from ..process import printable

LOG = logging.getLogger("edge_runtime.serve")
_PRIORITY = {logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class OneLine(logging.Formatter):
    """'error: ...', 'warning: ...' or the message itself, always one line."""

    def __init__(self, journal: bool = False):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"
        if record.levelno >= logging.ERROR:
            text = "error: " + text
        elif record.levelno >= logging.WARNING:
            text = "warning: " + text
        line = printable(text)
        if self.journal:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


def journal_is_stderr() -> bool:
    """Whether fd 2 is the systemd journal's stream (JOURNAL_STREAM is 'device:inode' of it)."""
    try:
        device, inode = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        info = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def to_stderr(logger: logging.Logger = LOG) -> logging.Handler:
    """Log to a copy of fd 2, one line per record; returns the handler (remove_handler ends it)."""
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLine(journal=journal_is_stderr()))
    return add_handler(handler, logger)


def to_callable(write: Callable[[str], object], logger: logging.Logger = LOG) -> logging.Handler:
    """Log each record as one line to `write` (tests, a program embedding serve)."""
    class CallHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                write(self.format(record))
            except Exception:
                self.handleError(record)
    handler = CallHandler()
    handler.setFormatter(OneLine())
    return add_handler(handler, logger)


def add_handler(handler: logging.Handler, logger: logging.Logger = LOG) -> logging.Handler:
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger's handlers (or Python's last resort) would write to fd 2
    return handler


def remove_handler(handler: logging.Handler, logger: logging.Logger = LOG) -> None:
    logger.removeHandler(handler)
    if isinstance(handler, logging.StreamHandler) and handler.stream is not None:
        try:
            handler.stream.close()
        except OSError:
            pass
    if not logger.handlers:
        logger.propagate = True


def log_line(line: str, logger: logging.Logger = LOG) -> None:
    """A line from code that logs plain strings (capture.FrameStream): 'warning: ...' as a warning."""
    for prefix, level in (("error: ", logging.ERROR), ("warning: ", logging.WARNING)):
        if line.startswith(prefix):
            logger.log(level, line[len(prefix):])
            return
    logger.info(line)
