"""python -m tools.segmentation_sheet PHOTOS... --out DIR: contact sheets to check the segmentation by eye.

Each cell shows a photo (at the working size, the garment mask's outline in
green), the 28x28 input the model saw (enlarged) and a number; the numbers
index DIR/index.csv (number, file). Looking at these is the only way to tell a
whole garment from a fragment: a mask can be large and still be a part
(stripes, a sleeve, one shoe of a pair), so an area check misses it.

Count by eye what each cell shows -- whole garment / part / wrong thing --
and write the counts beside the figures they explain (docs/photos.md).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from edge_runtime import atomic, process

CELL = 128  # px: the photo's cell side (the segmentation's working size)
COLUMNS = 6
ROWS = 5


def cell(bgr: np.ndarray, model_input: np.ndarray, number: int) -> np.ndarray:
    """One cell: the working-size photo with the mask outline, beside the model input. Pure. (CELL+16, 2*CELL, 3)."""
    import cv2

    from edge_runtime import photo
    small = photo.shrink(photo.to_bgr(bgr))
    mask, _ = photo.garment_mask(small)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    drawn = small.copy()
    cv2.drawContours(drawn, contours, -1, (0, 255, 0), 1)
    out = np.full((CELL + 16, 2 * CELL, 3), 40, np.uint8)
    h, w = drawn.shape[:2]
    out[:h, :w] = drawn
    big = cv2.resize(model_input, (CELL, CELL), interpolation=cv2.INTER_NEAREST)
    out[:CELL, CELL:] = big[:, :, None]
    cv2.putText(out, str(number), (2, CELL + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


def sheets(paths: list[Path], out: Path) -> int:
    """Write out/sheet-NN.png and out/index.csv for the photos; returns the number of sheets."""
    import cv2

    from edge_runtime.imageio import read_image
    from edge_runtime.photo import photo_to_input
    per_sheet = COLUMNS * ROWS
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    for i, path in enumerate(paths):
        image = read_image(path)
        cells.append(cell(image, photo_to_input(image), i))
    count = 0
    for start in range(0, len(cells), per_sheet):
        chunk = cells[start:start + per_sheet]
        chunk += [np.zeros_like(cells[0])] * (per_sheet - len(chunk))
        rows = [np.hstack(chunk[r * COLUMNS:(r + 1) * COLUMNS]) for r in range(ROWS)]
        with atomic.atomic_path(out / f"sheet-{count:02d}.png", keep_suffix=True) as tmp:
            cv2.imwrite(str(tmp), np.vstack(rows))
        count += 1
    with atomic.atomic_path(out / "index.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "file"])
        writer.writerows(enumerate(map(str, paths)))
    return count


@process.command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.segmentation_sheet", description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path, help="photo files, or folders searched recursively")
    parser.add_argument("--out", type=Path, required=True, help="where the sheets and index.csv go")
    args = parser.parse_args(argv)
    from edge_runtime.imageio import is_image_name
    paths = []
    for p in args.photos:
        paths += sorted(q for q in p.rglob("*") if is_image_name(q)) if p.is_dir() else [p]
    if not paths:
        print("error: no photos found", file=sys.stderr)
        return 2
    n = sheets(paths, args.out)
    print(f"wrote {n} sheets of {len(paths)} photos into {args.out}")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
