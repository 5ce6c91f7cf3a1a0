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

1. composite transparency onto white, shrink to at most WORK_SIDE (128) px;
2. estimate the background colours: medians of the border strip and of the
   four corners, in Lab (a wall above a floor is two colours);
3. garment = pixels far from the nearest background colour (Otsu's
   threshold on the colour distance, bounded by how much the border itself
   varies), closed and opened, largest blob(s) kept, holes filled;
4. crop to the garment, grayscale, invert unless the background is near-black,
   background exactly 0, scale so the garment's brightest pixels are 255;
   if inverted, apply a gamma of 2 (mid-tones darker, 0 and 255 unchanged);
5. fit the longest side to the output (keeping the aspect ratio), centre it,
   resize with INTER_AREA, scale the maximum to 255.

Why the gamma: after inversion, evenly lit cloth stretched to fill the range
comes out brighter than Fashion-MNIST's garments; a gamma of 2 brings its
mid-tones near the training set's. Bright-on-dark photos (and dataset
images) stay linear, so they still pass through nearly unchanged.

Why no sharpening, though the dataset's recipe sharpens after resizing:
INTER_AREA of a sharp photo already gives crisp edges, and sharpening adds
ringing the dataset doesn't have; on real photos it lowered accuracy.

What these choices measured, and what was tried and not kept:
docs/design-log.md ("Photo preprocessing and real photos").

`photo_steps` is photo_to_input one named step at a time (what
tools/frame_profile.py times; docs/photos.md has the figures); photo_to_input
runs it to the end.

`naive_photo_to_input` is the baseline most tutorials use (grayscale, squash
to 28x28, invert), kept for comparison.

