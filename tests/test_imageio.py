"""edge_runtime.imageio: every bad file is a one-line ImageError; good files decode to uint8."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import ImageError
from edge_runtime.imageio import decode, display_path, header_info, header_size, jpeg_scale, read_image

ROOT = Path(__file__).resolve().parents[1]


def encode(ext: str, image: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def photo(h: int = 60, w: int = 80) -> np.ndarray:
    """A BGR image with structure (JPEG artefacts stay small): a dark square on a light gradient."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = np.linspace(150, 250, w, dtype=np.uint8)[None, :, None]
    image[h // 4:3 * h // 4, w // 4:3 * w // 4] = (40, 60, 200)
    return image


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refuses(path, *words, **kwargs) -> str:
    """read_image(path) must raise ImageError with a one-line message naming the file and saying `words`."""
    with pytest.raises(ImageError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert os.path.basename(display_path(path)) in message
    for word in words:
        assert word in message, message
    return message


# -- files that are not images ------------------------------------------------------

def test_missing_file(tmp_path):
    refuses(tmp_path / "nope.jpg", "no such file")


def test_dangling_symlink_names_its_target(tmp_path):
    link = tmp_path / "photo.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    refuses(link, "broken symbolic link", "gone.jpg")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    refuses(tmp_path / "x.jpg", "is a directory")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files despite chmod 000")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, "secret.png", encode(".png", photo()))
    path.chmod(0)
    try:
        refuses(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_zero_byte_file(tmp_path):
    refuses(write(tmp_path, "empty.jpg", b""), "empty file")


@pytest.mark.parametrize("data", [os.urandom(5000), b"\x00" * 100, b"\xff\xd8"], ids=["random", "zeros", "2-bytes"])
def test_random_bytes_with_jpg_extension(tmp_path, data):
    refuses(write(tmp_path, "photo.jpg", data), "not a decodable image", "JPEG/PNG/WEBP/BMP")


def test_text_file(tmp_path):
    refuses(write(tmp_path, "notes.png", b"shopping list:\n- socks\n- a hat\n"), "not a decodable image")


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
@pytest.mark.parametrize("keep", [0.5, 0.9, -1], ids=["half", "90%", "all-but-1-byte"])
def test_truncated_files(tmp_path, ext, keep):
    data = encode(ext, photo())
    cut = len(data) - 1 if keep == -1 else int(len(data) * keep)
    message = refuses(write(tmp_path, "cut" + ext, data[:cut]))
    assert "truncated" in message


def test_damaged_jpeg_structure(tmp_path):
    data = bytearray(encode(".jpg", photo()))
    data[4:6] = b"\x00\x05"  # the first segment's length now points into the middle of it
    refuses(write(tmp_path, "bad.jpg", bytes(data)), "damaged JPEG")


def jpeg_cut_short_inside(image: np.ndarray) -> bytes:
    """A JPEG whose compressed data meets an end-of-image marker two thirds of the way
    through: libjpeg decodes it, fills the rest grey, and warns on stderr."""
    data = bytearray(encode(".jpg", image))
    at = len(data) * 2 // 3
    data[at:at + 2] = b"\xff\xd9"
    return bytes(data)


def test_damaged_jpeg_that_still_decodes_is_reported_with_its_name(tmp_path, capfd):
    path = write(tmp_path, "damaged.jpg", jpeg_cut_short_inside(photo(120, 160)))
    warnings: list[str] = []
    image = read_image(path, warn=warnings.append)
    assert image.shape == (120, 160, 3)
    assert warnings == [f"{display_path(path)}: Corrupt JPEG data: premature end of data segment"]
    assert capfd.readouterr().err == ""  # reported through warn, not printed behind its back
    read_image(path)  # without warn: libjpeg's line is passed on as it was
    assert "Corrupt JPEG data" in capfd.readouterr().err
    read_image(write(tmp_path, "fine.jpg", encode(".jpg", photo())), warn=warnings.append)
    assert len(warnings) == 1  # a sound file has nothing to say


# -- refusing huge images before decoding ---------------------------------------------

def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_png_claiming_20000x20000_is_refused_from_its_header(tmp_path):
    # A 100-byte file that says 400 megapixels; its "pixels" are 10 zero
    # bytes that could never decode. The size message (not "not decodable")
    # shows the header was checked before any decoding was tried.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", bytes(10))
            + png_chunk(b"IEND", b""))
    message = refuses(write(tmp_path, "bomb.png", data), "20000x20000", "megapixel limit")
    assert "400.0 megapixels" in message


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_real_image_over_the_limit_is_refused(tmp_path, ext):
    path = write(tmp_path, "big" + ext, encode(ext, photo(60, 80)))
    refuses(path, "60", "80", "megapixel limit", max_pixels=80 * 60 - 1)
    assert read_image(path, max_pixels=80 * 60).shape == (60, 80, 3)


