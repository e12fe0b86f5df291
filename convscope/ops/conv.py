"""2D convolution: a kernel slides over the image and takes a dot product at every stop.

Layout is channels-last everywhere: images are (N, H, W, C) and a layer's kernels are stored
together as one array of shape (kh, kw, C_in / groups, C_out) -- C_out kernels of shape
(kh, kw, C_in / groups); with the default groups=1 that is (kh, kw, C_in, C_out).

The sliding dot product is computed as one matrix product (im2col): every (kh, kw, C_in) patch
the kernel visits is copied into a row of a "columns" matrix, and all kernels are applied at once
by multiplying that matrix with the kernels reshaped to (kh * kw * C_in, C_out).

The vocabulary is PyTorch's (torch.nn.functional.conv2d), per spatial axis:
- stride s: the kernel moves s pixels between stops (a pair (sh, sw) moves differently down and across);
- padding: p_before and p_after zeros around the image ('same', 'valid', an int, a pair (ph, pw) or
  ((top, bottom), (left, right)));
- dilation d: the kernel's taps are d pixels apart, so a k-tap kernel spans d * (k - 1) + 1 pixels;
- groups g: the input channels and the kernels are cut into g groups, and group i's kernels see only
  group i's channels (g == C_in is a depthwise convolution: one channel per kernel, C_out / C_in
  kernels per channel, the channel multiplier).

Output size rule, per spatial axis (p_before + p_after is 2p for symmetric padding):

    out = floor((size + p_before + p_after - d * (kernel - 1) - 1) / stride) + 1
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

Padding = tuple[tuple[int, int], tuple[int, int]]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def as_pair(value) -> tuple[int, int]:
    """2 -> (2, 2); (3, 5) or [3, 5] -> (3, 5). For strides and dilations, already checked."""
    if _is_int(value):
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def resolve_padding(padding, kernel_size: tuple[int, int], stride=1, dilation=1) -> Padding:
    """Turn 'same', 'valid', an int, a pair (ph, pw) or ((top, bottom), (left, right)) into
    ((top, bottom), (left, right)) zero padding (lists are taken as tuples, as from a JSON file).

    'same' keeps the spatial size and so needs stride 1; when the kernel spans an even number of
    pixels (d * (k - 1) odd) the extra row and column of zeros go at the bottom and right (as
    PyTorch and TensorFlow do).
    """
    kh, kw = kernel_size
    dh, dw = as_pair(dilation)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            if as_pair(stride) != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
            span_h, span_w = dh * (kh - 1), dw * (kw - 1)
            return (span_h // 2, span_h - span_h // 2), (span_w // 2, span_w - span_w // 2)
    elif _is_int(padding) and padding >= 0:
        p = int(padding)
        return ((p, p), (p, p))
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(_is_int(p) and p >= 0 for p in padding):
            return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding) and all(
            _is_int(p) and p >= 0 for pair in padding for p in pair
        ):
            (top, bottom), (left, right) = padding
            return (int(top), int(bottom)), (int(left), int(right))
    raise ValueError(
        "padding must be 'same', 'valid' or an int >= 0 (or a pair (ph, pw), or ((top, bottom), "
        f"(left, right))), got {padding!r}"
    )


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int = 1) -> int:
    """floor((size + p_before + p_after - span) / stride) + 1 with span = dilation * (kernel - 1) + 1,
    or a ValueError if the kernel does not fit."""
    padded = size + pad[0] + pad[1]
    span = dilation * (kernel - 1) + 1
    if padded < span:
        spanned = f"kernel of size {kernel}" + (
            f" (dilation {dilation}: spans {span})" if dilation > 1 else ""
        )
        raise ValueError(
            f"{spanned} does not fit in input of size {size} with padding "
            f"{pad[0]}+{pad[1]} (padded size {padded} < {span})"
        )
    return (padded - span) // stride + 1


def conv_output_shape(input_shape, kernel_size, stride, padding: Padding, filters: int, dilation=1):
    """(H, W, C_in) -> (H_out, W_out, filters) under the output size rule."""
    h, w, _ = input_shape
    (sh, sw), (dh, dw) = as_pair(stride), as_pair(dilation)
    return (
        output_size(h, kernel_size[0], sh, padding[0], dh),
        output_size(w, kernel_size[1], sw, padding[1], dw),
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


def _offsets(kernel_size, stride, out_hw, dilation=1):
    """For each kernel offset (i, j): the row and column slices of the padded input it visits."""
    kh, kw = kernel_size
    out_h, out_w = out_hw
    (sh, sw), (dh, dw) = as_pair(stride), as_pair(dilation)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
        for j in range(kw):
            yield i, j, rows, slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)


def _patches(xp: np.ndarray, kernel_size, stride, out_hw, dilation=1) -> np.ndarray:
    """A read-only (N, H_out, W_out, kh, kw, C) view of every patch the kernel visits."""
    n, _, _, c = xp.shape
    kh, kw = kernel_size
    (sh, sw), (dh, dw) = as_pair(stride), as_pair(dilation)
    bytes_n, bytes_h, bytes_w, bytes_c = xp.strides
    return as_strided(
        xp,
        shape=(n, out_hw[0], out_hw[1], kh, kw, c),
        strides=(bytes_n, bytes_h * sh, bytes_w * sw, bytes_h * dh, bytes_w * dw, bytes_c),
        writeable=False,
    )


def im2col(x: np.ndarray, kernel_size, stride, padding: Padding, dilation=1) -> np.ndarray:
    """(N, H, W, C) -> columns (N * H_out * W_out, kh * kw * C), one row per kernel position.

    Channels-last makes each patch row a few long contiguous runs (kw * C values), so one strided
    copy builds the matrix. With a single input channel those runs are too short; then the buffer
    is built offset-major, one contiguous shifted image plane per kernel offset, and the columns
    are returned as its transpose (a Fortran-ordered view that matmul takes as is).
    """
    n, h, w, c = x.shape
    kh, kw = kernel_size
    out_h, out_w, _ = conv_output_shape((h, w, c), kernel_size, stride, padding, 0, dilation)
    xp = np.ascontiguousarray(_pad(x, padding))
    if c == 1:
        planes = np.empty((kh, kw, n, out_h, out_w), dtype=x.dtype)
        for i, j, rows, columns in _offsets(kernel_size, stride, (out_h, out_w), dilation):
            planes[i, j] = xp[:, rows, columns, 0]
        return planes.reshape(kh * kw, n * out_h * out_w).T
    patches = _patches(xp, kernel_size, stride, (out_h, out_w), dilation)
    return patches.reshape(n * out_h * out_w, kh * kw * c)


def col2im(blocks: np.ndarray, input_shape, kernel_size, stride, padding: Padding, dilation=1):
    """Adjoint of im2col: add each column entry back to the input pixel it was copied from.

    blocks: the columns' gradient as one contiguous block per kernel offset,
    (kh * kw, N * H_out * W_out, C) -> (N, H, W, C). Per-offset blocks make every addition a
    run of long contiguous reads instead of a gather of C-sized pieces.
    """
    n, h, w, c = input_shape
    (top, bottom), (left, right) = padding
    out_h, out_w, _ = conv_output_shape((h, w, c), kernel_size, stride, padding, 0, dilation)
    blocks = blocks.reshape(-1, n, out_h, out_w, c)
    dxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=blocks.dtype)
    for k, (_, _, rows, columns) in enumerate(_offsets(kernel_size, stride, (out_h, out_w), dilation)):
        dxp[:, rows, columns, :] += blocks[k]
    return dxp[:, top : top + h, left : left + w, :]


def conv2d_forward(x, w, b, stride=1, padding="valid", dilation=1, groups: int = 1):
    """Convolve a batch of images with a bank of kernels.

    x: (N, H, W, C_in), w: (kh, kw, C_in / groups, C_out), b: (C_out,) or None; stride and dilation
    an int or a pair (for height, width), padding as in resolve_padding, groups dividing C_in and
    C_out (output channel o sees input channel group o // (C_out / groups), as in PyTorch).
    Returns y: (N, H_out, W_out, C_out) and a cache for conv2d_backward.
    """
    if x.ndim != 4:
        raise ValueError(f"conv2d expects images of shape (N, H, W, C), got shape {x.shape}")
    kh, kw, c_group, c_out = w.shape
    if x.shape[3] != c_group * groups:
        raise ValueError(
            f"conv2d: kernels have {c_group} channel(s)"
            + (f" per group, {groups} groups," if groups > 1 else "")
            + f" but the input has {x.shape[3]}"
        )
    if c_out % groups:
        raise ValueError(f"conv2d: {c_out} kernels cannot be split into groups={groups}")
    pads = resolve_padding(padding, (kh, kw), stride, dilation)
    n, h, width, c_in = x.shape
    out_h, out_w, _ = conv_output_shape((h, width, c_in), (kh, kw), stride, pads, c_out, dilation)
    cols = im2col(x, (kh, kw), stride, pads, dilation)
    if groups == 1:
        y = cols @ w.reshape(kh * kw * c_in, c_out)
    else:
        cols = _columns_by_group(cols, kh * kw, groups)
        y = _grouped_matmul(cols, w, groups)
    if b is not None:
        y += b
    cache = (cols, x.shape, w, b is not None, stride, pads, dilation, groups)
    return y.reshape(n, out_h, out_w, c_out), cache


def conv2d_backward(dy, cache, need_dx: bool = True):
    """Gradients of conv2d_forward.

    dy: (N, H_out, W_out, C_out). Returns dx: (N, H, W, C_in) (None if need_dx is False),
    dw: (kh, kw, C_in / groups, C_out), db: (C_out,) (None if the forward pass had no bias).
    """
    cols, x_shape, w, has_bias, stride, pads, dilation, groups = cache
    kh, kw, c_group, c_out = w.shape
    dy2 = dy.reshape(-1, c_out)
    db = np.ones(dy2.shape[0], dtype=dy.dtype) @ dy2 if has_bias else None  # a matmul beats .sum(0)
    if groups > 1:
        dw, blocks = _grouped_matmul_backward(dy2, cols, w, groups, need_dx)
        dx = col2im(blocks, x_shape, (kh, kw), stride, pads, dilation) if need_dx else None
        return dx, dw, db
    dw = (cols.T @ dy2).reshape(w.shape)
    dx = None
    if need_dx:
        kernels_by_offset = w.reshape(kh * kw, c_group, c_out).transpose(0, 2, 1)  # (kh*kw, C_out, C_in)
        dx = col2im(np.matmul(dy2, kernels_by_offset), x_shape, (kh, kw), stride, pads, dilation)
    return dx, dw, db


# Grouped convolution: group g's kernels (output channels g * C_out/G ...) see only group g's input
# channels (g * C_in/G ...). The columns are regrouped once, group-major, and one batched matmul
# applies every group's kernels to its own columns.


def _columns_by_group(cols, offsets: int, groups: int) -> np.ndarray:
    """(M, kh*kw * C_in) -> (G, M, kh*kw * C_in/G): each group's channels of every patch."""
    m, width = cols.shape
    c_group = width // offsets // groups
    by_group = cols.reshape(m, offsets, groups, c_group).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(by_group).reshape(groups, m, offsets * c_group)


def _kernels_by_group(w, groups: int) -> np.ndarray:
    """(kh, kw, C_in/G, C_out) -> (G, kh*kw * C_in/G, C_out/G): each group's kernels as a matrix."""
    kh, kw, c_group, c_out = w.shape
    return w.reshape(kh * kw * c_group, groups, c_out // groups).transpose(1, 0, 2)


def _grouped_matmul(cols_by_group, w, groups: int) -> np.ndarray:
    """(G, M, K) columns and (kh, kw, C_in/G, C_out) kernels -> (M, C_out) outputs."""
    y = np.matmul(cols_by_group, _kernels_by_group(w, groups))  # (G, M, C_out/G)
    return y.transpose(1, 0, 2).reshape(cols_by_group.shape[1], w.shape[3])


def _grouped_matmul_backward(dy2, cols_by_group, w, groups: int, need_dx: bool):
    """dy2 (M, C_out) -> dw (kh, kw, C_in/G, C_out) and the columns' gradient as per-offset blocks
    (kh*kw, M, C_in) for col2im (None if need_dx is False)."""
    kh, kw, c_group, c_out = w.shape
    m = dy2.shape[0]
    dy_by_group = dy2.reshape(m, groups, c_out // groups).transpose(1, 0, 2)  # (G, M, C_out/G)
    dw_by_group = np.matmul(cols_by_group.transpose(0, 2, 1), dy_by_group)  # (G, K, C_out/G)
    dw = dw_by_group.transpose(1, 0, 2).reshape(w.shape)
    if not need_dx:
        return dw, None
    dcols = np.matmul(dy_by_group, _kernels_by_group(w, groups).transpose(0, 2, 1))  # (G, M, K)
    blocks = dcols.reshape(groups, m, kh * kw, c_group).transpose(2, 1, 0, 3)  # (kh*kw, M, G, C_in/G)
    return dw, blocks.reshape(kh * kw, m, groups * c_group)