Everything here is a pure function of its arguments (and the constants below):
uint8 images in, uint8 images out, no state. Shapes are (height, width[, channels]).
"""

from __future__ import annotations

from typing import Any, Generator

import cv2
import numpy as np

from .contract import IMAGE_HEIGHT, IMAGE_WIDTH

DEFAULT_SIZE = (IMAGE_HEIGHT, IMAGE_WIDTH)

# A pipeline run one step at a time: yields (step name, that step's result), returns the final result.
Steps = Generator[tuple[str, Any], None, Any]

# Tuning constants, read at call time. Fractions are of the image's shorter
# side unless noted; distances are Lab on OpenCV's 8-bit scale (L, a, b in
# 0..255, so a lightness step of 1 is 100/255 of a CIE L* unit).
WORK_SIDE = 128  # px: longest side while segmenting; 4.6x the output's 28 px. Larger costs time and gains no accuracy
# (docs/design-log.md); 64-112 px take 16-48% less time, but none is measurably more accurate on any photo set
# and 64 and 96 are measurably less accurate on one (docs/photos.md, "The frame path")
BORDER_FRACTION = 0.04  # width of the edge strip that samples the background
CORNER_FRACTION = 0.08  # side of the corner squares that sample it too
LIGHTNESS_WEIGHT = 0.5  # lightness differences count half in the colour distance
MIN_DISTANCE = 12.0  # closer to the background than this is background, whatever else
SPREAD_PERCENTILE = 75.0  # of the border's colour distances: the background's own variation
SPREAD_RANGE = (1.3, 2.6)  # Otsu's threshold is kept between these multiples of that variation
KERNEL_FRACTION = 0.04  # morphology kernel diameter
MIN_GARMENT_FRACTION = 0.005  # of the image area: a smaller "garment" is noise
KEEP_FRACTION = 0.3  # blobs at least this fraction of the largest one are kept too
DARK_BACKGROUND_L = 64  # below this (L* 25 of 100) a background is near-black: no inversion
GARMENT_FLOOR = 48  # output intensity of the faintest garment pixel (background is 0)
INVERTED_GAMMA = 2.0  # exponent on inverted garment intensities (0..1 scale, 1 = linear); why: module docstring


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


def shrink(image: np.ndarray) -> np.ndarray:
    """Downscale (INTER_AREA) so the longest side is at most WORK_SIDE px; never upscale.

    Working small makes segmentation fast on a Pi and averages away sensor
    noise and fine fabric or floor texture that would otherwise look like edges.
    """
    h, w = image.shape[:2]
    scale = WORK_SIDE / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    k = h // size[1]
    if k % 2 == 1 and k > 1 and (h, w) == (k * size[1], k * size[0]):
        # An odd whole factor (a 640x480 frame to 128x96 is 5): each output pixel is the
        # rounded mean of a k x k block, which a box filter read every k px (INTER_NEAREST
        # picks pixel k*x) gives bit for bit in 0.6x the time (OpenCV vectorises
        # INTER_AREA for a factor of 2 only). Not for even factors: there the two round
        # some block sums differently (tests/test_frame_path.py checks every sum).
        return cv2.resize(cv2.blur(image, (k, k), anchor=(0, 0)), size, interpolation=cv2.INTER_NEAREST)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# -- 2. background ------------------------------------------------------------

def border_pixels(image: np.ndarray) -> np.ndarray:
    """Pixels of a strip along all four edges, as (N, channels).

    Photographers centre the subject, so the frame's edge is mostly
    background even when the garment touches it somewhere.
    """
    h, w = image.shape[:2]
    t = max(1, round(min(h, w) * BORDER_FRACTION))  # strip width, px
    channels = image.shape[2] if image.ndim == 3 else 1
    strips = [image[:t], image[-t:], image[:, :t], image[:, -t:]]
    return np.concatenate([s.reshape(-1, channels) for s in strips])


def corner_patches(image: np.ndarray) -> np.ndarray:
    """The four corner squares, as (4, N, channels)."""
    h, w = image.shape[:2]
    t = max(1, round(min(h, w) * CORNER_FRACTION))  # square side, px
    channels = image.shape[2] if image.ndim == 3 else 1
    return np.stack([image[:t, :t], image[:t, -t:], image[-t:, :t], image[-t:, -t:]]).reshape(4, -1, channels)


def medians(samples: np.ndarray) -> np.ndarray:
    """np.median along the last axis of uint8 `samples`, float32: the mean of the two
    middle values when their number is even (whole or half numbers, exact). A partial
    sort in place, so `samples` must be a copy the caller no longer needs."""
    n = samples.shape[-1]
    k = n // 2
    if n % 2:
        samples.partition(k)
        return samples[..., k].astype(np.float32)
    samples.partition((k - 1, k))
    return (samples[..., k - 1].astype(np.float32) + samples[..., k]) / 2


def background_colors(lab: np.ndarray) -> np.ndarray:
    """Background colours in Lab, float32 (5, 3): the median of the border strip, then of each corner.

    The border median ignores the part of the border a garment covers, as
    long as that is less than half. The corners (the dataset's recipe trims
    "borders close to the corner pixels") catch backgrounds of more than one
    colour: a wall above a floor, stripes on a bed, light from one side.
    """
    # Partial sorts of channel-major copies: a third of np.median's time, the same numbers.
    border = border_pixels(lab).T.copy()  # (3, N)
    corners = corner_patches(lab).transpose(0, 2, 1).copy()  # (4, 3, N)
    return np.vstack([medians(border), medians(corners)])


def color_distance(lab: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Per-pixel Lab distance to the nearest of `colors` (K, 3), float32 (H, W).

    Lightness counts LIGHTNESS_WEIGHT: shadows and uneven light change a
    floor's lightness much more than its colour.
    """
    weights = np.array([LIGHTNESS_WEIGHT ** 2, 1.0, 1.0], np.float32)  # on the squared channel differences
    colors = np.asarray(colors, np.float32).reshape(-1, 3)
    lab = lab.astype(np.float32)
    # |p - c|^2 (weighted) = |p|^2 - 2 p.c + |c|^2. The last two terms are affine in p:
    # one single-channel cv2.transform per colour (OpenCV vectorises transforms to 1-3
    # channels, not to K), a running minimum, then |p|^2 added once. Lab values are
    # whole numbers and the medians whole or half, so every term is a multiple of 1/16
    # below 2^19: exact in float32 in any order, the same as differencing colour by colour.
    affine = np.hstack([-2.0 * weights * colors, (weights * colors * colors).sum(axis=1, keepdims=True)])
    nearest = None  # min over the colours so far of -2 p.c + |c|^2, (H, W)
    for row in affine.astype(np.float32):
        term = cv2.transform(lab, row[None])
        nearest = term if nearest is None else cv2.min(nearest, term)
    squared_norm = cv2.transform(cv2.multiply(lab, lab), weights[None])  # |p|^2, (H, W)
    return cv2.sqrt(cv2.add(nearest, squared_norm))


