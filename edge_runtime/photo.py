"""Turn a real photo or camera frame into a Fashion-MNIST-style model input.

Fashion-MNIST images were made from product photos on white backgrounds
(Xiao et al. 2017, section 2): trim the borders whose colour is close to the
corner pixels, resize the longest edge to 28, sharpen, centre on a 28x28
canvas, negate the intensities, convert to 8-bit grayscale. In the result the
background is exactly 0, the garment is bright, its longest side spans the
whole canvas and its brightest pixel is 255.

A phone photo is not a product shot: the garment lies on a floor, a bed or a
rug, is lit unevenly and often fills most of the frame. `photo_to_input`
follows the same recipe but finds the garment more robustly:

1. composite transparency onto white and shrink to a working size;
2. estimate the background colour from the image border (median, in Lab);
3. garment = pixels far from that colour (Otsu threshold on the colour
   distance, floored by how much the border itself varies), cleaned with
   morphology, keeping the largest blob(s) and filling their holes;
4. crop to the garment, grayscale, invert when the background is light,
   set the background to exactly 0, stretch the garment's contrast;
5. fit the longest side to the output, centre it, resize with INTER_AREA,
   sharpen lightly and scale so the brightest pixel is 255.

`naive_photo_to_input` is the baseline most tutorials use (grayscale, squash
to 28x28, invert), kept for comparison.

Everything here is a pure function of its arguments: uint8 images in, uint8
images out, no state. Shapes are (height, width[, channels]).
"""

from __future__ import annotations

import cv2
import numpy as np

from .contract import IMAGE_HEIGHT, IMAGE_WIDTH

DEFAULT_SIZE = (IMAGE_HEIGHT, IMAGE_WIDTH)
WORK_SIDE = 192  # px: longest side while segmenting; enough for a 28 px output, fast on a Pi
BORDER_FRACTION = 0.04  # of the shorter side: the strip that samples the background
CORNER_FRACTION = 0.08  # of the shorter side: the corner squares that sample it too
MIN_GARMENT_FRACTION = 0.005  # of the image area: smaller "garments" are noise
MIN_DISTANCE = 12.0  # Lab units (8-bit scale): closer to the background than this is background
MODE = "mix"
SPREAD_K = 2.0
KERNEL_FRACTION = 0.04
BLUR_FRACTION = 0.01
GARMENT_FLOOR = 48
KEEP = 0.3
INVERT = "background"
STRETCH = "pct"
MIN_SPAN = 64.0
SHARPEN = 0.5
MARGIN = 0.0  # output intensity of the faintest garment pixel (0 is background)


# -- 1. input normalisation ---------------------------------------------------

def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any uint8 gray (H, W), (H, W, 1), BGR or BGRA image -> BGR (H, W, 3).

    Transparent pixels are composited onto white, because product cut-outs
    with an alpha channel are meant to be seen on white, like the catalogue
    photos Fashion-MNIST came from.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected a gray, BGR or BGRA image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.shape[2] == 3:
        return image
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0  # (H, W, 1), 0 transparent .. 1 opaque
    white = np.float32(255.0)
    return np.rint(image[:, :, :3] * alpha + white * (1.0 - alpha)).astype(np.uint8)


def shrink(image: np.ndarray, longest: int = WORK_SIDE) -> np.ndarray:
    """Downscale (INTER_AREA) so the longest side is at most `longest` px; never upscale.

    Working small makes segmentation fast on a Pi and averages away fabric
    and floor texture that would otherwise look like edges.
    """
    h, w = image.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# -- 2. background ------------------------------------------------------------

