"""Read image files safely: `read_image(path)` -> uint8 BGR, BGRA or grayscale.

Every way a file can be wrong (missing, a directory, unreadable, empty,
truncated, not an image, absurdly large) becomes an `ImageError` with a
one-line message naming the file, so `classify` can report it and go on.

Why not just `cv2.imread`?
- It returns None without saying why, and can't open non-UTF-8 file names on
  every platform; we read the bytes with Python and use `cv2.imdecode`.
- A 100-byte PNG can claim to be 60000x60000 pixels and make OpenCV allocate
  10 GB on a Raspberry Pi with 1 GB. We read the width and height from the
  file header ourselves (PNG IHDR, JPEG SOF, WEBP VP8/VP8L/VP8X, BMP info
  header) and refuse it before decoding. Pixels alone are not enough: a
  380 KB 16-bit RGBA PNG of 7000x7000 (49 MP) decodes to 392 MB, so the
  header's bit depth and channels (and, for progressive JPEGs, libjpeg's
  whole-image coefficient buffer) give the bytes the decoder will allocate,
  and that is bounded too (`max_bytes`). Formats without such a header
  reader (TIFF, GIF, ...) are not decoded at all.
- A caller that shrinks the image anyway (`working_side`) gets a large one
  reduced: a JPEG by libjpeg while decoding, any other format right after,
  in bands, with transparency premultiplied so the reduction is what
  compositing and then shrinking would give.
- Decoders disagree about damaged files: some OpenCV builds return half a
  JPEG with a grey bottom. We check that JPEG and PNG files have their end
  marker (and WEBP/BMP their declared length), so a truncated file is an error
  everywhere, with a message that says "truncated".

OpenCV is imported at the top of this module only; the `edge_runtime`
package itself doesn't import it, and this module is imported only when
images are used.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from . import native_stderr
from .errors import ImageError

DEFAULT_MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes to 150 MB of BGR
# What decoding may allocate at its peak: OpenCV's imdecode held twice the
# decoded image at its peak for every format here (measured with OpenCV 5.1:
# 57 MB for a 3000x3000 RGB PNG of 26 MB), so the 150 MB of a 50-megapixel
# photo's BGR, twice.
DEFAULT_MAX_BYTES = 2 * 3 * DEFAULT_MAX_PIXELS
DECODER_COPIES = 2
REDUCE_BAND_BYTES = 16 * 2**20  # premultiplied float rows reduced at a time (transparent images)
# A JPEG decoded at 1/2, 1/4 or 1/8 scale keeps its longest side at least this
# many times the caller's working size, so the caller's own area-averaging
# shrink still does the last, larger step (and photos up to ~1000 px, like the
# real-photo set, and camera frames decode in full, exactly as before).
REDUCED_DECODE_MARGIN = 4
MAX_FILE_BYTES = 256 * 2**20  # no photo worth classifying is a larger file
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp")
SUPPORTED = "JPEG/PNG/WEBP/BMP"


def display_path(path) -> str:
    """A file name fit for messages and JSON, whatever bytes it is made of.

    Undecodable bytes of a non-UTF-8 name (str with surrogate escapes, or
    bytes) become U+FFFD instead of crashing `print` or `json.dumps`.
    """
    text = os.fsdecode(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- reading the header -------------------------------------------------------

class Truncated(Exception):
    """The header parsers' way to say: the file ends too early."""


def _u16be(data: bytes, at: int) -> int:
    if at + 2 > len(data):
        raise Truncated
    return struct.unpack_from(">H", data, at)[0]


