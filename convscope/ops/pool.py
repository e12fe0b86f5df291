"""Max pooling: keep the largest value of each window. No parameters.

Images are (N, H, W, C). Windows of pool_size slide with the given stride (the default stride equals
the pool size: non-overlapping windows, 2x2 -> half the height and width). Rows and columns that do
not fill a whole window are dropped (PyTorch's and Keras' default).

The backward pass sends each window's gradient to the *first* maximum in row-major order, as
PyTorch does. Ties are common (a digit's flat background, saturated ink), and sending the gradient
to every tied maximum would multiply it.

Global average pooling (at the end of this file) averages each channel over the whole image:
(N, H, W, C) -> (N, C), like torch.nn.AdaptiveAvgPool2d(1) followed by nn.Flatten().
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convscope.ops.conv import output_size


def pool_output_shape(input_shape, pool_size: tuple[int, int], stride: int):
    """(H, W, C) -> (H_out, W_out, C)."""
    h, w, c = input_shape
    return (
        output_size(h, pool_size[0], stride, (0, 0)),
        output_size(w, pool_size[1], stride, (0, 0)),
        c,
    )


def maxpool2d_forward(x, pool_size=(2, 2), stride=None):
    """x: (N, H, W, C) -> y: (N, H_out, W_out, C) and a cache for maxpool2d_backward."""
    if x.ndim != 4:
        raise ValueError(f"maxpool2d expects images of shape (N, H, W, C), got shape {x.shape}")
    ph, pw = pool_size
    stride = ph if stride is None else stride
    out_h, out_w, _ = pool_output_shape(x.shape[1:], pool_size, stride)
    if (ph, pw) == (stride, stride) == (2, 2):
        return _pairwise_forward(x, out_h, out_w)
    if (ph, pw) == (stride, stride):
        return _tiled_forward(x, ph, out_h, out_w)
    return _windowed_forward(x, (ph, pw), stride, out_h, out_w)


def maxpool2d(x, pool_size=(2, 2), stride=None):
    """Inference-only max pooling: the same y as maxpool2d_forward, without the backward cache."""
    ph, pw = pool_size
    stride = ph if stride is None else stride
    if (ph, pw) == (stride, stride) == (2, 2):
        out_h, out_w, _ = pool_output_shape(x.shape[1:], pool_size, stride)
        top_left, top_right, bottom_left, bottom_right = _quarters(x, out_h, out_w)
        return np.maximum(np.maximum(top_left, top_right), np.maximum(bottom_left, bottom_right))
    return maxpool2d_forward(x, pool_size, stride)[0]


def maxpool2d_backward(dy, cache):
    """dy: (N, H_out, W_out, C) -> dx: (N, H, W, C)."""
    backward = {"pairwise": _pairwise_backward, "tiled": _tiled_backward, "windowed": _windowed_backward}
    return backward[cache[0]](dy, cache)


# Fastest path, 2x2 windows with stride 2: the maximum of pairwise maxima. The comparisons that
# picked each winner (left over right on ties, top over bottom on ties) are the first-max rule.


def _quarters(x, out_h, out_w):
    """The top-left, top-right, bottom-left and bottom-right pixel of every 2x2 tile, as views."""
    x = x[:, : 2 * out_h, : 2 * out_w, :]
    return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


def _pairwise_forward(x, out_h, out_w):
    top_left, top_right, bottom_left, bottom_right = _quarters(x, out_h, out_w)
    top = np.maximum(top_left, top_right)
    bottom = np.maximum(bottom_left, bottom_right)
    y = np.maximum(top, bottom)
    winners = (top_left >= top_right, bottom_left >= bottom_right, top >= bottom)
    return y, ("pairwise", x.shape, winners)


def _pairwise_backward(dy, cache):
    _, x_shape, (left_wins_top, left_wins_bottom, top_wins) = cache
    dx = np.zeros(x_shape, dtype=dy.dtype)
    top_left, top_right, bottom_left, bottom_right = _quarters(dx, *dy.shape[1:3])
    d_top = dy * top_wins
    d_bottom = dy - d_top
    np.multiply(d_top, left_wins_top, out=top_left)
    np.subtract(d_top, top_left, out=top_right)
    np.multiply(d_bottom, left_wins_bottom, out=bottom_left)
    np.subtract(d_bottom, bottom_left, out=bottom_right)
    return dx


# Fast path: non-overlapping square windows are a reshape of the image into tiles.


def _tiles(x, k, out_h, out_w):
    """(N, H, W, C) -> (N, H_out, k, W_out, k, C) view of the whole tiles."""
    n, _, _, c = x.shape
    return x[:, : out_h * k, : out_w * k, :].reshape(n, out_h, k, out_w, k, c)


def _tiled_forward(x, k, out_h, out_w):
    tiles = _tiles(x, k, out_h, out_w)
    y = tiles.max(axis=(2, 4))
    return y, ("tiled", x, y, k)


def _tiled_backward(dy, cache):
    _, x, y, k = cache
    n, out_h, out_w, c = dy.shape
    dx = np.zeros_like(x)
    tiles = _tiles(x, k, out_h, out_w)
    dx_tiles = _tiles(dx, k, out_h, out_w)
    taken = np.zeros(y.shape, dtype=bool)
    for i in range(k):
        for j in range(k):
            first = (tiles[:, :, i, :, j, :] == y) & ~taken
            dx_tiles[:, :, i, :, j, :] = np.where(first, dy, 0)
            taken |= first
    return dx


# Plain path: any window and stride, overlapping windows included.


def _windowed_forward(x, pool_size, stride, out_h, out_w):
    n, _, _, c = x.shape
    ph, pw = pool_size
    sn, sh, sw, sc = x.strides
    windows = as_strided(
        x,
        shape=(n, out_h, out_w, c, ph, pw),
        strides=(sn, sh * stride, sw * stride, sc, sh, sw),
        writeable=False,
    ).reshape(n, out_h, out_w, c, ph * pw)
    argmax = windows.argmax(axis=-1)  # argmax returns the first maximum
    y = np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]
    return y, ("windowed", x.shape, argmax, pool_size, stride)


def _windowed_backward(dy, cache):
    _, x_shape, argmax, (ph, pw), stride = cache
    n, out_h, out_w, c = dy.shape
    ni, hi, wi, ci = np.indices((n, out_h, out_w, c), sparse=True)
    rows = hi * stride + argmax // pw
    cols = wi * stride + argmax % pw
    dx = np.zeros(x_shape, dtype=dy.dtype)
    np.add.at(dx, (ni, rows, cols, ci), dy)
    return dx


# Global average pooling: one number per channel, the mean over the whole image.


def global_avgpool2d_forward(x):
    """x: (N, H, W, C) -> y: (N, C), the mean of each channel over H and W; the cache is x's shape."""
    if x.ndim != 4:
        raise ValueError(f"global_avgpool2d expects images of shape (N, H, W, C), got shape {x.shape}")
    return x.mean(axis=(1, 2)), x.shape


def global_avgpool2d_backward(dy, cache):
    """dy: (N, C) -> dx: (N, H, W, C): each pixel gets 1 / (H * W) of its channel's gradient."""
    n, h, w, c = cache
    share = dy / (h * w)
    return np.ascontiguousarray(np.broadcast_to(share[:, None, None, :], (n, h, w, c)))
