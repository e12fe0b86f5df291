"""2D convolution: a kernel slides over the image and takes a dot product at every stop.

Layout is channels-last everywhere: images are (N, H, W, C) and a layer's kernels are stored
together as one array of shape (kh, kw, C_in, C_out) -- C_out kernels of shape (kh, kw, C_in).

The sliding dot product is computed as one matrix product (im2col): every (kh, kw, C_in) patch
the kernel visits is copied into a row of a "columns" matrix, and all kernels are applied at once
by multiplying that matrix with the kernels reshaped to (kh * kw * C_in, C_out).

Output size rule, per spatial axis (p_before + p_after is 2p for symmetric padding):

    out = floor((size + p_before + p_after - kernel) / stride) + 1
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

Padding = tuple[tuple[int, int], tuple[int, int]]


def resolve_padding(padding, kernel_size: tuple[int, int], stride: int) -> Padding:
    """Turn 'same', 'valid' or an int into ((top, bottom), (left, right)) zero padding.

    'same' keeps the spatial size and so needs stride 1; an even kernel gets the extra row and
    column of zeros at the bottom and right (as PyTorch and TensorFlow do).
    """
    kh, kw = kernel_size
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            if stride != 1:
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)
        raise ValueError(f"padding must be 'same', 'valid' or an int >= 0, got {padding!r}")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        p = int(padding)
        return ((p, p), (p, p))
    raise ValueError(f"padding must be 'same', 'valid' or an int >= 0, got {padding!r}")


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    """floor((size + p_before + p_after - kernel) / stride) + 1, or a ValueError if below 1."""
    padded = size + pad[0] + pad[1]
    if padded < kernel:
        raise ValueError(
            f"kernel of size {kernel} does not fit in input of size {size} with padding "
            f"{pad[0]}+{pad[1]} (padded size {padded} < {kernel})"
        )
    return (padded - kernel) // stride + 1


def conv_output_shape(input_shape, kernel_size, stride: int, padding: Padding, filters: int):
    """(H, W, C_in) -> (H_out, W_out, filters) under the output size rule."""
    h, w, _ = input_shape
    return (
        output_size(h, kernel_size[0], stride, padding[0]),
        output_size(w, kernel_size[1], stride, padding[1]),
        filters,
    )


def _pad(x: np.ndarray, padding: Padding) -> np.ndarray:
    """Zero-pad the spatial axes of (N, H, W, C) (a fresh array; x itself when no padding)."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    n, h, w, c = x.shape
    xp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    xp[:, top : top + h, left : left + w, :] = x
    return xp


def _offsets(kernel_size, stride: int, out_hw):
    """For each kernel offset (i, j): the row and column slices of the padded input it visits."""
    kh, kw = kernel_size
    out_h, out_w = out_hw
    for i in range(kh):
        rows = slice(i, i + stride * (out_h - 1) + 1, stride)
        for j in range(kw):
            yield i, j, rows, slice(j, j + stride * (out_w - 1) + 1, stride)


def _patches(xp: np.ndarray, kernel_size, stride: int, out_hw) -> np.ndarray:
    """A read-only (N, H_out, W_out, kh, kw, C) view of every patch the kernel visits."""
    n, _, _, c = xp.shape
    kh, kw = kernel_size
    sn, sh, sw, sc = xp.strides
    return as_strided(
        xp,
        shape=(n, out_hw[0], out_hw[1], kh, kw, c),
        strides=(sn, sh * stride, sw * stride, sh, sw, sc),
        writeable=False,
    )