# -- 3. garment mask ----------------------------------------------------------

def linear_percentile(a, b, fraction: float):
    """The value `fraction` of the way from a to b, computed from the nearer end as
    np.percentile's 'linear' method does, so the two give the same number. Pure."""
    diff = b - a
    return b - diff * (1.0 - fraction) if fraction >= 0.5 else a + diff * fraction


def percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) ('linear') of a 1-D array, with a partial sort of two elements."""
    position = (values.size - 1) * (q / 100.0)
    below = int(position)
    above = min(below + 1, values.size - 1)
    part = np.partition(values, (below, above))
    # numpy scalars of the values' dtype, so the arithmetic is np.percentile's
    return float(linear_percentile(part[below], part[above], position - below))


def histogram_percentile(counts: np.ndarray, q: float) -> float:
    """np.percentile (linear) of the values a histogram of whole numbers counts:
    `counts[v]` values equal v. Pure."""
    cumulative = np.cumsum(counts.astype(np.int64))
    n = int(cumulative[-1])
    position = (n - 1) * (q / 100.0)
    below = int(position)
    # the value at sorted index i is the first v whose cumulative count exceeds i
    a, b = np.searchsorted(cumulative, [below, min(below + 1, n - 1)], side="right")
    return float(linear_percentile(a, b, position - below))


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of non-negative float values: the split that best separates two groups."""
    top = float(values.max())
    if top <= 0:
        return 0.0
    # values * (255 / top) is at most 255 (or a rounding above it, still 255 when truncated)
    scaled = (values * (255.0 / top)).astype(np.uint8)
    t, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return t * top / 255.0


def foreground(distance: np.ndarray) -> np.ndarray:
    """Pixels that differ from the background: bool (H, W).

    Otsu's split of the distances, kept within SPREAD_RANGE times the
    border's own variation (`spread`: the 75th percentile of the border's
    distances, i.e. how much a rug or wood floor varies; 75 rather than a
    higher percentile so a garment touching up to a quarter of the border
    doesn't inflate it) and never below MIN_DISTANCE.
    Why the bounds: with a patterned garment or a strong shadow the
    distances form more than two groups and Otsu's split can land inside
    the garment (hence the cap), while on a textured floor it can land in
    the texture (hence the floor).
    """
    spread = percentile(border_pixels(distance).ravel(), SPREAD_PERCENTILE)
    low, high = (max(k * spread, MIN_DISTANCE) for k in SPREAD_RANGE)
    return distance > min(max(otsu_threshold(distance), low), high)


