"""edge_runtime.photo: real photos -> Fashion-MNIST-style 28x28 inputs.

Synthetic photos are drawn with OpenCV so each test knows where the garment
is; the last tests compare with real Fashion-MNIST images.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_runtime.photo import naive_photo_to_input, photo_to_input

WHITE, NAVY, BLUE, BEIGE, CREAM = (255, 255, 255), (90, 40, 30), (180, 90, 30), (150, 190, 215), (225, 235, 240)


def canvas(h: int, w: int, color) -> np.ndarray:
    return np.full((h, w, 3), color, np.uint8)


def textured(h: int, w: int, color, seed: int = 0) -> np.ndarray:
    """A wood-floor-like background: colour + grain stripes + sensor noise."""
    rng = np.random.default_rng(seed)
    grain = 18 * np.sin(np.linspace(0, 40 * np.pi, w))[None, :, None]  # ~20 stripes across
    noise = rng.normal(0, 10, (h, w, 3))
    return np.clip(canvas(h, w, color) + grain + noise, 0, 255).astype(np.uint8)


def tshirt(image: np.ndarray, color, center=None, scale: float = 1.0) -> np.ndarray:
    """Draw a T-shirt (body, sleeves, neckline) about 200x240 px at `scale`; returns the image."""
    h, w = image.shape[:2]
    cx, cy = center or (w // 2, h // 2)
    points = np.array([(-60, -100), (-25, -100), (0, -85), (25, -100), (60, -100), (120, -50), (95, -10),
                       (60, -40), (60, 100), (-60, 100), (-60, -40), (-95, -10), (-120, -50)], np.float32)
    polygon = np.rint(points * scale + (cx, cy)).astype(np.int32)
    cv2.fillPoly(image, [polygon], color, lineType=cv2.LINE_AA)
    return image


def bbox(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the nonzero pixels."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    total = image.sum(dtype=np.float64)
    return (yy * image).sum() / total, (xx * image).sum() / total


def check_input(x: np.ndarray, size=(28, 28)) -> None:
    assert x.shape == size and x.dtype == np.uint8


# -- the garment comes out bright on exactly black ------------------------------------------

def test_dark_garment_on_white():
    x = photo_to_input(tshirt(canvas(400, 400, WHITE), NAVY))
    check_input(x)
    top, bottom, left, right = bbox(x)
    assert (left, right) == (0, 27)  # the T-shirt is wider than tall: its width fills the canvas
    assert x[top:bottom + 1].max() == 255
    assert x[:top].max() == 0 and x[bottom + 1:].max() == 0  # background exactly black
    assert x[14, 14] > 200  # the dark body becomes bright, as in the dataset
    assert x[0, 0] == 0 and x[27, 27] == 0


def test_light_garment_on_dark_background_is_not_inverted():
    x = photo_to_input(tshirt(canvas(400, 400, (35, 30, 30)), CREAM))
    check_input(x)
    assert x[14, 14] > 200 and x[0, 0] == 0 and x[27, 0] == 0
    body = x[12:20, 10:18]
    assert (body > 100).all()


def test_coloured_garment_on_textured_coloured_floor():
    image = tshirt(textured(480, 640, BEIGE), BLUE)
    x = photo_to_input(image)
    check_input(x)
    top, bottom, left, right = bbox(x)
    # Drawn 240 wide and 200 tall: the width fills 28, the height is 200/240 of it.
    assert (left, right) == (0, 27)
    assert abs((bottom - top + 1) - 28 * 200 / 240) <= 1.5
    assert x[top:bottom + 1].min(axis=None) == 0  # background between the sleeves is black
    assert x[14, 14] > 150


def test_two_tone_background_wall_and_floor():
    image = canvas(400, 300, (200, 205, 210))
    image[200:] = (60, 110, 160)  # brown floor under a light gray wall
    cv2.rectangle(image, (110, 80), (190, 330), NAVY, -1)  # a garment standing on the floor line
    x = photo_to_input(image)
    top, bottom, left, right = bbox(x)
    assert (top, bottom) == (0, 27)
    assert abs((right - left + 1) - 28 * 81 / 251) <= 1.5  # only the garment, not the floor
    assert x[:, :left].max() == 0 and x[:, right + 1:].max() == 0


def test_off_centre_garment_comes_out_centred():
    image = canvas(600, 800, WHITE)
    cv2.ellipse(image, (150, 130), (60, 90), 0, 0, 360, NAVY, -1)  # top-left corner of the photo
    x = photo_to_input(image)
    cy, cx = center_of_mass(x)
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0
    ny, nx = center_of_mass(naive_photo_to_input(image))
    assert abs(ny - 13.5) > 5 and abs(nx - 13.5) > 5  # the baseline leaves it in the corner


@pytest.mark.parametrize("h,w", [(200, 100), (100, 200), (250, 50)])
def test_aspect_ratio_is_kept(h, w):
    image = canvas(500, 500, WHITE)
    cv2.rectangle(image, (250 - w // 2, 250 - h // 2), (250 - w // 2 + w - 1, 250 - h // 2 + h - 1), NAVY, -1)
    top, bottom, left, right = bbox(photo_to_input(image))
    long_side, short_side = max(bottom - top, right - left) + 1, min(bottom - top, right - left) + 1
    assert long_side == 28
    assert abs(short_side - 28 * min(h, w) / max(h, w)) <= 1.0


def test_garment_touching_the_frame_edges():
    image = canvas(400, 300, (190, 190, 190))
    image[:, 120:180] = NAVY  # trouser leg cropped at the top and bottom of the photo
    x = photo_to_input(image)
    top, bottom, left, right = bbox(x)
    assert (top, bottom) == (0, 27)
    assert abs((right - left + 1) - 28 * 60 / 400) <= 1.0
    assert abs((left + right) / 2 - 13.5) <= 1.0


def test_transparent_png_is_composited_onto_white():
    garment = tshirt(canvas(300, 300, (0, 0, 0)), NAVY)
    alpha = np.where(garment.any(axis=2), 255, 0).astype(np.uint8)
    bgra = np.dstack([garment, alpha])  # transparent pixels are stored black, like most cut-outs
    on_white = np.where(alpha[..., None] > 0, garment, 255).astype(np.uint8)
    x = photo_to_input(bgra)
    assert np.array_equal(x, photo_to_input(on_white))
    assert x[0, 0] == 0 and x[14, 14] > 200
    assert naive_photo_to_input(garment)[0, 0] == 255  # what ignoring alpha would give: a white frame


def test_gray_and_single_channel_inputs_match_bgr():
    bgr = tshirt(canvas(200, 200, (230, 230, 230)), (70, 70, 70))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    expected = photo_to_input(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert np.array_equal(photo_to_input(gray), expected)
    assert np.array_equal(photo_to_input(gray[..., None]), expected)


def test_other_output_sizes():
    x = photo_to_input(tshirt(canvas(300, 300, WHITE), NAVY), size=(32, 24))
    check_input(x, (32, 24))
    assert x.max() == 255


def test_large_photo_gives_the_same_input_as_a_small_one():
    small = tshirt(canvas(300, 400, BEIGE), BLUE)
    big = cv2.resize(small, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    a, b = photo_to_input(small), photo_to_input(big)
    assert np.abs(a.astype(int) - b).mean() < 6  # resampling differences only


# -- degenerate images: something sensible, never a crash -----------------------------------

@pytest.mark.parametrize("color", [(0, 0, 0), (255, 255, 255), (40, 120, 200)])
@pytest.mark.parametrize("shape", [(1, 1), (480, 640), (1, 20000), (20000, 1)])
def test_one_colour_image_is_all_black(color, shape):
    x = photo_to_input(canvas(*shape, color))
    check_input(x)
    assert x.max() == 0  # nothing to classify: the model should say unknown


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 2), (3, 5), (1, 20000), (20000, 1), (7, 9)])
def test_tiny_and_thin_images(shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for x in (photo_to_input(image), naive_photo_to_input(image)):
        check_input(x)


def test_thin_strip_with_a_dark_mark():
    strip = canvas(1, 20000, WHITE)
    strip[0, 9000:11000] = NAVY
    x = photo_to_input(strip)
    check_input(x)
    assert x.max() == 255 and x[0].max() == 0  # a bright line, centred, on black


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4]))))
def test_any_small_image_gives_a_valid_input(image):
    x = photo_to_input(image)
    check_input(x)


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 3), np.float32), np.zeros((2, 10, 10, 3), np.uint8),
                                 np.zeros((10, 10, 2), np.uint8), np.zeros((0, 10, 3), np.uint8)],
                         ids=["float", "4d", "2-channels", "empty"])
def test_invalid_arrays_raise_value_error(bad):
    with pytest.raises(ValueError):
        photo_to_input(bad)


def test_naive_baseline_is_gray_resize_invert():
    image = canvas(50, 100, WHITE)
    image[:, :50] = (0, 0, 0)
    x = naive_photo_to_input(image)
    check_input(x)
    assert (x[:, :14] == 255).all() and (x[:, 14:] == 0).all()  # squashed, not letterboxed


# -- against real Fashion-MNIST ---------------------------------------------------------

def round_trip(images: np.ndarray) -> np.ndarray:
    """Each 28x28 dataset image shown 10x larger (as if photographed), then preprocessed again."""
    return np.stack([photo_to_input(cv2.resize(im, (280, 280), interpolation=cv2.INTER_NEAREST)) for im in images])


def test_dataset_images_survive_a_round_trip(fashion):
    # 10 test images per class. A dataset image is already bright on black
    # and centred, so preprocessing it again should change little. What
    # remains: pixels dimmer than the background threshold become 0, and
    # where our crop differs by a pixel from the dataset's everything
    # shifts. Measured with the constants in photo.py: mean absolute
    # difference 10.9 gray levels (of 255) over these 100 images, median
    # 7.4, worst 51. For scale: shifting
    # the originals by one pixel costs 21.6, and the naive baseline (which
    # inverts) 192. The tolerances leave room for other OpenCV versions.
    picks = np.concatenate([np.flatnonzero(fashion.test_labels == c)[:10] for c in range(10)])
    images = fashion.test_images[picks]
    diff = np.abs(round_trip(images).astype(int) - images).mean(axis=(1, 2))  # per image, gray levels
    assert diff.mean() < 15, diff.round(1)
    assert np.median(diff) < 10
    shifted = np.abs(np.roll(images, 1, axis=2).astype(int) - images).mean()
    naive = np.abs(np.stack([naive_photo_to_input(cv2.resize(im, (280, 280))) for im in images]).astype(int)
                   - images).mean()
    assert diff.mean() < 0.75 * shifted and naive > 100


def test_round_trip_keeps_dataset_statistics(fashion):
    # The properties the dataset's recipe guarantees: background 0, maximum
    # 255, longest side of the garment spans the canvas, centred.
    images = fashion.test_images[:50]
    for original, out in zip(images, round_trip(images)):
        assert out.max() == 255
        top, bottom, left, right = bbox(out)
        assert max(bottom - top, right - left) + 1 == 28
        o_top, o_bottom, o_left, o_right = bbox(original)
        assert abs((top + bottom) - (o_top + o_bottom)) <= 2 and abs((left + right) - (o_left + o_right)) <= 2


# -- intensity mapping of inverted photos --------------------------------------------------

def test_stretch_gamma_darkens_mid_tones_and_keeps_the_ends():
    from edge_runtime.photo import GARMENT_FLOOR, stretch
    values = np.array([[0, 100, 200]], np.uint8)
    mask = np.array([[False, True, True]])
    linear, curved = stretch(values, mask), stretch(values, mask, gamma=2.0)
    assert linear[0, 0] == curved[0, 0] == 0  # background stays exactly black
    assert linear[0, 2] == curved[0, 2] == 255  # the brightest garment pixels still reach 255
    assert linear[0, 1] == 128 and curved[0, 1] == 64  # (100/200) ** 2 of 255
    assert stretch(np.array([[0, 10, 200]], np.uint8), mask, gamma=2.0)[0, 1] == GARMENT_FLOOR


def test_inverted_photos_get_the_gamma_and_dark_backgrounds_do_not(monkeypatch):
    from edge_runtime import photo
    on_white = tshirt(canvas(300, 300, WHITE), (110, 110, 110))  # mid-gray shirt: inverted to mid-gray
    cv2.circle(on_white, (150, 150), 30, (20, 20, 20), -1)  # a dark print: the brightest part after inversion
    on_black = tshirt(canvas(300, 300, (10, 10, 10)), (140, 140, 140))
    cv2.circle(on_black, (150, 150), 30, (250, 250, 250), -1)
    linear = {}
    monkeypatch.setattr(photo, "INVERTED_GAMMA", 1.0)
    linear["white"], linear["black"] = photo_to_input(on_white), photo_to_input(on_black)
    monkeypatch.setattr(photo, "INVERTED_GAMMA", 2.0)
    curved_white, curved_black = photo_to_input(on_white), photo_to_input(on_black)
    assert np.array_equal(curved_black, linear["black"])  # bright on dark is kept as it is
    body = (linear["white"] > 0) & (linear["white"] < 200)
    assert body.any()
    assert curved_white[body].mean() < linear["white"][body].mean() - 30  # mid-tones darker
    assert curved_white.max() == 255 and bbox(curved_white) == bbox(linear["white"])  # same garment, same place