def bomb_png(side: int, depth: int = 16) -> bytes:
    """An RGBA PNG, `side` px square, almost all zeros: a few hundred KB that decode to side² x 4 x depth/8 bytes."""
    image = np.zeros((side, side, 4), np.uint16 if depth == 16 else np.uint8)
    image[::97, ::89] = 65535 if depth == 16 else 255
    return encode(".png", image, (cv2.IMWRITE_PNG_COMPRESSION, 9))


def test_a_16_bit_rgba_png_is_refused_by_the_bytes_it_decodes_to_not_its_pixels():
    """49 megapixels is under the pixel limit, but 7000x7000x4 16-bit samples are 392 MB, which
    OpenCV holds twice: the header's depth and channels refuse it before anything is allocated.
    (The server took 8.9 s and 1.8 GB for it before; benchmarks/serve_load.md has the figures now.)"""
    data = bomb_png(7000)
    assert len(data) < 400_000
    header = header_info(data)
    assert (header.width, header.height, header.channels, header.sample_bytes) == (7000, 7000, 4, 2)
    with pytest.raises(ImageError) as info:
        decode(data, "upload", working_side=128)
    assert "7000x7000 16-bit PNG with 4 channels would take 748 MB" in str(info.value)
    assert "286 MB allowed" in str(info.value) and "\n" not in str(info.value)
    small = bomb_png(700)  # the same kind of file, small enough: decoded, 8-bit, alpha kept
    out = decode(small, "upload")
    assert out.shape == (700, 700, 4) and out.dtype == np.uint8


def test_a_progressive_jpeg_counts_libjpegs_coefficient_buffer():
    """A progressive JPEG keeps every DCT coefficient (64 int16 per 8x8 block of each component)
    until its last scan, even when decoded at 1/8; a baseline one streams."""
    image = photo(160, 240)
    baseline = header_info(encode(".jpg", image))
    progressive = header_info(encode(".jpg", image, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)))
    full = header_info(encode(".jpg", image, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                              cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)))
    assert baseline.coefficient_bytes == 0
    assert progressive.coefficient_bytes == (30 * 20 + 2 * 15 * 10) * 64 * 2  # 4:2:0: chroma at half size
    assert full.coefficient_bytes == 3 * 30 * 20 * 64 * 2
    assert full.decoding_bytes(8) == 2 * 30 * 20 * 3 + full.coefficient_bytes


MEASURE_DECODE = """
import sys, numpy as np, cv2
sys.path.insert(0, sys.argv[2])
from edge_runtime.imageio import header_info, jpeg_scale
data = open(sys.argv[1], "rb").read()
header = header_info(data)
def kb(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if header.format == "jpeg" else cv2.IMREAD_UNCHANGED
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = kb("VmRSS")
image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
print((kb("VmHWM") - before) * 1024, header.decoding_bytes(), image.nbytes)
"""


