"""Data augmentation as pure numpy functions on whole uint8 batches.

Why numpy and not Keras preprocessing layers: each epoch's augmented copy of
the training set is a function of (seed, epoch) alone, so a run is
reproducible no matter how TensorFlow schedules its threads, and the same
function is trivially testable. A full epoch (54,000 images) takes about a
second on one core, small next to the training step.

All functions take images as uint8 (N, 28, 28) and a numpy Generator, and
return a new array; inputs are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    max_shift: int = 2  # pixels, each axis; garments in the dataset are centred to within a pixel or two
    flip: bool = True  # left-right mirror: every class is (near) symmetric that way; up-down is not
    erase_prob: float = 0.2  # random erasing (Zhong et al. 2017): occlusion robustness
    erase_max_frac: float = 0.3  # largest erased side as a fraction of 28
    contrast_prob: float = 0.0  # random gain/gamma: photos come out of the photo path dimmer or harsher
    blur_prob: float = 0.0  # box blur: photos are softer than the dataset's sharpened images

    @property
    def enabled(self) -> bool:
        return bool(self.max_shift or self.flip or self.erase_prob or self.contrast_prob or self.blur_prob)


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Translate each image by up to ±max_shift pixels, filling with black (the dataset's background)."""
    if max_shift <= 0:
        return images.copy()
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(0, 2 * max_shift + 1, size=n)
    dx = rng.integers(0, 2 * max_shift + 1, size=n)
    rows = dy[:, None] + np.arange(h)[None, :]  # (N, H)
    cols = dx[:, None] + np.arange(w)[None, :]  # (N, W)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(images)) < 0.5
    out = images.copy()
    out[flip] = out[flip, :, ::-1]
    return out


def random_erase(images: np.ndarray, prob: float, max_frac: float, rng: np.random.Generator) -> np.ndarray:
    """Black out one random rectangle in a fraction `prob` of the images."""
    n, h, w = images.shape
    hit = rng.random(n) < prob
    eh = rng.integers(2, max(3, int(h * max_frac) + 1), size=n)
    ew = rng.integers(2, max(3, int(w * max_frac) + 1), size=n)
    y0 = rng.integers(0, h - eh + 1)
    x0 = rng.integers(0, w - ew + 1)
    yy = np.arange(h)[None, :, None]
    xx = np.arange(w)[None, None, :]
    mask = ((yy >= y0[:, None, None]) & (yy < (y0 + eh)[:, None, None])
            & (xx >= x0[:, None, None]) & (xx < (x0 + ew)[:, None, None]) & hit[:, None, None])
    return np.where(mask, np.uint8(0), images)


def random_contrast(images: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Random gain (0.6..1.2) and gamma (0.7..1.4) on a fraction `prob` of the images."""
    n = len(images)
    hit = rng.random(n) < prob
    gain = np.where(hit, rng.uniform(0.6, 1.2, n), 1.0)[:, None, None]
    gamma = np.where(hit, rng.uniform(0.7, 1.4, n), 1.0)[:, None, None]
    x = (images.astype(np.float32) / 255.0) ** gamma * gain
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def random_blur(images: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """3x3 box blur on a fraction `prob` of the images."""
    hit = rng.random(len(images)) < prob
    if not hit.any():
        return images.copy()
    x = np.pad(images[hit].astype(np.uint16), ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = images.shape[1:]
    acc = sum(x[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    out = images.copy()
    out[hit] = (acc // 9).astype(np.uint8)
    return out


def augment(images: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One augmented copy of `images`; deterministic given the generator's state."""
    out = random_shift(images, config.max_shift, rng)
    if config.flip:
        out = random_flip(out, rng)
    if config.contrast_prob:
        out = random_contrast(out, config.contrast_prob, rng)
    if config.blur_prob:
        out = random_blur(out, config.blur_prob, rng)
    if config.erase_prob:
        out = random_erase(out, config.erase_prob, config.erase_max_frac, rng)
    return out