def sniff_format(data: bytes) -> str | None:
    """'jpeg', 'png', 'webp', 'bmp' from the magic bytes, or None. Pure."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    return None


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding a pixel."""

    format: str
    width: int
    height: int
    channels: int  # as OpenCV's decoder returns them with our flags (at most)
    sample_bytes: int = 1  # 2 for 16-bit PNGs and 12-bit JPEGs
    coefficient_bytes: int = 0  # a progressive or multi-scan JPEG: libjpeg's whole-image coefficient buffer

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def decoded_bytes(self, scale: int = 1) -> int:
        """The decoded image's size at 1/scale. Pure."""
        width, height = -(-self.width // scale), -(-self.height // scale)
        return width * height * self.channels * self.sample_bytes

    def decoding_bytes(self, scale: int = 1) -> int:
        """What decoding allocates at its peak, at 1/scale: the image, held twice, and libjpeg's
        coefficients, beside the decoder's few MB of buffers (tests/test_imageio.py measures it). Pure."""
        return DECODER_COPIES * self.decoded_bytes(scale) + self.coefficient_bytes


# JPEG start-of-frame markers carry the image size: C0..CF except DHT (C4),
# JPG (C8) and DAC (CC). C2, C6, CA and CE are progressive.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


def _coefficient_bytes(width: int, height: int, sampling: list[tuple[int, int]]) -> int:
    """libjpeg's buffer of DCT coefficients for the whole image: 64 int16 per 8x8 block of each component. Pure."""
    def ceil(a: int, b: int) -> int:
        return -(-a // b)
    h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
    blocks = sum(ceil(ceil(width * h, h_max), 8) * ceil(ceil(height * v, v_max), 8) for h, v in sampling)
    return blocks * 64 * 2


def jpeg_header(data: bytes) -> ImageHeader:
    """A JPEG's frame header; Truncated if the file is cut short. Pure.

    Walks the marker segments up to the first scan (SOS). After it comes
    entropy-coded data, in which 0xFF is always followed by 0x00 or a restart
    marker, so the end-of-image marker FF D9 can't appear there by accident:
    if it's missing, the file was truncated. A progressive file, or one whose
    first scan holds fewer components than the frame, makes libjpeg keep every
    coefficient of the image until the last scan, whatever the output scale.
    """
    frame = None
    at = 2  # after SOI (FF D8)
    while True:
        if at + 2 > len(data):
            raise Truncated
        if data[at] != 0xFF:
            raise ValueError("corrupt marker structure")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        length = _u16be(data, at + 2)  # counts itself, not the marker
        if marker in _SOF_MARKERS:
            if at + 10 > len(data):
                raise Truncated
            precision, height, width, count = data[at + 4], _u16be(data, at + 5), _u16be(data, at + 7), data[at + 9]
            if at + 10 + 3 * count > len(data):
                raise Truncated
            sampling = [(max(1, data[at + 11 + 3 * i] >> 4), max(1, data[at + 11 + 3 * i] & 15)) for i in range(count)]
            frame = (marker, precision, width, height, sampling)
        if marker == 0xDA:  # start of scan: headers are over
            if frame is None or 0 in frame[2:4] or not frame[4]:
                raise ValueError("no frame size before the image data")
            if data.find(b"\xff\xd9", at + 2 + length) < 0:
                raise Truncated
            kind, precision, width, height, sampling = frame
            scan_components = data[at + 4] if at + 4 < len(data) else len(sampling)
            buffered = kind in _PROGRESSIVE or scan_components < len(sampling)
            return ImageHeader("jpeg", width, height, 1 if len(sampling) == 1 else 3, 2 if precision > 8 else 1,
                               _coefficient_bytes(width, height, sampling) if buffered else 0)
        if marker == 0xD9:
            raise ValueError("ends before any image data")
        at += 2 + length


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header; Truncated if the file is cut short. Pure."""
    return jpeg_header(data).size


def png_header(data: bytes) -> ImageHeader:
    """A PNG's IHDR chunk; Truncated unless the IEND chunk is there. Pure.

    Chunks are length (4 bytes) + type (4) + data + CRC (4), so walking them
    costs one step per chunk without touching the compressed pixels. OpenCV
    keeps 16-bit samples and turns palette, grey+alpha and tRNS transparency
    into 3 or 4 channels.
    """
    if len(data) < 26 or data[12:16] != b"IHDR":
        raise Truncated if len(data) < 26 else ValueError("no IHDR chunk")
    width, height = struct.unpack_from(">II", data, 16)
    depth, color = data[24], data[25]
    transparency = False
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        at += 12 + length
        transparency = transparency or kind == b"tRNS"
        if kind == b"IEND" and at <= len(data):
            channels = 4 if transparency or color in (3, 4, 6) else (1 if color == 0 else 3)
            return ImageHeader("png", width, height, channels, 2 if depth == 16 else 1)
    raise Truncated


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; Truncated unless the IEND chunk is there. Pure."""
    return png_header(data).size


def webp_header(data: bytes) -> ImageHeader:
    """A WEBP's size (lossy VP8, lossless VP8L or extended VP8X); the last two may carry alpha. Pure."""
    if len(data) < 30:
        raise Truncated
    riff_size = struct.unpack_from("<I", data, 4)[0]  # file length minus 8
    if len(data) < riff_size + 8:
        raise Truncated
    chunk = data[12:16]
    if chunk == b"VP8 ":  # 10-byte frame header at 20: tag (3), start code (3), w, h (14 bits each)
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, 3)
    if chunk == b"VP8L":  # signature byte 0x2F at 20, then (w-1) and (h-1) in 14 bits each
        bits = struct.unpack_from("<I", data, 21)[0]
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4)
    if chunk == b"VP8X":  # canvas (w-1) and (h-1) as 24-bit little-endian at 24 and 27
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("webp", width, height, 4)
    raise ValueError(f"unknown WEBP chunk {chunk!r}")


