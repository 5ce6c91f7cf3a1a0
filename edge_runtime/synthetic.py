"""Deterministic synthetic images for benchmarks and checks: integer numpy only
(plus OpenCV's polygon fill), so every machine makes the same bytes and a
result can be compared across machines bit for bit."""

from __future__ import annotations

FRAME_SIZE = (480, 640)  # (height, width) of the synthetic camera frame


def synthetic_frame(height: int = FRAME_SIZE[0], width: int = FRAME_SIZE[1]):
    """A deterministic camera-like BGR frame: a blue T-shirt lying on a wooden floor.

    Integer numpy only (plus OpenCV's polygon fill), so every machine makes
    the same bytes: a warm floor with planks, a lighting gradient and noise,
    and the shirt slightly off-centre, filling about a third of the frame,
    as a handheld photo would.
    """
    import cv2
    import numpy as np
    rng = np.random.Generator(np.random.PCG64(20240611))
    yy, xx = np.mgrid[0:height, 0:width]
    floor = np.empty((height, width, 3), np.int32)
    floor[..., 0], floor[..., 1], floor[..., 2] = 70, 120, 160  # BGR: light brown wood
    plank = (yy * 6 // height) % 2  # six planks, alternately a little darker
    floor -= (plank * 14)[..., None]
    floor += ((xx * 30) // width - 15)[..., None]  # light from the right
    floor[(yy % (height // 6)) < 2] -= 35  # the seams
    s = width / 640.0  # shape coordinates are for 640x480
    shirt = np.array([(250, 95), (300, 80), (340, 95), (390, 80), (440, 95), (505, 165), (470, 205),
                      (430, 180), (432, 400), (258, 400), (260, 180), (220, 205), (185, 165)], np.float64)
    shirt = np.rint(shirt * [s, height / 480.0]).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [shirt], 255)
    cv2.circle(mask, (int(345 * s), int(82 * height / 480)), int(28 * s), 0, -1)  # the neckline
    garment = mask > 0
    floor[garment] = (150, 70, 30)  # BGR: mid blue
    floor[garment] += ((yy[garment] * 40) // height - 20)[:, None]  # folds: shading top to bottom
    floor += rng.integers(-6, 7, size=floor.shape, dtype=np.int32)  # sensor noise
    return np.clip(floor, 0, 255).astype(np.uint8)


def synthetic_photos():
    """(name, image) pairs made with integer numpy only, so every machine makes the same bytes.

    They exercise the photo path's branches: colour and grey, alpha, dark
    garment on a light background and the reverse, odd sizes, up- and
    down-scaling, and an image already 28x28. Each is a clear shape on a
    plain background with little noise: well-conditioned, so segmentation
    doesn't hinge on a rounding difference.
    """
    import numpy as np
    rng = np.random.Generator(np.random.PCG64(20240611))

    def noise(shape, amplitude):
        return rng.integers(-amplitude, amplitude + 1, size=shape, dtype=np.int16)

    def clip(a):
        return np.clip(a, 0, 255).astype(np.uint8)

    out = []
    # A dark T-shirt on a white product-photo background, 480x640 BGR.
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w]
    body = (xx >= 220) & (xx < 420) & (yy >= 120) & (yy < 430)
    sleeves = (yy >= 120) & (yy < 220) & (xx >= 140) & (xx < 500) & (np.abs(xx - 320) + (yy - 120) < 260)
    neck = ((xx - 320) ** 2 + (yy - 115) ** 2) < 40 ** 2
    garment = (body | sleeves) & ~neck
    img = np.full((h, w, 3), 245, np.int16)
    img[garment] = (40, 60, 150)
    out.append(("tshirt_on_white_640x480", clip(img + noise((h, w, 3), 6))))

    # Bright trousers on black, portrait 200x300.
    h, w = 300, 200
    yy, xx = np.mgrid[0:h, 0:w]
    waist = (yy >= 30) & (yy < 70) & (xx >= 50) & (xx < 150)
    legs = (yy >= 70) & (yy < 280) & (((xx >= 50) & (xx < 95)) | ((xx >= 105) & (xx < 150)))
    img = np.zeros((h, w, 3), np.int16)
    img[waist | legs] = (200, 210, 220)
    out.append(("trousers_on_black_200x300", clip(img + noise((h, w, 3), 10))))

    # A bag with a handle, grey, odd size 61x97 (downscale by a non-integer factor).
    h, w = 97, 61
    yy, xx = np.mgrid[0:h, 0:w]
    bag = (yy >= 40) & (yy < 90) & (xx >= 8) & (xx < 53)
    handle = (np.abs((xx - 30) ** 2 + (yy - 40) ** 2 - 18 ** 2) < 60) & (yy < 40)
    img = np.full((h, w), 230, np.int16)
    img[bag | handle] = 70
    out.append(("bag_grey_61x97", clip(img + noise((h, w), 4))))

    # A shoe on a light background with an alpha channel, 128x128 BGRA.
    h, w = 128, 128
    yy, xx = np.mgrid[0:h, 0:w]
    sole = (yy >= 90) & (yy < 100) & (xx >= 10) & (xx < 118)
    upper = (yy >= 60) & (yy < 90) & (xx >= 10) & (xx < 118) & ((xx - 10) * 30 > (90 - yy) * 40)
    img = np.full((h, w, 4), 250, np.int16)
    img[sole | upper, :3] = (30, 30, 30)
    img[..., 3] = 255 - (xx // 2)
    out.append(("sneaker_bgra_128", clip(img + noise((h, w, 4), 3))))

    # A tiny 20x24 colour dress (upscaling), and a 28x28 grey pullover (no resizing).
    h, w = 24, 20
    yy, xx = np.mgrid[0:h, 0:w]
    dress = (yy >= 3) & (yy < 22) & (np.abs(2 * xx - 19) <= 4 + (yy - 3) // 2)
    img = np.full((h, w, 3), (210, 225, 235), np.int16)
    img[dress] = (60, 20, 170)
    out.append(("dress_colour_20x24", clip(img + noise((h, w, 3), 2))))
    h = w = 28
    yy, xx = np.mgrid[0:h, 0:w]
    pullover = (yy >= 4) & (yy < 25) & (((xx >= 8) & (xx < 20)) | ((yy >= 6) & ((xx >= 3) & (xx < 25))))
    img = np.full((h, w), 25, np.int16)
    img[pullover] = 190
    out.append(("pullover_grey_28x28", clip(img + noise((h, w), 3))))
    return out