def _u8(mask: np.ndarray) -> np.ndarray:
    """A bool mask as uint8 0/1 for OpenCV, without a copy."""
    return mask.view(np.uint8) if mask.dtype == bool else mask


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Closing bridges gaps (a print, a pattern, a seam), opening then removes specks. bool (H, W)."""
    side = max(3, round(min(mask.shape) * KERNEL_FRACTION) | 1)  # odd diameter, px
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    m = cv2.morphologyEx(_u8(mask), cv2.MORPH_CLOSE, kernel)
    return cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel).view(bool)  # 0/1 in, 0/1 out


def main_blobs(mask: np.ndarray) -> np.ndarray:
    """The largest connected component plus any at least KEEP_FRACTION of its size. bool (H, W).

    One garment is one blob; a pair of shoes may be two similar blobs;
    specks, shadows and creases at the edge are smaller.
    """
    # 16-bit labels: half the time of 32-bit ones with statistics. A WORK_SIDE image
    # has at most (WORK_SIDE / 2)^2 8-connected components, well below 65,536.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(_u8(mask), connectivity=8, ltype=cv2.CV_16U)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]  # component 0 is the background
    kept = np.flatnonzero(areas >= KEEP_FRACTION * areas.max()) + 1
    if len(kept) == 1:  # the usual case: one comparison instead of a lookup per pixel
        return labels == kept[0]
    keep = np.zeros(count, bool)  # per label: is it kept? (a lookup is ~10x faster than np.isin)
    keep[kept] = True
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill regions the outside can't reach. bool (H, W).

    A white logo on a white shirt on a white sheet looks like background;
    it is still part of the garment.
    """
    # a frame of background, so the flood reaches all outside background
    padded = cv2.copyMakeBorder(_u8(mask), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(padded, None, (0, 0), 2)  # outside -> 2; garment (1) and holes (0) stay
    return padded[1:-1, 1:-1] != 2


def garment_mask(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool (H, W), background Lab colours float32 (5, 3)) for a BGR image.

    An empty mask means nothing stands out from the background (a blank
    wall, a one-colour image).
    """
    return finish(mask_steps(bgr))


def mask_steps(bgr: np.ndarray) -> Steps:
    """garment_mask one step at a time: yields (step name, its result), returns
    (mask, background)."""
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    yield "lab", lab
    background = background_colors(lab)
    yield "background_colors", background
    distance = color_distance(lab, background)
    yield "color_distance", distance
    mask = foreground(distance)
    yield "foreground", mask
    if min(mask.shape) >= 8:  # morphology on a few pixels would erase everything
        mask = clean_mask(mask)
        yield "clean_mask", mask
    if cv2.countNonZero(_u8(mask)) < MIN_GARMENT_FRACTION * mask.size:
        return np.zeros(mask.shape, bool), background
    mask = main_blobs(mask)
    yield "main_blobs", mask
    mask = fill_holes(mask)
    yield "fill_holes", mask
    return mask, background


# -- 4. intensities -------------------------------------------------------------

def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """(rows, cols) slices of a non-empty mask's bounding box.

    No margin: in Fashion-MNIST the garment's longest side spans all 28 px.
    """
    x, y, w, h = cv2.boundingRect(_u8(mask))
    return slice(y, y + h), slice(x, x + w)


def is_dark(background_lab: np.ndarray) -> bool:
    """Whether the background (its overall colour, row 0) is near-black: L below DARK_BACKGROUND_L."""
    return float(background_lab[0, 0]) < DARK_BACKGROUND_L


def garment_intensity(gray: np.ndarray, dark_background: bool) -> np.ndarray:
    """Grayscale -> 'garment is bright' intensities, uint8 (H, W).

    Fashion-MNIST negated product shots on white, so dark cloth is bright
    and a fold in a white shirt is brighter than the shirt. We do the same on
    any background that isn't near-black: floors, beds and coloured sheets
    behave like the catalogue's white here (inverting on mid-tone backgrounds
    too was more accurate on the real photos than deciding at mid-gray;
    docs/design-log.md). On a near-black background (black velvet, a dark
    screen, a Fashion-MNIST image itself) the garment is already bright on
    dark and is kept as it is.
    """
    return gray if dark_background else 255 - gray


def stretch_table(top: float, gamma: float = 1.0) -> np.ndarray:
    """What `stretch` maps each garment intensity 0..255 to, uint8 (256,). Pure."""
    scaled = np.minimum(_LEVELS * (1.0 / top), 1.0)  # 0..1
    if gamma != 1.0:
        scaled = scaled ** np.float32(gamma)
    return np.rint(np.maximum(scaled * 255.0, GARMENT_FLOOR)).astype(np.uint8)


_LEVELS = np.arange(256, dtype=np.float32)  # every uint8 value; read-only
_LEVELS.flags.writeable = False


def stretch(values: np.ndarray, mask: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Garment intensities scaled so its brightest (99th percentile) reach 255, then
    raised to `gamma` (on the 0..1 scale), at least GARMENT_FLOOR; background exactly 0.
    uint8 (H, W).

    Every Fashion-MNIST image reaches 255 and its background is 0. The scale
    keeps 0 at 0, so relative shading inside the garment is kept (a dataset
    image passes through nearly unchanged with gamma 1); the floor keeps faint
    cloth (e.g. a white shirt, nearly 0 after inversion) apart from the
    background. A gamma above 1 darkens the mid-tones and keeps 255 at 255
    (see INVERTED_GAMMA for why inverted photos get one).
    """
    m = _u8(mask)
    # A function of the uint8 value alone: a 256-entry table, and the percentile from
    # a histogram, instead of float arithmetic on every pixel (same numbers).
    counts = cv2.calcHist([values], [0], m, [256], [0, 256]).ravel()
    if not counts.any():
        return np.zeros_like(values)
    top = max(histogram_percentile(counts, 99), 1.0)
    return cv2.multiply(cv2.LUT(values, stretch_table(top, gamma)), m)  # x 0/1: background exactly 0


