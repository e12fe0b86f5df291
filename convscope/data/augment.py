"""On-the-fly augmentation of training batches: random horizontal flips and random crops from a
zero-padded image (a random shift of up to `crop_padding` pixels). Applied only in training."""

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


@dataclass(frozen=True)
class Augmentation:
    """A callable (batch, rng) -> augmented batch, for `fit(augment=...)`."""

    flip: bool = True
    crop_padding: int = 4

    def __post_init__(self):
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"Augmentation: crop_padding must be an int >= 0, got {self.crop_padding!r}")

    def get_config(self) -> dict:
        return {"flip": bool(self.flip), "crop_padding": self.crop_padding}

    def __call__(self, x, rng: np.random.Generator):
        if self.flip:
            x = random_horizontal_flip(x, rng)
        return random_crop(x, self.crop_padding, rng)
