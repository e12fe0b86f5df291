"""Pooling: keep the largest value (max pooling) or the mean (average pooling) of each window.
No parameters.

Images are (N, H, W, C). Windows of pool_size slide with the given stride (the default stride equals
the pool size: non-overlapping windows, 2x2 -> half the height and width). The rest of the vocabulary
is PyTorch's (torch.nn.MaxPool2d, torch.nn.AvgPool2d), per spatial axis:
- padding p (an int, a pair (ph, pw) or ((top, bottom), (left, right))): max pooling pads with -inf
  (padding never wins), average pooling with zeros; at most half the window, as torch requires;
- ceil_mode: rows and columns that do not fill a whole window are dropped by default (floor), kept in
  one more, partial, window with ceil_mode=True -- unless that window would start in the padding
  after the image:

      out = floor_or_ceil((size + p_before + p_after - pool) / stride) + 1

- count_include_pad (average pooling): divide by the window's size, padding included (default), or
  by the number of image pixels in it. A ceil-mode window hanging past the padding is divided by the
  part of it inside the padded image, as torch does.

The backward pass of max pooling sends each window's gradient to the *first* maximum in row-major
order, as PyTorch does. Ties are common (a digit's flat background, saturated ink), and sending the
gradient to every tied maximum would multiply it.

Global average pooling (at the end of this file) averages each channel over the whole image:
(N, H, W, C) -> (N, C), like torch.nn.AdaptiveAvgPool2d(1) followed by nn.Flatten().
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convscope.ops.conv import Padding, _offsets, as_pair, output_size, resolve_padding

NO_PADDING = ((0, 0), (0, 0))


def pool_padding(padding, pool_size) -> Padding:
    """0, (ph, pw) or ((top, bottom), (left, right)) -> ((top, bottom), (left, right)), each side at
    most half the window (torch's rule: so every window holds at least one image pixel)."""
    if isinstance(padding, str):
        raise ValueError(f"pooling padding must be an int >= 0 or a pair of them, got {padding!r}")
    pads = resolve_padding(padding, pool_size)
    for (before, after), size in zip(pads, pool_size, strict=True):
        if max(before, after) > size // 2:
            raise ValueError(
                f"padding must be at most half the window (as in torch), got padding {before}+{after} "
                f"for a window of {size}"
            )
    return pads


def pool_output_size(size: int, pool: int, stride: int, pad=(0, 0), ceil_mode: bool = False) -> int:
    """One axis of the output size rule (torch's, ceil_mode included), or a ValueError if the window
    does not fit."""
    out = output_size(size, pool, stride, pad)
    if ceil_mode and (size + pad[0] + pad[1] - pool) % stride:
        out += 1  # one more window, partly past the padded image ...
        if (out - 1) * stride >= size + pad[0]:
            out -= 1  # ... unless it would start in the padding after the image
    return out


def pool_output_shape(input_shape, pool_size, stride, padding: Padding = NO_PADDING, ceil_mode=False):
    """(H, W, C) -> (H_out, W_out, C)."""
    h, w, c = input_shape
    sh, sw = as_pair(stride)
    return (
        pool_output_size(h, pool_size[0], sh, padding[0], ceil_mode),
        pool_output_size(w, pool_size[1], sw, padding[1], ceil_mode),
        c,
    )


def _pool_arguments(x, pool_size, stride, padding, ceil_mode, what: str):
    if x.ndim != 4:
        raise ValueError(f"{what} expects images of shape (N, H, W, C), got shape {x.shape}")
    pool_size = as_pair(pool_size)
    stride = pool_size if stride is None else as_pair(stride)
    pads = pool_padding(padding, pool_size)
    out_h, out_w, _ = pool_output_shape(x.shape[1:], pool_size, stride, pads, ceil_mode)
    return pool_size, stride, pads, out_h, out_w


def _padded_shape(x_shape, pool_size, stride, pads, out_hw):
    """(N, H', W', C) of a buffer holding the padded image and every window, ceil-mode ones included."""
    n, h, w, c = x_shape
    (top, bottom), (left, right) = pads
    rows = (out_hw[0] - 1) * stride[0] + pool_size[0]
    cols = (out_hw[1] - 1) * stride[1] + pool_size[1]
    return n, max(rows, top + h + bottom), max(cols, left + w + right), c


def _pad_to_windows(x, pool_size, stride, pads, out_hw, fill):
    """x padded by `pads` with `fill`, and by more `fill` below and right for ceil-mode windows."""
    _, h, w, _ = x.shape
    (top, _), (left, _) = pads
    xp = np.full(_padded_shape(x.shape, pool_size, stride, pads, out_hw), fill, dtype=x.dtype)
    xp[:, top : top + h, left : left + w, :] = x
    return xp


def maxpool2d_forward(x, pool_size=(2, 2), stride=None, padding=0, ceil_mode=False):
    """x: (N, H, W, C) -> y: (N, H_out, W_out, C) and a cache for maxpool2d_backward.

    pool_size and stride: an int or a pair (stride None: the pool size); padding and ceil_mode as in
    the module docstring.
    """
    pool_size, stride, pads, out_h, out_w = _pool_arguments(
        x, pool_size, stride, padding, ceil_mode, "maxpool2d"
    )
    (ph, pw), (sh, sw) = pool_size, stride
    if pads != NO_PADDING or (out_h - 1) * sh + ph > x.shape[1] or (out_w - 1) * sw + pw > x.shape[2]:
        return _padded_forward(x, pool_size, stride, pads, out_h, out_w)
    if (ph, pw) == (sh, sw) == (2, 2):
        return _pairwise_forward(x, out_h, out_w)
    if ph == pw == sh == sw:
        return _tiled_forward(x, ph, out_h, out_w)
    return _windowed_forward(x, pool_size, stride, out_h, out_w)


def maxpool2d(x, pool_size=(2, 2), stride=None, padding=0, ceil_mode=False):
    """Inference-only max pooling: the same y as maxpool2d_forward, without the backward cache."""
    pool_size = as_pair(pool_size)
    stride = pool_size if stride is None else as_pair(stride)
    if pool_size == stride == (2, 2) and padding in (0, NO_PADDING) and not ceil_mode:
        out_h, out_w, _ = pool_output_shape(x.shape[1:], pool_size, stride)
        top_left, top_right, bottom_left, bottom_right = _quarters(x, out_h, out_w)
        return np.maximum(np.maximum(top_left, top_right), np.maximum(bottom_left, bottom_right))
    return maxpool2d_forward(x, pool_size, stride, padding, ceil_mode)[0]


def maxpool2d_backward(dy, cache):
    """dy: (N, H_out, W_out, C) -> dx: (N, H, W, C)."""
    backward = {
        "pairwise": _pairwise_backward,
        "tiled": _tiled_backward,
        "windowed": _windowed_backward,
        "padded": _padded_backward,
    }
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
    sh, sw = as_pair(stride)
    bytes_n, bytes_h, bytes_w, bytes_c = x.strides
    windows = as_strided(
        x,
        shape=(n, out_h, out_w, c, ph, pw),
        strides=(bytes_n, bytes_h * sh, bytes_w * sw, bytes_c, bytes_h, bytes_w),
        writeable=False,
    ).reshape(n, out_h, out_w, c, ph * pw)
    argmax = windows.argmax(axis=-1)  # argmax returns the first maximum
    y = np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]
    return y, ("windowed", x.shape, argmax, pool_size, (sh, sw))