def webp_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a WEBP. Pure."""
    return webp_header(data).size


def bmp_header(data: bytes) -> ImageHeader:
    """A BMP's info header (height is negative for top-down files); 32 bits a pixel may be BGRA. Pure."""
    file_size, = struct.unpack_from("<I", data, 2)
    if file_size and len(data) < file_size:
        raise Truncated
    header_size, = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
    else:
        width, height, _, bits = struct.unpack_from("<iiHH", data, 18)
    return ImageHeader("bmp", abs(width), abs(height), 4 if bits == 32 else 3)


def bmp_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a BMP's info header. Pure."""
    return bmp_header(data).size


_HEADER_READERS = {"jpeg": jpeg_header, "png": png_header, "webp": webp_header, "bmp": bmp_header}


def header_info(data: bytes) -> ImageHeader | None:
    """The header of a JPEG, PNG, WEBP or BMP, read without decoding pixels; None for other data. Pure.

    Raises Truncated or ValueError for files that claim a known format but
    are damaged.
    """
    fmt = sniff_format(data)
    if fmt is None:
        return None
    try:
        return _HEADER_READERS[fmt](data)
    except struct.error as e:  # a field lies past the end of the data
        raise Truncated from e


def header_size(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """(format, (width, height)) read from the header without decoding pixels; (None, None) for other data. Pure."""
    header = header_info(data)
    return (None, None) if header is None else (header.format, header.size)


# -- decoding -----------------------------------------------------------------

def _os_error(name: str, path, error: OSError) -> ImageError:
    """One-line message for an OSError from stat or open."""
    if isinstance(error, FileNotFoundError):
        if os.path.islink(path):
            return ImageError(f"{name}: broken symbolic link (points to {display_path(os.readlink(path))}, "
                              "which doesn't exist)")
        return ImageError(f"{name}: no such file")
    if isinstance(error, PermissionError):
        return ImageError(f"{name}: permission denied (can't read the file)")
    return ImageError(f"{name}: can't read the file ({error.strerror or error})")


def read_bytes(path) -> bytes:
    """The file's bytes, with OS errors turned into one-line ImageErrors.

    Checks what the path is before opening it: a FIFO would block forever
    and /dev/zero never ends.
    """
    name = display_path(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{name}: is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{name}: not a regular file (a device, pipe or socket)")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageError(f"{name}: file is {info.st_size / 2**20:.1f} MB, more than the "
                             f"{MAX_FILE_BYTES / 2**20:.0f} MB a photo can reasonably be")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # +1: a file that grew since stat is still caught
    except OSError as e:
        raise _os_error(name, path, e) from None
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file is larger than {MAX_FILE_BYTES // 2**20} MB")
    return data


def check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    """ImageError when an image of this size is not worth decoding. Pure."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: header says the image is {width}x{height} pixels; not a valid image")
    if width * height > max_pixels:
        raise ImageError(f"{name}: image is {width}x{height} = {width * height / 1e6:.1f} megapixels, "
                         f"more than the {max_pixels / 1e6:g} megapixel limit; scale it down first")


def to_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """8-bit pixels with 1, 3 or 4 channels: 16-bit is scaled (65535 -> 255), (H, W, 1) squeezed. Pure."""
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)  # rounds and saturates
    elif image.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}; save it as 8- or 16-bit")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
        return image
    raise ImageError(f"{name}: unsupported layout {image.shape}; expected gray, BGR or BGRA")


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own logging for a moment (it prints decoder errors to stderr).

    The level is the process's: callers hold native_stderr's lock, so two
    decodes never save and restore it crosswise.
    """
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # old OpenCV builds without the logging module
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def reduction(width: int, height: int, working_side: int | None, limit: int | None = None) -> int:
    """1, 2, 4, ...: how much smaller an image may be for a caller that shrinks it
    to `working_side` px (longest side) anyway; at most `limit`. Pure.

    The longest side stays at least REDUCED_DECODE_MARGIN times the working
    side, so the caller's own area-averaging shrink still does the last,
    larger step.
    """
    if not working_side:
        return 1
    scale = 1
    while (limit is None or scale < limit) and max(width, height) // (2 * scale) >= REDUCED_DECODE_MARGIN * working_side:
        scale *= 2
    return scale


def jpeg_scale(width: int, height: int, working_side: int | None) -> int:
    """1, 2, 4 or 8: how much smaller a JPEG may be decoded for a caller that
    shrinks it to `working_side` px (longest side) anyway. Pure.

    libjpeg scales in the frequency domain while decoding: a 4000x3000 photo
    took 35 ms at 1/4 against 70 ms in full here, and the shrink after it 3.6
    ms against 38 ms.
    """
    return reduction(width, height, working_side, limit=8)


def reduce(image: np.ndarray, scale: int) -> np.ndarray:
    """`image` area-averaged to 1/scale of its size, in bands of rows, whatever its depth.

    With an alpha channel the colours are premultiplied by it first and
    divided again after, so compositing the result onto white gives what
    compositing the full image and then shrinking it would: transparent
    pixels' colours, often black, don't bleed into the garment's edge.
    """
    if scale == 1:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width / scale)), max(1, height // scale))
    if image.ndim == 2 or image.shape[2] != 4:
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    rows = max(scale, REDUCE_BAND_BYTES // (width * 4 * 4) // scale * scale)
    bands = []
    for top in range(0, size[1] * scale, rows):
        band = image[top:min(top + rows, size[1] * scale)].astype(np.float32)
        band[:, :, :3] *= band[:, :, 3:4]
        bands.append(cv2.resize(band, (size[0], band.shape[0] // scale), interpolation=cv2.INTER_AREA))
    reduced = np.concatenate(bands)
    alpha = reduced[:, :, 3:4]
    reduced[:, :, :3] /= np.where(alpha > 0, alpha, 1)
    return np.rint(reduced).astype(image.dtype)


def decode(data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
           warn: Callable[[str], None] | None = None, working_side: int | None = None,
           max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Encoded image bytes -> uint8 gray (H, W), BGR (H, W, 3) or BGRA (H, W, 4).

    A damaged JPEG can still decode (to grey blocks or smears) with libjpeg
    printing "Corrupt JPEG data: ..." on stderr, naming no file. Those lines
    go to `warn` as "<name>: <line>"; without `warn` they are passed on as is.
    `working_side`: the longest side the caller shrinks the image to; a large
    image is then returned reduced (`reduction`; a JPEG is decoded reduced).
    None: full size. `max_bytes`: the most the decoder may allocate, from the
    header, before anything is decoded.

    Safe from several threads: the decoder runs under native_stderr's lock
    (fd 2 and OpenCV's log level are the process's), so decodes take turns.
    """
    not_decodable = f"{name}: not a decodable image (truncated or not {SUPPORTED})"
    try:
        header = header_info(data)
    except Truncated:
        raise ImageError(f"{name}: truncated {sniff_format(data).upper()} file "
                         "(it ends before the image data does)") from None
    except ValueError as e:
        raise ImageError(f"{name}: damaged {sniff_format(data).upper()} file ({e})") from None
    if header is None:  # no header to size it by: TIFF, GIF, ... or not an image at all
        raise ImageError(not_decodable)
    check_pixels(name, header.width, header.height, max_pixels)
    # JPEG: ANYCOLOR|ANYDEPTH keeps gray as gray and applies the EXIF
    # orientation of phone photos (IMREAD_UNCHANGED would ignore it; JPEG has
    # no alpha to lose, and CMYK is converted to BGR). Other formats:
    # UNCHANGED keeps the alpha channel.
    scale = jpeg_scale(header.width, header.height, working_side) if header.format == "jpeg" else 1
    check_bytes(name, header, scale, max_bytes)
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if header.format == "jpeg" else cv2.IMREAD_UNCHANGED
    # The IMREAD_REDUCED_GRAYSCALE_* bits set the scale alone; ANYCOLOR keeps colour or gray.
    flags |= {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
              8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[scale]
    # Our messages replace OpenCV's log lines about bad data; libjpeg's warnings are kept.
    with native_stderr.captured() as decoder_lines, _quiet_opencv():
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error:
            image = None
    if image is None or image.size == 0:
        raise ImageError(not_decodable)
    if warn is None:
        native_stderr.write(decoder_lines)
    else:
        for line in filter(str.strip, decoder_lines):
            warn(f"{name}: {line.strip()}")
    image = reduce(image, reduction(image.shape[1], image.shape[0], working_side))
    return to_uint8(image, name)


def check_bytes(name: str, header: ImageHeader, scale: int, max_bytes: int) -> None:
    """ImageError when decoding would allocate more than `max_bytes`. Pure."""
    needed = header.decoding_bytes(scale)
    if needed > max_bytes:
        depth = f"{8 * header.sample_bytes}-bit " if header.sample_bytes > 1 else ""
        raise ImageError(f"{name}: decoding this {header.width}x{header.height} {depth}{header.format.upper()} "
                         f"with {header.channels} channel{'s' if header.channels > 1 else ''} would take "
                         f"{needed / 2**20:.0f} MB, more than the {max_bytes / 2**20:.0f} MB allowed; "
                         "scale it down or save it as an 8-bit JPEG first")


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS, warn: Callable[[str], None] | None = None,
               working_side: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an image file -> uint8 gray (H, W), BGR (H, W, 3) or BGRA (H, W, 4).

    `path` may be str, bytes or a PathLike, including non-UTF-8 names.
    Raises ImageError with a one-line message for every kind of bad file.
    `warn`, `working_side` and `max_bytes`: as in `decode`.
    """
    return decode(read_bytes(path), display_path(path), max_pixels, warn, working_side, max_bytes)


def is_image_name(path) -> bool:
    """Whether a file name has one of the image extensions `classify` looks for in directories. Pure."""
    return os.fsdecode(path).lower().endswith(IMAGE_EXTENSIONS)


def read_model_input(path, preprocess, size: tuple[int, int], warn=None):
    """An image file -> the model input `preprocess` makes of it, uint8 `size` (h, w).

    The one path from a file to what the model sees, shared by `classify` and
    `tools/real_photos`, so the benchmark measures what users get. Raises
    ImageError for unreadable files; `warn` gets the decoder's complaints about
    a damaged file that still decoded.
    """
    # photo_to_input works at WORK_SIDE px and the naive baseline at the model's
    # 28, so a large JPEG may decode at a reduced scale for either.
    from .photo import WORK_SIDE
    return preprocess(read_image(path, warn=warn, working_side=WORK_SIDE), size)