@pytest.mark.parametrize("ext,image,params", [
    (".png", "rgba16", ()), (".png", "rgb", ()), (".png", "gray", ()), (".webp", "rgba", ()), (".bmp", "rgb", ()),
    (".jpg", "rgb", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                     cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)),
], ids=["png-rgba16", "png-rgb", "png-gray", "webp-rgba", "bmp", "jpeg-progressive-444"])
def test_what_decoding_takes_is_never_more_than_the_header_says(tmp_path, ext, image, params):
    """The estimate the limit relies on, against this OpenCV's real peak (VmHWM, in a fresh process)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")
    side = 2000
    ramp = np.add.outer(np.arange(side), np.arange(side)).astype(np.float32) / (2 * side)
    pixels = {"rgb": np.dstack([ramp, ramp.T, 1 - ramp]), "gray": ramp, "rgba": np.dstack([ramp, ramp.T, 1 - ramp, ramp]),
              "rgba16": np.dstack([ramp, ramp.T, 1 - ramp, ramp])}[image]
    pixels = (pixels * 65535).astype(np.uint16) if image.endswith("16") else (pixels * 255).astype(np.uint8)
    path = write(tmp_path, "big" + ext, encode(ext, pixels, params))
    out = subprocess.run([sys.executable, "-c", MEASURE_DECODE, str(path), str(ROOT)], capture_output=True,
                         text=True, timeout=60)
    measured, estimate, decoded = map(int, out.stdout.split())
    assert decoded <= estimate and measured <= estimate * 1.05 + 8 * 2**20, (measured, estimate)  # + libpng, zlib


def test_a_large_transparent_image_is_reduced_as_compositing_then_shrinking_would():
    """Reduced with its alpha premultiplied: no dark rim where a white garment meets a transparent
    black background, and what the model gets is what the full image gives."""
    from edge_runtime.imageio import reduce
    from edge_runtime.photo import WORK_SIDE, photo_to_input, to_bgr
    image = np.zeros((2400, 1600, 4), np.uint8)  # transparent black
    image[301:2101, 203:1403] = (250, 250, 250, 255)  # an opaque white cut-out, edges off the 4-pixel grid
    image[1000:1300, 500:1100] = (40, 60, 200, 255)  # something on it
    reduced = reduce(image, 4)
    assert reduced.shape == (600, 400, 4)
    reference = cv2.resize(to_bgr(image), (400, 600), interpolation=cv2.INTER_AREA)
    assert np.abs(to_bgr(reduced).astype(int) - reference.astype(int)).max() <= 1
    data = encode(".png", image)
    full, small = photo_to_input(decode(data)), photo_to_input(decode(data, working_side=WORK_SIDE))
    assert decode(data, working_side=WORK_SIDE).shape == (600, 400, 4)
    assert np.abs(full.astype(int) - small.astype(int)).mean() <= 2.0


def test_decodes_from_several_threads_leave_stderr_and_opencvs_log_level_alone(capfd):
    """fd 2 and OpenCV's log level belong to the process: two decodes at once once left fd 2 on a
    deleted temporary file (5 times in 20) and the log level silent. Each damaged JPEG's one libjpeg
    line must reach its own decode's warnings, once."""
    damaged = jpeg_cut_short_inside(photo(120, 160))
    stderr_before = os.fstat(2)
    level = cv2.utils.logging.getLogLevel()
    warnings: dict[str, list[str]] = {"a": [], "b": []}

    def work(name):
        for _ in range(40):
            got = []
            decode(damaged, name, warn=got.append)
            warnings[name].append(got)

    threads = [threading.Thread(target=work, args=(name,)) for name in warnings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (stderr_before.st_dev, stderr_before.st_ino)
    assert cv2.utils.logging.getLogLevel() == level
    for name, runs in warnings.items():
        assert runs == [[f"{name}: Corrupt JPEG data: premature end of data segment"]] * 40
    os.write(2, b"still stderr\n")
    assert capfd.readouterr().err == "still stderr\n"


@pytest.mark.parametrize("ext,params", [(".jpg", ()), (".png", ()), (".bmp", ()),
                                        (".webp", ()), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))],
                         ids=["jpeg", "png", "bmp", "webp-lossy", "webp-lossless"])
def test_header_size_matches_the_decoded_size(ext, params):
    data = encode(ext, photo(37, 91), params)
    fmt, size = header_size(data)
    assert size == (91, 37)
    assert fmt in ext.replace("jpg", "jpeg")


