"""On-the-fly augmentation of training batches: random horizontal flips, random crops from a
zero-padded image (a random shift of up to `crop_padding` pixels) and Cutout (a random square set to
zero). Applied only in training."""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided


def random_horizontal_flip(x, rng: np.random.Generator):
    """(N, H, W, C) -> a copy where each image is mirrored left-right with probability 1/2."""
    flipped = rng.random(x.shape[0]) < 0.5
    out = x.copy()
    out[flipped] = x[flipped, :, ::-1, :]
    return out


def random_crop(x, padding: int, rng: np.random.Generator):
    """(N, H, W, C) -> each image cropped at a random offset from itself padded by `padding` zeros."""
    if padding == 0:
        return x
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
    padded[:, padding : padding + h, padding : padding + w] = x
    sn, sh, sw, sc = padded.strides
    windows = as_strided(
        padded, shape=(n, 2 * padding + 1, 2 * padding + 1, h, w, c), strides=(sn, sh, sw, sh, sw, sc),
        writeable=False,
    )  # fmt: skip
    rows, cols = rng.integers(0, 2 * padding + 1, size=(2, n))
    return windows[np.arange(n), rows, cols]


def random_cutout(x, size: int, rng: np.random.Generator):
    """(N, H, W, C) -> a copy where a size x size square of each image, centred on a random pixel, is
    set to zero (black); near the edges part of the square falls outside (DeVries & Taylor 2017)."""
    if size == 0:
        return x
    n, h, w, _ = x.shape
    corners = rng.integers(0, (h, w), size=(n, 2)) - size // 2  # the squares' top-left pixels
    rows = np.arange(h) - corners[:, :1]  # (N, H): each row's place in its image's square
    cols = np.arange(w) - corners[:, 1:]  # (N, W)
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return np.where(inside[..., None], x.dtype.type(0), x)


@dataclass(frozen=True)
class Augmentation:
    """A callable (batch, rng) -> augmented batch, for `fit(augment=...)`."""

    flip: bool = True
    crop_padding: int = 4
    cutout: int = 0

    def __post_init__(self):
        for name in ("crop_padding", "cutout"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Augmentation: {name} must be an int >= 0, got {value!r}")

    def get_config(self) -> dict:
        config = {"flip": bool(self.flip), "crop_padding": self.crop_padding}
        return {**config, "cutout": self.cutout} if self.cutout else config  # files without it unchanged

    def __call__(self, x, rng: np.random.Generator):
        if self.flip:
            x = random_horizontal_flip(x, rng)
        return random_cutout(random_crop(x, self.crop_padding, rng), self.cutout, rng)
