"""`--own DIR` for classify, webcam and serve: a folder of the user's own photos mixed into
every classification (edge_runtime/imprint.py does the maths and the file).

    own = load_own("my-photos", clf)           # prints 'own photos: 12 in 4 classes from my-photos (...)'
    live = OwnPhotos("my-photos", own, [clf], embed)
    with live.lock:                             # a label button or key: save, then imprint
        path = save_frame("my-photos", "Sneaker", clf.labels, roi)
        live.add(path, "Sneaker")
    live.forget("Sneaker")                      # files to my-photos/.forgotten/<time>/Sneaker/

The camera loop classifies while a request changes the imprint. An Imprint
is never changed once classifiers use it: each change copies it, embeds and
adds (or drops) photos in the copy, computes its prototypes, and hands the
copy to every classifier by assigning `clf.own`, one attribute assignment,
so a frame is classified with the old imprint or the new one, never a mix.
`lock` keeps changes (and the saves that go with them) one at a time.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import ImprintError, UsageError

FORGOTTEN = ".forgotten"  # DIR/.forgotten/<time>/<class folder>/: what `forget` moved; imprinting skips it


def summary(counts: dict[str, int], folder: str, new: int, seconds: float) -> str:
    """'own photos: 12 in 4 classes from DIR (imprinted 3 new in 0.05 s)'. Pure."""
    n = sum(counts.values())
    classes = sum(1 for c in counts.values() if c)
    return (f"own photos: {n} in {classes} class{'' if classes == 1 else 'es'} from {folder} "
            f"(imprinted {new} new in {seconds:.2f} s)")


def saving_folder(own: Path, collect: Path | None) -> Path:
    """Where the label buttons or keys save with --own: DIR itself, created if need be. A --collect
    naming another folder is a UsageError: a photo saved there would not be one of the own photos."""
    if collect is not None and Path(collect).resolve() != Path(own).resolve():
        raise UsageError(f"--collect {collect} and --own {own}: with --own the labelled frames go into {own}; "
                         "drop --collect or give both the same folder")
    try:
        Path(own).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--own {own}: can't create the folder ({e.strerror or e})") from e
    return Path(own)


def load_own(folder: str | os.PathLike, clf, say: Callable[[str], object] | None = None):
    """The imprint of `folder`'s photos for `clf`, set as `clf.own`; says one summary line and
    a 'warning: ' line per photo or folder left out. ImprintError (exit status 11) otherwise."""
    from .imageio import display_path
    from .imprint import IMPRINT_FILE, from_folder
    from .process import printable

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    folder = Path(folder)
    started = time.perf_counter()
    before = _read_quietly(folder / IMPRINT_FILE)
    try:
        own = from_folder(folder, clf)
    except OSError as e:  # an unreadable photo or folder: the user's to fix, in one line
        where = display_path(e.filename) if e.filename else display_path(folder)
        raise ImprintError(f"--own {display_path(folder)}: can't read {where} ({e.strerror or e})") from e
    seconds = time.perf_counter() - started
    known = _embedded_before(before, folder, clf)
    new = sum(1 for p in own.photos if p.sha256 not in known)
    say(summary(own.counts(), printable(display_path(folder)), new, seconds))
    for note in own.skipped:
        say(f"warning: {printable(note)}")
    own.prototypes()  # computed once here, not by the first frame
    clf.own = own
    return own


def _read_quietly(path: Path) -> bytes | None:
    from .imprint import MAX_FILE_BYTES
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None


def _embedded_before(data: bytes | None, folder: Path, clf) -> set[str]:
    """SHA-256s of the photos the imprint file held for this model before loading: not new."""
    from .imprint import IMPRINT_FILE, model_identity, parse
    if data is None or clf.embedding is None:
        return set()
    try:
        sha, photos = parse(data, str(folder / IMPRINT_FILE), list(clf.labels), int(clf.embedding.shape[-1]))
    except ImprintError:
        return set()
    return {p.sha256 for p in photos} if sha == model_identity(clf) else set()


def copy_imprint(imprint):
    """A new Imprint with the same photos (the Photo objects are shared: they are never changed)."""
    from .imprint import Imprint
    return Imprint(list(imprint.labels), imprint.model_sha256, list(imprint.photos), imprint.settings)


class OwnPhotos:
    """An own-photo folder whose imprint changes while classifiers use it (module docstring).

    `embed(images) -> (N, E)` embeds decoded photos; it must be safe to call
    while the classifiers run (serve passes the upload interpreter's, under its
    lock; the webcam loop its own classifier: one thread).
    """

    def __init__(self, folder: str | os.PathLike, imprint, classifiers: Sequence,
                 embed: Callable[[list[np.ndarray]], np.ndarray]):
        self.folder, self.imprint, self.classifiers, self.embed = Path(folder), imprint, list(classifiers), embed
        self.lock = threading.RLock()  # one change at a time; a caller holds it across a save and its add

    def counts(self) -> dict[str, int]:
        return self.imprint.counts()

    @property
    def full(self) -> bool:
        """Whether the imprint holds as many photos as one may (imprint.MAX_PHOTOS)."""
        from .imprint import MAX_PHOTOS
        return len(self.imprint.photos) >= MAX_PHOTOS

    def add(self, path: Path, label: str) -> str | None:
        """Embed the photo just saved at `path` (folder/<class folder>/<name>) and add it.

        The file is read back and decoded as `imprint.from_folder` reads it, so
        the embedding and SHA-256 are the ones a restart would compute. Returns
        a note when imprint.json could not be saved (the photos are then
        imprinted again at the next start), else None. ImageError or OSError
        when the file can't be read back.
        """
        from .imprint import Photo, read_photo
        with self.lock:
            digest, image = read_photo(path)
            embedding = np.asarray(self.embed([image]))[0]
            imprint = copy_imprint(self.imprint)
            imprint.add(Photo(f"{Path(path).parent.name}/{Path(path).name}", label, digest, embedding))
            return self._publish(imprint)

    def forget(self, label: str, now: datetime | None = None) -> tuple[int, str | None, str | None]:
        """Drop every own photo of `label` from the imprint and move its class folder to
        folder/.forgotten/<time>/: (photos dropped, where the files went relative to the folder or
        None when there were none, a note when imprint.json could not be saved). OSError when the
        folder can't be moved; the imprint is then unchanged."""
        from .collect import class_folder
        with self.lock:
            source = self.folder / class_folder(label)
            moved_to = None
            if source.is_dir() or source.is_symlink():
                stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S-%f")
                target = self.folder / FORGOTTEN / stamp / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, target)  # one step: no photo is half gone
                moved_to = target.relative_to(self.folder).as_posix()
            imprint = copy_imprint(self.imprint)
            gone = imprint.forget(label)
            note = self._publish(imprint)
            return len(gone), moved_to, note

    def _publish(self, imprint) -> str | None:
        """Save imprint.json, then hand `imprint` to every classifier; a note if it wasn't saved."""
        from .imprint import IMPRINT_FILE, save
        imprint.prototypes()  # computed here, not by the camera thread in the middle of a frame
        note = None
        try:
            save(imprint, self.folder)
        except OSError as e:
            note = f"{IMPRINT_FILE} not saved ({e.strerror or e}); the photos are imprinted again at the next start"
        self.imprint = imprint
        for clf in self.classifiers:
            clf.own = imprint  # one assignment: a frame uses the old imprint or this one
        return note