# -- 5. placing on the canvas -----------------------------------------------------

def fit_to_canvas(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize keeping the aspect ratio so the longest side fills `size` (h, w); centre on black.

    INTER_AREA averages all the pixels each output pixel covers, like a
    smaller camera sensor would; other filters skip pixels and lose thin straps.
    """
    out_h, out_w = size
    h, w = image.shape
    scale = min(out_h / h, out_w / w)
    new_h, new_w = max(1, min(out_h, round(h * scale))), max(1, min(out_w, round(w * scale)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((out_h, out_w), np.uint8)
    # An odd leftover pixel goes above / left of the garment, as in 94% / 99.7%
    # of the Fashion-MNIST training images that have one.
    top, left = (out_h - new_h + 1) // 2, (out_w - new_w + 1) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def full_range(image: np.ndarray) -> np.ndarray:
    """Scale so the brightest pixel is 255, like every Fashion-MNIST image. uint8 (H, W)."""
    top = int(image.max())
    if top in (0, 255):
        return image
    return cv2.convertScaleAbs(image, alpha=255.0 / top)


# -- the pipeline -------------------------------------------------------------------

def photo_to_input(image: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """A photo or camera frame (uint8 gray, BGR or BGRA, any size) -> model input, uint8 `size` (h, w).

    Garment bright on an exactly black background, longest side filling the
    canvas, centred. An image where nothing stands out from the background
    (e.g. one colour) gives an all-black input, which the Classifier reports
    as unknown whatever the model says about it.
    """
    return finish(photo_steps(image, size))


def photo_steps(image: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> Steps:
    """photo_to_input one step at a time: yields (step name, its result) after each
    step and returns the model input. photo_to_input runs it to the end;
    `tools.frame_profile` times the gaps between the steps."""
    bgr = to_bgr(image)
    yield "to_bgr", bgr
    bgr = shrink(bgr)  # (h, w, 3), longest side <= WORK_SIDE
    yield "shrink", bgr
    mask, background = yield from mask_steps(bgr)  # bool (h, w), Lab (5, 3)
    return (yield from input_steps(bgr, mask, background, size))


def masked_input(bgr: np.ndarray, mask: np.ndarray, background: np.ndarray,
                 size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Steps 4 and 5 for a given garment mask: a working-size BGR image, its bool
    (h, w) mask and background Lab colours (5, 3) -> model input, uint8 `size`.
    Apart from photo_to_input so a different segmentation is measured with exactly
    the same intensities and placing (tools/segmentation_levers.py)."""
    return finish(input_steps(bgr, mask, background, size))


def input_steps(bgr: np.ndarray, mask: np.ndarray, background: np.ndarray,
                size: tuple[int, int] = DEFAULT_SIZE) -> Steps:
    """masked_input one step at a time, as photo_steps."""
    if not mask.any():
        return np.zeros(size, np.uint8)
    rows, cols = bounding_box(mask)
    yield "bounding_box", (rows, cols)
    gray = cv2.cvtColor(bgr[rows, cols], cv2.COLOR_BGR2GRAY)  # (crop h, crop w)
    yield "gray", gray
    dark = is_dark(background)
    garment = garment_intensity(gray, dark)
    yield "garment_intensity", garment
    gamma = 1.0 if dark else INVERTED_GAMMA  # a bright-on-dark photo is already like the dataset
    garment = stretch(garment, mask[rows, cols], gamma)
    yield "stretch", garment
    canvas = fit_to_canvas(garment, size)
    yield "fit_to_canvas", canvas
    model_input = full_range(canvas)
    yield "full_range", model_input
    return model_input


def finish(steps: Steps):
    """Run a *_steps generator to the end and return what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def naive_photo_to_input(image: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Baseline: grayscale, squash to `size` (h, w) with INTER_AREA, invert. uint8 `size`.

    What most tutorials do. It ignores the background and the aspect ratio,
    which is why it does poorly on real photos.
    """
    gray = cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)
    return 255 - cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)