# -- images that must decode ------------------------------------------------------------

def test_16_bit_png_becomes_8_bit(tmp_path):
    image = np.zeros((4, 5, 3), np.uint16)
    image[0, 0] = 65535
    image[1, 1] = 32896  # 128.0 * 257
    path = write(tmp_path, "deep.png", encode(".png", image))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [128, 128, 128]
    assert out[2, 2].tolist() == [0, 0, 0]


def test_16_bit_gray_png(tmp_path):
    path = write(tmp_path, "deep_gray.png", encode(".png", np.full((3, 7), 65535, np.uint16)))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (3, 7) and (out == 255).all()


def test_rgba_png_keeps_its_alpha(tmp_path):
    image = np.zeros((10, 12, 4), np.uint8)
    image[:, :6, 3] = 255  # left half opaque, right half transparent
    out = read_image(write(tmp_path, "cutout.png", encode(".png", image)))
    assert out.shape == (10, 12, 4)
    assert (out[:, :6, 3] == 255).all() and (out[:, 6:, 3] == 0).all()


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_grayscale_stays_single_channel(tmp_path, ext):
    gray = cv2.cvtColor(photo(), cv2.COLOR_BGR2GRAY)
    out = read_image(write(tmp_path, "gray" + ext, encode(ext, gray)))
    assert out.shape == gray.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - gray).mean() < 3  # JPEG is lossy


@pytest.mark.parametrize("params", [(), (cv2.IMWRITE_WEBP_QUALITY, 101)], ids=["lossy", "lossless"])
def test_webp(tmp_path, params):
    out = read_image(write(tmp_path, "p.webp", encode(".webp", photo(), params)))
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - photo()).mean() < 5


def test_webp_with_alpha(tmp_path):
    image = np.dstack([photo(), np.full((60, 80), 255, np.uint8)])
    image[:, :10, 3] = 0
    out = read_image(write(tmp_path, "a.webp", encode(".webp", image, (cv2.IMWRITE_WEBP_QUALITY, 101))))
    assert out.shape == (60, 80, 4) and (out[:, :10, 3] == 0).all()


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 20000, 3), (20000, 1, 3)])
@pytest.mark.parametrize("ext", [".png", ".bmp"])
def test_extreme_shapes(tmp_path, shape, ext):
    image = np.full(shape, 77, np.uint8)
    out = read_image(write(tmp_path, "thin" + ext, encode(ext, image)))
    assert out.shape == shape and (out == 77).all()


def rotated_90(jpeg: bytes) -> bytes:
    """The JPEG with an EXIF orientation 6 tag: "rotate 90 degrees clockwise for display",
    how phones store a photo taken sideways."""
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + bytes(4)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_jpeg_exif_orientation_is_applied(tmp_path):
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :20] = 255  # a white band on the left of a landscape image
    out = read_image(write(tmp_path, "phone.jpg", rotated_90(encode(".jpg", image))))
    assert out.shape == (80, 40, 3)  # portrait, as the phone showed it
    assert out[:20].mean() > 200 and out[30:].mean() < 50  # the band is now at the top


# -- large JPEGs decode at a reduced scale when the caller shrinks them anyway -------------

def test_jpeg_scale_keeps_the_longest_side_at_least_4x_the_working_size():
    assert [jpeg_scale(w, h, 128) for w, h in [(4000, 3000), (8000, 6000), (1024, 768), (1023, 768),
                                               (640, 480), (534, 400)]] == [4, 8, 2, 1, 1, 1]
    assert jpeg_scale(4000, 3000, None) == 1  # no working size: always in full


