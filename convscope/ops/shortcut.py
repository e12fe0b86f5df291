"""The residual block's arithmetic: the paper's option-A shortcut (subsample, then zero channels) and
the sum of the two branches followed by a ReLU."""

import numpy as np


def subsample_zero_pad_forward(x, stride: tuple[int, int], channels: int):
    """x (N, H, W, C) -> (N, ceil(H / sh), ceil(W / sw), channels): every sh-th row and sw-th column
    from the first (the pixels a 3x3 conv with padding 1 and that stride centres on), then
    `channels - C` zero channels after the C given ones (He et al. 2016, option A: no parameters).
    The cache holds the input shape and the stride."""
    sh, sw = stride
    n, h, w, c = x.shape
    if channels < c:
        raise ValueError(f"subsample_zero_pad: channels must be at least the input's {c}, got {channels}")
    y = np.zeros((n, -(-h // sh), -(-w // sw), channels), dtype=x.dtype)
    y[..., :c] = x[:, ::sh, ::sw]
    return y, (x.shape, (sh, sw))


def subsample_zero_pad_backward(dy, cache):
    """The gradient of the kept pixels and channels goes back to them; the others get 0."""
    shape, (sh, sw) = cache
    dx = np.zeros(shape, dtype=dy.dtype)
    dx[:, ::sh, ::sw] = dy[..., : shape[3]]
    return dx


def add_relu_forward(a, b):
    """max(a + b, 0) for two arrays of one shape: a residual block's output. The cache is the mask
    of positive sums."""
    total = a + b
    positive = total > 0
    return total * positive, positive


def add_relu_backward(dy, cache):
    """d/da = d/db = dy where the sum was positive (0 at exactly 0, as torch's ReLU)."""
    return dy * cache