def _windowed_backward(dy, cache):
    _, x_shape, argmax, (ph, pw), stride = cache
    sh, sw = as_pair(stride)
    n, out_h, out_w, c = dy.shape
    ni, hi, wi, ci = np.indices((n, out_h, out_w, c), sparse=True)
    rows = hi * sh + argmax // pw
    cols = wi * sw + argmax % pw
    dx = np.zeros(x_shape, dtype=dy.dtype)
    np.add.at(dx, (ni, rows, cols, ci), dy)
    return dx


# Padding and ceil mode: the plain path on the image padded with -inf (which never wins a window),
# and the gradient of the padded image cut back to the image.


def _padded_forward(x, pool_size, stride, pads, out_h, out_w):
    xp = _pad_to_windows(x, pool_size, stride, pads, (out_h, out_w), -np.inf)
    y, windowed = _windowed_forward(xp, pool_size, stride, out_h, out_w)
    return y, ("padded", windowed, x.shape, pads)


def _padded_backward(dy, cache):
    _, windowed, (_, h, w, _), ((top, _), (left, _)) = cache
    return np.ascontiguousarray(_windowed_backward(dy, windowed)[:, top : top + h, left : left + w, :])


# Average pooling: the sum of each window (one shifted, strided slice of the zero-padded image per
# window offset, as in conv's im2col) divided by the window's count.


def _window_counts(size: int, pool: int, stride: int, pad, out: int, count_include_pad: bool):
    """For each output position along one axis: the pixels its window counts (torch's divisor)."""
    starts = np.arange(out) * stride - pad[0]
    ends = np.minimum(starts + pool, size + pad[1])  # a ceil-mode window stops at the padding's end
    if count_include_pad:
        return ends - starts
    return np.minimum(ends, size) - np.maximum(starts, 0)


def avgpool2d_forward(x, pool_size=(2, 2), stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """x: (N, H, W, C) -> y: (N, H_out, W_out, C), the mean of each window, and a cache for
    avgpool2d_backward. Arguments as maxpool2d_forward's, plus count_include_pad (module docstring)."""
    pool_size, stride, pads, out_h, out_w = _pool_arguments(
        x, pool_size, stride, padding, ceil_mode, "avgpool2d"
    )
    n, h, w, c = x.shape
    rows = _window_counts(h, pool_size[0], stride[0], pads[0], out_h, count_include_pad)
    cols = _window_counts(w, pool_size[1], stride[1], pads[1], out_w, count_include_pad)
    divisor = (rows[:, None] * cols[None, :]).astype(x.dtype)[None, :, :, None]  # (1, H_out, W_out, 1)
    xp = _pad_to_windows(x, pool_size, stride, pads, (out_h, out_w), 0)
    total = np.zeros((n, out_h, out_w, c), dtype=x.dtype)
    for _, _, window_rows, window_cols in _offsets(pool_size, stride, (out_h, out_w)):
        total += xp[:, window_rows, window_cols, :]
    return total / divisor, (x.shape, divisor, pool_size, stride, pads)


def avgpool2d_backward(dy, cache):
    """dy: (N, H_out, W_out, C) -> dx: (N, H, W, C): each window's gradient shared by its pixels."""
    x_shape, divisor, pool_size, stride, pads = cache
    (_, h, w, _), ((top, _), (left, _)) = x_shape, pads
    share = dy / divisor
    dxp = np.zeros(_padded_shape(x_shape, pool_size, stride, pads, dy.shape[1:3]), dtype=dy.dtype)
    for _, _, window_rows, window_cols in _offsets(pool_size, stride, dy.shape[1:3]):
        dxp[:, window_rows, window_cols, :] += share
    return np.ascontiguousarray(dxp[:, top : top + h, left : left + w, :])


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