def test_large_jpeg_decodes_reduced_in_colour_or_gray_and_upright():
    image = np.zeros((1600, 2400, 3), np.uint8)
    image[:, :800] = (0, 0, 255)  # a red band on the left of a landscape photo
    jpeg = encode(".jpg", image)
    assert decode(jpeg).shape == (1600, 2400, 3)
    reduced = decode(jpeg, working_side=128)
    assert reduced.shape == (400, 600, 3) and reduced[:, :190, 2].min() > 240  # 1/4 scale, still red
    assert decode(encode(".jpg", image[:, :, 1]), working_side=128).shape == (400, 600)  # gray stays gray
    # The EXIF orientation is applied at any scale ("rotate 90": the band ends up on top).
    upright = decode(rotated_90(jpeg), working_side=128)
    assert upright.shape == (600, 400, 3) and upright[:190, :, 2].min() > 240


@pytest.mark.parametrize("seed", range(4))
def test_reduced_decoding_gives_the_model_the_same_input(seed):
    """Reference: the full decode. Tolerance: 4 grey levels on average over the 28x28
    input, about one row of the garment's edge moving by one pixel."""
    from edge_runtime.photo import WORK_SIDE, photo_to_input
    rng = np.random.default_rng(seed)
    photo = np.full((2400, 1800, 3), rng.integers(190, 250, 3), np.uint8)  # a light floor
    top, left = rng.integers(100, 500, 2)
    cv2.rectangle(photo, (int(left), int(top)), (int(1800 - left), int(2400 - top)),
                  tuple(int(c) for c in rng.integers(0, 90, 3)), -1)  # a dark garment
    jpeg = encode(".jpg", photo)
    full, reduced = photo_to_input(decode(jpeg)), photo_to_input(decode(jpeg, working_side=WORK_SIDE))
    assert np.abs(full.astype(int) - reduced.astype(int)).mean() <= 4.0


def test_cmyk_jpeg_is_converted_to_bgr(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    path = tmp_path / "print.jpg"
    pil.new("CMYK", (30, 20), (0, 255, 255, 0)).save(path)  # cyan 0, magenta+yellow full: red
    out = read_image(path)
    assert out.shape == (20, 30, 3)
    b, g, r = out.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


# -- file names ---------------------------------------------------------------------------

def test_non_utf8_file_name(tmp_path):
    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.png")  # Latin-1 bytes: not UTF-8
    with open(name, "wb") as f:
        f.write(encode(".png", photo()))
    assert read_image(name).shape == (60, 80, 3)  # bytes path
    as_str = os.fsdecode(name)  # str with surrogate escapes, what os.listdir gives
    assert read_image(as_str).shape == (60, 80, 3)
    shown = display_path(as_str)
    shown.encode("utf-8")  # printable, JSON-able: no lone surrogates
    assert shown.endswith("caf\ufffd-\ufffd.png")


def test_error_message_for_non_utf8_name_is_printable(tmp_path):
    name = os.path.join(os.fsencode(tmp_path), b"\xe9t\xe9.jpg")
    with open(name, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(ImageError) as info:
        read_image(name)
    str(info.value).encode("utf-8")
    assert "\ufffdt\ufffd.jpg" in str(info.value)


def test_unicode_file_name(tmp_path):
    path = write(tmp_path, "Kleid-für-Sommer-连衣裙.png", encode(".png", photo()))
    assert read_image(path).shape == (60, 80, 3)


@pytest.mark.parametrize("ext,image", [(".tiff", np.full((4, 4), 0.5, np.float32)), (".tiff", photo()),
                                       (".pgm", photo()[:, :, 0])], ids=["float-tiff", "tiff", "pgm"])
def test_formats_without_a_header_reader_are_not_decoded(ext, image):
    """OpenCV decodes TIFF, PNM, GIF, ...: formats whose size and depth we don't read before
    decoding, so their memory can't be bounded (a deflated TIFF is a bomb as easily as a PNG)."""
    with pytest.raises(ImageError, match="not a decodable image .*JPEG/PNG/WEBP/BMP"):
        decode(encode(ext, image), "file" + ext)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    refuses(fifo, "not a regular file")


def test_device_file_is_refused():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    refuses("/dev/zero", "not a regular file")  # reading it would never end


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    from edge_runtime import imageio
    path = write(tmp_path, "poster.png", encode(".png", photo()))
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", 100)
    refuses(path, "MB a photo can reasonably be")