def im2col(x: np.ndarray, kernel_size, stride: int, padding: Padding) -> np.ndarray:
    """(N, H, W, C) -> columns (N * H_out * W_out, kh * kw * C), one row per kernel position.

    Channels-last makes each patch row a few long contiguous runs (kw * C values), so one strided
    copy builds the matrix. With a single input channel those runs are too short; then the buffer
    is built offset-major, one contiguous shifted image plane per kernel offset, and the columns
    are returned as its transpose (a Fortran-ordered view that matmul takes as is).
    """
    n, h, w, c = x.shape
    kh, kw = kernel_size
    out_h, out_w, _ = conv_output_shape((h, w, c), kernel_size, stride, padding, 0)
    xp = np.ascontiguousarray(_pad(x, padding))
    if c == 1:
        planes = np.empty((kh, kw, n, out_h, out_w), dtype=x.dtype)
        for i, j, rows, columns in _offsets(kernel_size, stride, (out_h, out_w)):
            planes[i, j] = xp[:, rows, columns, 0]
        return planes.reshape(kh * kw, n * out_h * out_w).T
    patches = _patches(xp, kernel_size, stride, (out_h, out_w))
    return patches.reshape(n * out_h * out_w, kh * kw * c)


def col2im(blocks: np.ndarray, input_shape, kernel_size, stride: int, padding: Padding):
    """Adjoint of im2col: add each column entry back to the input pixel it was copied from.

    blocks: the columns' gradient as one contiguous block per kernel offset,
    (kh * kw, N * H_out * W_out, C) -> (N, H, W, C). Per-offset blocks make every addition a
    run of long contiguous reads instead of a gather of C-sized pieces.
    """
    n, h, w, c = input_shape
    (top, bottom), (left, right) = padding
    out_h, out_w, _ = conv_output_shape((h, w, c), kernel_size, stride, padding, 0)
    blocks = blocks.reshape(-1, n, out_h, out_w, c)
    dxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=blocks.dtype)
    for k, (_, _, rows, columns) in enumerate(_offsets(kernel_size, stride, (out_h, out_w))):
        dxp[:, rows, columns, :] += blocks[k]
    return dxp[:, top : top + h, left : left + w, :]


def conv2d_forward(x, w, b, stride: int = 1, padding="valid"):
    """Convolve a batch of images with a bank of kernels.

    x: (N, H, W, C_in), w: (kh, kw, C_in, C_out), b: (C_out,) or None.
    Returns y: (N, H_out, W_out, C_out) and a cache for conv2d_backward.
    """
    if x.ndim != 4:
        raise ValueError(f"conv2d expects images of shape (N, H, W, C), got shape {x.shape}")
    kh, kw, c_in, c_out = w.shape
    if x.shape[3] != c_in:
        raise ValueError(f"conv2d: kernels have {c_in} channel(s) but the input has {x.shape[3]}")
    pads = padding if isinstance(padding, tuple) else resolve_padding(padding, (kh, kw), stride)
    n, h, width, _ = x.shape
    out_h, out_w, _ = conv_output_shape((h, width, c_in), (kh, kw), stride, pads, c_out)
    cols = im2col(x, (kh, kw), stride, pads)
    y = cols @ w.reshape(kh * kw * c_in, c_out)
    if b is not None:
        y += b
    cache = (cols, x.shape, w, b is not None, stride, pads)
    return y.reshape(n, out_h, out_w, c_out), cache


def conv2d_backward(dy, cache, need_dx: bool = True):
    """Gradients of conv2d_forward.

    dy: (N, H_out, W_out, C_out). Returns dx: (N, H, W, C_in) (None if need_dx is False),
    dw: (kh, kw, C_in, C_out), db: (C_out,) (None if the forward pass had no bias).
    """
    cols, x_shape, w, has_bias, stride, pads = cache
    kh, kw, c_in, c_out = w.shape
    dy2 = dy.reshape(-1, c_out)
    dw = (cols.T @ dy2).reshape(w.shape)
    db = np.ones(dy2.shape[0], dtype=dy.dtype) @ dy2 if has_bias else None  # a matmul beats .sum(0)
    dx = None
    if need_dx:
        kernels_by_offset = w.reshape(kh * kw, c_in, c_out).transpose(0, 2, 1)  # (kh*kw, C_out, C_in)
        dx = col2im(np.matmul(dy2, kernels_by_offset), x_shape, (kh, kw), stride, pads)
    return dx, dw, db
