"""python -m tools.photo_set DATASET=DIR ...: rebuild data/photos/ from the source photos.

data/photos/labels.csv says which photos the project keeps, what each shows
(a Fashion-MNIST class name or `none`), which source dataset it comes from
(`dataset`), where in that dataset (`source`) and the SHA-256 of its bytes.
For each DATASET=DIR given, this command reads that dataset's photos from DIR,
checks each one's bytes against the recorded SHA-256, shrinks it so its
longest side is at most STORED_SIDE px and writes it where `file` says. A
bare DIR stands for every dataset. Where each dataset comes from and its
licence: data/photos/README.md. Photos that were looked at and left out are
listed in excluded.csv with the reason.

The copy is small enough to live in git (the photo path works at 128 px, so
160 px leaves room for crops); the project never reads the sources at run time.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from edge_runtime import atomic, process
from edge_runtime.errors import DataError, UsageError
from train.photos import DEFAULT_PHOTO_DIR as PHOTO_DIR, dataset_of, read_labels

EXCLUDED = "excluded.csv"  # source,source_sha256,notes, beside labels.csv
STORED_SIDE = 160  # px, longest side of a stored photo
JPEG_QUALITY = 90


def shrink(image, side: int = STORED_SIDE):
    """The image with its longest side at most `side` px (never enlarged). Pure."""
    import cv2
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


ANY_DATASET = None  # the key of a source folder that serves every dataset


def rebuild(sources: dict[str | None, Path], photo_dir: Path = PHOTO_DIR) -> int:
    """Write the labelled photos of each dataset in `sources` (name -> its folder;
    ANY_DATASET -> every dataset) into photo_dir; returns how many."""
    import cv2

    from edge_runtime.imageio import decode
    for source_dir in sources.values():
        if not source_dir.is_dir():
            raise UsageError(f"{source_dir}: not a directory (expected the dataset's photos, as labels.csv's source names them)")
    rows = read_labels(photo_dir)
    written = 0
    for row in rows:
        source_dir = sources.get(dataset_of(row, photo_dir), sources.get(ANY_DATASET))
        if source_dir is None:
            continue
        source = source_dir / row["source"]
        try:
            data = source.read_bytes()
        except OSError as e:
            raise DataError(f"{source}: can't read it ({e.strerror})") from None
        if hashlib.sha256(data).hexdigest() != row["source_sha256"]:
            raise DataError(f"{source}: not the photo labels.csv describes (SHA-256 differs)")
        image = shrink(decode(data, str(source)))
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        out = photo_dir / row["file"]
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(out, jpeg.tobytes())
        written += 1
    return written


def parse_source(text: str) -> tuple[str | None, Path]:
    """'NAME=DIR' -> (NAME, DIR); a bare 'DIR' -> (ANY_DATASET, DIR). Pure."""
    name, sep, folder = text.partition("=")
    return (name, Path(folder)) if sep and name else (ANY_DATASET, Path(text))


@process.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.photo_set", description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", metavar="DATASET=DIR",
                        help="a source dataset's photos, e.g. clothing-dataset-small=../shared/photo-train "
                             "(a bare DIR: every dataset)")
    parser.add_argument("--photo_dir", type=Path, default=PHOTO_DIR, help="where labels.csv is and images/ goes")
    args = parser.parse_args(argv)
    n = rebuild(dict(map(parse_source, args.sources)), args.photo_dir)
    print(f"wrote {n} photos into {args.photo_dir / 'images'}")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