def border_pixels(image: np.ndarray, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """Pixels of a strip along all four edges, as (N, channels).

    Photographers centre the subject, so the frame's edge is mostly
    background even when the garment touches it somewhere.
    """
    h, w = image.shape[:2]
    t = max(1, round(min(h, w) * fraction))  # strip width in px
    channels = image.shape[2] if image.ndim == 3 else 1
    strips = [image[:t], image[-t:], image[:, :t], image[:, -t:]]
    return np.concatenate([s.reshape(-1, channels) for s in strips])


def corner_patches(image: np.ndarray, fraction: float = CORNER_FRACTION) -> list[np.ndarray]:
    """The four corner squares, each as (N, channels)."""
    h, w = image.shape[:2]
    t = max(1, round(min(h, w) * fraction))  # square side in px
    channels = image.shape[2] if image.ndim == 3 else 1
    return [c.reshape(-1, channels) for c in (image[:t, :t], image[:t, -t:], image[-t:, :t], image[-t:, -t:])]


def background_colors(lab: np.ndarray) -> np.ndarray:
    """Background colours in Lab, float32 (5, 3): the median of the whole border, then of each corner.

    The border median ignores the part of the border a garment covers, as
    long as that is less than half. The corners (the dataset's recipe trims
    "borders close to the corner pixels") catch backgrounds of more than one
    colour: a wall above a floor, stripes on a bed, light falling from one side.
    """
    patches = [border_pixels(lab)] + corner_patches(lab)
    return np.stack([np.median(p.astype(np.float32), axis=0) for p in patches])


def color_distance(lab: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Per-pixel distance to the nearest of `colors` (K, 3) in Lab (OpenCV 8-bit scale), float32 (H, W).

    Lightness counts half: shadows and uneven light change lightness across
    a floor much more than they change its colour.
    """
    weights = np.array([0.5, 1.0, 1.0], np.float32)
    diff = (lab.astype(np.float32)[:, :, None, :] - colors[None, None]) * weights  # (H, W, K, 3)
    return np.sqrt((diff ** 2).sum(axis=3)).min(axis=2)


# -- 3. garment mask ----------------------------------------------------------

def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of non-negative float values (the split that best separates two groups)."""
    top = float(values.max())
    if top <= 0:
        return 0.0
    scaled = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return t * top / 255.0


def foreground(distance: np.ndarray) -> np.ndarray:
    """Pixels that differ from the background: bool (H, W).

    The threshold is Otsu's split of the distances, but never below what the
    border itself shows (its 90th percentile, i.e. how much a textured rug or
    wood floor varies) nor below MIN_DISTANCE, so noise on a plain background
    is not a garment.
    """
    border_spread = float(np.percentile(border_pixels(distance), 90))
    if MODE == "otsu":
        threshold = max(otsu_threshold(distance), border_spread, MIN_DISTANCE)
    elif MODE == "spread":
        threshold = max(SPREAD_K * border_spread, MIN_DISTANCE)
    else:
        threshold = max(min(otsu_threshold(distance), SPREAD_K * border_spread), border_spread, MIN_DISTANCE)
    return distance > threshold


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Closing bridges gaps (a patterned dress, a print), opening then removes specks. bool (H, W)."""
    side = max(3, round(min(mask.shape) * KERNEL_FRACTION) | 1)  # odd kernel
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    return m.astype(bool)


def main_blobs(mask: np.ndarray, keep_fraction: float | None = None) -> np.ndarray:
    """The largest connected component plus any at least `keep_fraction` of its size. bool (H, W).

    One garment is one blob; a pair of shoes or trouser legs seen apart may be
    two similar blobs; specks, shadows and folds at the edge are smaller.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    keep_fraction = KEEP if keep_fraction is None else keep_fraction
    areas = stats[1:, cv2.CC_STAT_AREA]  # component 0 is the background
    keep = 1 + np.flatnonzero(areas >= keep_fraction * areas.max())
    return np.isin(labels, keep)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill regions not connected to the image border. bool (H, W).

    A white logo on a white-background shirt looks like background; it is
    still part of the garment.
    """
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)  # a frame so the flood reaches all outside background
    padded[1:-1, 1:-1] = mask
    flood_mask = np.zeros((h + 4, w + 4), np.uint8)  # floodFill needs 2 px more than the image
    cv2.floodFill(padded, flood_mask, (0, 0), 1)
    outside = padded[1:-1, 1:-1].astype(bool) & ~mask
    return mask | ~outside


def garment_mask(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool (H, W), background Lab colours float32 (K, 3)) for a BGR image.

    An empty mask means nothing stands out from the background (a blank
    wall, a one-colour image).
    """
    sigma = BLUR_FRACTION * max(bgr.shape[:2])  # px; averages fabric patterns and floor grain
    blurred = cv2.GaussianBlur(bgr, (0, 0), sigma) if sigma >= 0.5 else bgr
    lab = cv2.cvtColor(blurred, cv2.COLOR_BGR2LAB)
    background = background_colors(lab)
    mask = foreground(color_distance(lab, background))
    if min(mask.shape) >= 8:  # morphology on a few pixels would erase everything
        mask = clean_mask(mask)
    if mask.sum() < MIN_GARMENT_FRACTION * mask.size:
        return np.zeros_like(mask), background
    return fill_holes(main_blobs(mask)), background


# -- 4. intensities -------------------------------------------------------------

def bounding_box(mask: np.ndarray, margin: float = 0.0) -> tuple[slice, slice]:
    """(rows, cols) slices of the mask's bounding box, grown by `margin` x its longer side."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    pad = round(margin * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
    h, w = mask.shape
    return (slice(max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad)),
            slice(max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad)))


def is_light(background_lab: np.ndarray) -> bool:
    """Whether the background (its first, overall colour) is lighter than mid-gray (Lab L, 0..255)."""
    return float(background_lab[0, 0]) >= 128.0


def garment_intensity(gray: np.ndarray, light_background: bool) -> np.ndarray:
    """Grayscale -> 'garment is bright' intensities, uint8 (H, W).

    Fashion-MNIST negated product shots on white, so dark cloth is bright.
    On a light background we do the same; on a dark background the garment
    is usually the lighter thing, so we keep it as it is.
    """
    if INVERT == "always":
        return 255 - gray
    return 255 - gray if light_background else gray


def stretch(values: np.ndarray, mask: np.ndarray, floor: int | None = None) -> np.ndarray:
    """Map garment intensities to floor..255 and the background to exactly 0. uint8 (H, W).

    The garment's 2nd..98th percentile becomes floor..255: every Fashion-MNIST
    image reaches 255, and the floor keeps faint cloth (a white shirt after
    inversion) distinguishable from the background. A nearly uniform garment
    is not amplified beyond a range of 64 levels, so sensor noise stays noise.
    """
    floor = GARMENT_FLOOR if floor is None else floor
    if not mask.any():
        return np.zeros_like(values)
    if STRETCH == "none":
        return np.where(mask, np.maximum(values, floor), 0).astype(np.uint8)
    inside = values[mask].astype(np.float32)
    lo, hi = np.percentile(inside, [2, 98])
    span = max(hi - lo, MIN_SPAN)
    lo = hi - span
    out = floor + (values.astype(np.float32) - lo) * ((255.0 - floor) / span)
    out = np.clip(out, floor, 255.0)
    return np.where(mask, np.rint(out), 0).astype(np.uint8)


# -- 5. placing on the canvas -----------------------------------------------------

def fit_to_canvas(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize keeping the aspect ratio so the longest side fills `size` (h, w); centre on black.

    INTER_AREA averages the pixels each output pixel covers, which is what
    a smaller camera sensor would see; other filters alias thin straps away.
    """
    out_h, out_w = size
    h, w = image.shape
    scale = min(out_h / h, out_w / w)
    new_h, new_w = max(1, min(out_h, round(h * scale))), max(1, min(out_w, round(w * scale)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((out_h, out_w), np.uint8)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def sharpen(image: np.ndarray, amount: float | None = None) -> np.ndarray:
    """Unsharp mask (Gaussian sigma 1 px), as in the dataset's recipe; 0 stays 0. uint8 (H, W).

    Downscaling blurs edges and seams; the dataset's images were sharpened
    after their resize, so ours are too.
    """
    amount = SHARPEN if amount is None else amount
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)
    out = image + amount * (image - blurred)
    out = np.where(image > 0, out, 0)  # sharpening must not put halos on the background
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def full_range(image: np.ndarray) -> np.ndarray:
    """Scale so the brightest pixel is 255, like every Fashion-MNIST image. uint8 (H, W)."""
    top = int(image.max())
    if top == 0 or top == 255:
        return image
    return np.clip(np.rint(image.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)


# -- the pipeline -------------------------------------------------------------------

def photo_to_input(image: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """A photo or camera frame (uint8 gray, BGR or BGRA, any size) -> model input uint8 `size` (h, w).

    Garment bright on an exactly black background, longest side filling the
    canvas, centred. An image where nothing stands out from the background
    (e.g. one colour) gives an all-black input, which a model should call
    unknown rather than something invented.
    """
    bgr = shrink(to_bgr(image))  # (h, w, 3), longest side <= WORK_SIDE
    mask, background = garment_mask(bgr)  # bool (h, w), Lab (3,)
    if not mask.any():
        return np.zeros(size, np.uint8)
    rows, cols = bounding_box(mask, MARGIN)
    gray = cv2.cvtColor(bgr[rows, cols], cv2.COLOR_BGR2GRAY)  # (crop h, crop w)
    garment = stretch(garment_intensity(gray, is_light(background)), mask[rows, cols])
    return full_range(sharpen(fit_to_canvas(garment, size)))


def naive_photo_to_input(image: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Baseline: grayscale, squash to `size` (h, w) with INTER_AREA, invert. uint8 `size`.

    What most tutorials do; it ignores the background and the aspect ratio,
    which is why it does poorly on real photos.
    """
    gray = cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)
    return 255 - cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)
