"""Atomic file writes: write a temporary file beside the target, then rename.

os.replace is atomic on POSIX within one filesystem, so a reader (or a later
`make` step) sees either the old complete file or the new complete file,
never half of one, even if the writer is killed mid-way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def partial_path(path: Path, keep_suffix: bool = False) -> Path:
    """The temporary name beside `path`: it starts with '.' and contains
    '.partial-', so nothing looking for finished artifacts picks it up.
    keep_suffix keeps the extension for writers that insist on one (Keras
    wants '.keras', OpenCV picks a video container by it)."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}{path.suffix if keep_suffix else ''}")


def commit(tmp: Path, path: Path) -> None:
    """Make the bytes at `tmp` durable, then let them replace `path` in one step."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False):
    """Yield a temporary path to write; on success it replaces `path`, on an error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path, keep_suffix)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def replace_symlink(link: str | os.PathLike, target: str) -> None:
    """Point `link` at `target` atomically (a new symlink renamed over the old)."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.partial-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
