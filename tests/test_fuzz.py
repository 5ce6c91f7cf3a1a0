"""Fuzzing the path every untrusted image takes: bytes -> imageio.decode ->
photo_to_input. Whatever the bytes, the result is an ImageError or a valid
28x28 uint8 model input, never another exception and never a crash of the
process (a segfault in OpenCV would take pytest down with it, failing CI).

The CI budget is a few hundred examples (well under a minute). A longer run:
    FUZZ_EXAMPLES=20000 make test ARGS="tests/test_fuzz.py -q"
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.errors import ImageError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def seeds() -> dict[str, bytes]:
    """Small valid images in every format we accept: mutations of these reach deep into the decoders."""
    import cv2
    rng = np.random.default_rng(0)
    image = np.full((40, 30, 3), 235, np.uint8)
    image[8:32, 6:24] = rng.integers(0, 120, (24, 18, 3))
    gray16 = (image[..., 0].astype(np.uint16) * 257)
    bgra = np.dstack([image, np.full(image.shape[:2], 200, np.uint8)])
    out = {}
    for ext, img in ((".jpg", image), (".png", image), (".webp", image), (".bmp", image), ("16.png", gray16),
                     ("a.png", bgra)):
        ok, buf = cv2.imencode(ext[-4:] if ext[-4] == "." else ext, img)
        assert ok
        out[ext] = buf.tobytes()
    return out


SEEDS = seeds()


def check(data: bytes) -> None:
    from edge_runtime import imageio
    from edge_runtime.photo import photo_to_input
    try:
        image = imageio.decode(data, "fuzz", max_pixels=4_000_000)
    except ImageError as e:
        assert str(e) and "\n" not in str(e)  # one line
        return
    assert image.dtype == np.uint8 and image.ndim in (2, 3)
    model_input = photo_to_input(image)
    assert model_input.shape == (28, 28) and model_input.dtype == np.uint8


@st.composite
def mutated(draw):
    """A valid seed with a few bytes changed, a chunk cut out, or truncated."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data) - 1))
        del data[start:start + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_images_never_crash(data):
    check(data)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash(data):
    check(data)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.binary(max_size=64))
def test_valid_header_garbage_body(name, tail):
    seed = SEEDS[name]
    check(seed[:max(8, len(seed) // 8)] + tail)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_themselves_decode(name):
    from edge_runtime import imageio
    assert imageio.decode(SEEDS[name], name).size > 0
