"""Finite-difference checks of every backward pass, in float64.

Each op is checked through the scalar objective L = sum(y * dy) for a random upstream gradient dy:
its analytic gradient (op_backward(dy, cache)) must match central differences of L.
Max pooling with tied maxima has no derivative, so ties are checked against a reference loop.
"""

import numpy as np
import pytest
from gradient_helpers import assert_grad, away_from_zero, numerical_grad, rel_error  # noqa: F401

from convscope import layers, ops
from convscope.losses import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from convscope.model import Sequential
from convscope.ops import pool

# ---------------------------------------------------------------- conv2d

CONV_CASES = {
    # name: (N, H, W, C_in, C_out, (kh, kw), stride, padding)
    "3x3-same": (2, 6, 6, 2, 3, (3, 3), 1, "same"),
    "3x3-valid": (2, 6, 6, 2, 3, (3, 3), 1, "valid"),
    "3x3-pad1": (2, 5, 5, 2, 3, (3, 3), 1, 1),
    "3x3-pad2": (1, 5, 5, 2, 2, (3, 3), 1, 2),
    "3x3-stride2-valid": (2, 7, 7, 2, 3, (3, 3), 2, "valid"),
    "3x3-stride2-pad1": (2, 6, 6, 2, 3, (3, 3), 2, 1),
    "c_in3": (2, 5, 5, 3, 4, (3, 3), 1, "same"),
    "odd-7x5": (2, 7, 5, 2, 3, (3, 3), 1, "same"),
    "kernel-3x5": (1, 6, 8, 2, 3, (3, 5), 1, "same"),
    "kernel-3x5-valid": (1, 6, 8, 2, 2, (3, 5), 1, "valid"),
    "5x5-same": (1, 6, 6, 2, 2, (5, 5), 1, "same"),
    "2x2-same": (2, 5, 4, 2, 3, (2, 2), 1, "same"),
    "stride3-not-divisible": (1, 8, 7, 2, 2, (3, 3), 3, 1),
    "stride-2x1": (2, 7, 6, 2, 3, (3, 3), (2, 1), 1),
    "stride-1x3-3x2-kernel": (1, 6, 9, 2, 2, (3, 2), (1, 3), (1, 0)),
    "asymmetric-padding": (2, 5, 6, 2, 3, (3, 3), 1, ((0, 2), (1, 0))),
    "asymmetric-padding-stride2": (1, 6, 5, 3, 2, (2, 3), 2, ((1, 0), (2, 1))),
}

# name: (N, H, W, C_in, C_out, (kh, kw), stride, padding, dilation, groups)
CONV_OPTION_CASES = {
    "dilation2-same": (2, 7, 7, 2, 3, (3, 3), 1, "same", 2, 1),
    "dilation-2x1-valid": (1, 8, 6, 2, 2, (3, 2), 1, "valid", (2, 1), 1),
    "dilation2-stride2-pad": (2, 9, 8, 2, 3, (3, 3), 2, 1, 2, 1),
    "dilation-one-channel": (2, 7, 7, 1, 2, (3, 3), (1, 2), ((1, 2), (0, 1)), (1, 3), 1),
    "groups2": (2, 6, 5, 4, 6, (3, 3), 1, "same", 1, 2),
    "depthwise": (2, 6, 6, 3, 3, (3, 3), 1, 1, 1, 3),
    "depthwise-multiplier2": (1, 6, 7, 3, 6, (3, 2), (2, 1), ((0, 1), (1, 1)), 1, 3),
    "groups-dilation-stride": (1, 9, 8, 4, 4, (3, 3), (2, 1), "valid", (1, 2), 2),
}


@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_conv2d_gradients(case):
    n, h, w_, c_in, c_out, kernel, stride, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w_, c_in))
    w = rng.standard_normal((*kernel, c_in, c_out))
    b = rng.standard_normal(c_out)
    y, cache = ops.conv2d_forward(x, w, b, stride, padding)
    assert y.dtype == np.float64
    pads = ops.resolve_padding(padding, kernel, stride)
    assert y.shape == (n, *ops.conv_output_shape((h, w_, c_in), kernel, stride, pads, c_out)[:2], c_out)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = ops.conv2d_backward(dy, cache)

    def loss():
        return float(np.sum(ops.conv2d_forward(x, w, b, stride, padding)[0] * dy))

    assert_grad(dx, loss, x, "dx")
    assert_grad(dw, loss, w, "dw")
    assert_grad(db, loss, b, "db")


@pytest.mark.parametrize("case", list(CONV_OPTION_CASES.values()), ids=list(CONV_OPTION_CASES))
def test_conv2d_dilation_and_groups_gradients(case):
    n, h, w_, c_in, c_out, kernel, stride, padding, dilation, groups = case
    rng = np.random.default_rng(30)
    x = rng.standard_normal((n, h, w_, c_in))
    w = rng.standard_normal((*kernel, c_in // groups, c_out))
    b = rng.standard_normal(c_out)

    def conv():
        return ops.conv2d_forward(x, w, b, stride, padding, dilation, groups)

    y, cache = conv()
    pads = ops.resolve_padding(padding, kernel, stride, dilation)
    assert y.shape == (
        n,
        *ops.conv_output_shape((h, w_, c_in), kernel, stride, pads, c_out, dilation)[:2],
        c_out,
    )
    dy = rng.standard_normal(y.shape)
    dx, dw, db = ops.conv2d_backward(dy, cache)
    assert dw.shape == w.shape

    def loss():
        return float(np.sum(conv()[0] * dy))

    assert_grad(dx, loss, x, "dx")
    assert_grad(dw, loss, w, "dw")
    assert_grad(db, loss, b, "db")
    _, dw_only, _ = ops.conv2d_backward(dy, conv()[1], need_dx=False)
    np.testing.assert_array_equal(dw_only, dw)


def test_grouped_conv_is_separate_convs_over_channel_groups():
    """groups=G is G ordinary convolutions side by side: group g's kernels on group g's channels."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 6, 5, 6))
    w = rng.standard_normal((3, 2, 2, 9))  # 3 groups of 2 input channels, 3 kernels each
    y, _ = ops.conv2d_forward(x, w, None, (1, 2), 1, (2, 1), groups=3)
    parts = [
        ops.conv2d_forward(x[..., 2 * g : 2 * g + 2], w[..., 3 * g : 3 * g + 3], None, (1, 2), 1, (2, 1))[0]
        for g in range(3)
    ]
    np.testing.assert_allclose(y, np.concatenate(parts, axis=3), rtol=1e-12)


def test_dilated_conv_is_a_conv_with_a_sparse_kernel():
    """A 3x3 kernel with dilation 2 is the 5x5 kernel with its taps 2 apart and zeros between."""
    rng = np.random.default_rng(32)
    x = rng.standard_normal((1, 7, 8, 2))
    w = rng.standard_normal((3, 3, 2, 3))
    sparse = np.zeros((5, 5, 2, 3))
    sparse[::2, ::2] = w
    np.testing.assert_allclose(
        ops.conv2d_forward(x, w, None, 1, "same", dilation=2)[0],
        ops.conv2d_forward(x, sparse, None, 1, "same")[0],
        rtol=1e-12,
    )


def test_conv2d_same_keeps_size_and_matches_explicit_padding():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 4, 2))
    w = rng.standard_normal((2, 2, 2, 3))
    y_same, _ = ops.conv2d_forward(x, w, None, 1, "same")
    assert y_same.shape == (2, 5, 4, 3)
    # an even kernel gets its extra zero row and column at the bottom and right
    y_explicit, _ = ops.conv2d_forward(x, w, None, 1, ((0, 1), (0, 1)))
    np.testing.assert_array_equal(y_same, y_explicit)


def test_conv2d_without_bias_and_without_dx():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 5, 2))
    w = rng.standard_normal((3, 3, 2, 2))
    y, cache = ops.conv2d_forward(x, w, None, 1, "same")
    dy = rng.standard_normal(y.shape)
    dx, dw, db = ops.conv2d_backward(dy, cache, need_dx=False)
    assert dx is None and db is None
    assert_grad(dw, lambda: float(np.sum(ops.conv2d_forward(x, w, None, 1, "same")[0] * dy)), w, "dw")


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for any x and c, with padding and stride."""
    rng = np.random.default_rng(3)
    shape, kernel, stride, pads = (2, 7, 6, 3), (3, 2), 2, ((1, 2), (0, 1))
    x = rng.standard_normal(shape)
    cols = ops.im2col(x, kernel, stride, pads)
    c = rng.standard_normal(cols.shape)
    blocks = c.reshape(len(c), kernel[0] * kernel[1], shape[3]).transpose(1, 0, 2)  # one per offset
    back = ops.col2im(blocks, shape, kernel, stride, pads)
    assert back.shape == shape
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * back), rtol=1e-12)


# ---------------------------------------------------------------- max pooling

POOL_CASES = {
    # name: (N, H, W, C, pool_size, stride)
    "2x2-tiled": (2, 6, 6, 3, (2, 2), None),
    "2x2-tiled-odd": (2, 7, 5, 2, (2, 2), 2),
    "3x3-stride2-overlapping": (2, 7, 7, 2, (3, 3), 2),
    "3x3-stride3-not-divisible": (2, 8, 7, 2, (3, 3), 3),
    "2x3-stride1": (1, 5, 6, 2, (2, 3), 1),
}


@pytest.mark.parametrize("case", list(POOL_CASES.values()), ids=list(POOL_CASES))
def test_maxpool2d_gradients(case):
    n, h, w, c, pool_size, stride = case
    rng = np.random.default_rng(4)
    x = rng.permutation(n * h * w * c).reshape(n, h, w, c) / 10.0  # distinct values, gaps >> eps
    y, cache = ops.maxpool2d_forward(x, pool_size, stride)
    assert y.dtype == np.float64
    s = pool_size[0] if stride is None else stride
    assert y.shape == (n, (h - pool_size[0]) // s + 1, (w - pool_size[1]) // s + 1, c)
    dy = rng.standard_normal(y.shape)
    dx = ops.maxpool2d_backward(dy, cache)
    assert_grad(dx, lambda: float(np.sum(ops.maxpool2d_forward(x, pool_size, stride)[0] * dy)), x, "dx")


# name: (N, H, W, C, pool_size, stride, padding, ceil_mode)
POOL_OPTION_CASES = {
    "3x3-s2-pad1": (2, 7, 6, 2, (3, 3), 2, 1, False),
    "2x2-ceil": (2, 7, 5, 2, (2, 2), 2, 0, True),
    "3x3-s2-pad1-ceil": (1, 8, 7, 2, (3, 3), 2, 1, True),
    "3x2-s-2x1-pad-1x0-ceil": (1, 7, 6, 2, (3, 2), (2, 1), (1, 0), True),
    "2x3-s-1x2-pad-0x1": (2, 5, 8, 2, (2, 3), (1, 2), (0, 1), False),
    "4x4-s3-pad2-ceil": (1, 9, 10, 2, (4, 4), 3, 2, True),
}


@pytest.mark.parametrize("case", list(POOL_OPTION_CASES.values()), ids=list(POOL_OPTION_CASES))
def test_maxpool2d_padding_and_ceil_mode_gradients(case):
    n, h, w, c, pool_size, stride, padding, ceil_mode = case
    rng = np.random.default_rng(33)
    x = rng.permutation(n * h * w * c).reshape(n, h, w, c) / 10.0 - 5.0  # distinct, many negative

    def pool():
        return ops.maxpool2d_forward(x, pool_size, stride, padding, ceil_mode)

    y, cache = pool()
    assert cache[0] == "padded" and np.isfinite(y).all()  # -inf padding never wins a window
    assert (
        y.shape[1:3]
        == ops.pool_output_shape(
            (h, w, c), pool_size, stride, ops.pool_padding(padding, pool_size), ceil_mode
        )[:2]
    )
    np.testing.assert_array_equal(ops.maxpool2d(x, pool_size, stride, padding, ceil_mode), y)
    dy = rng.standard_normal(y.shape)
    dx = ops.maxpool2d_backward(dy, cache)
    assert_grad(dx, lambda: float(np.sum(pool()[0] * dy)), x, "dx")


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["count-pad", "skip-pad"])
@pytest.mark.parametrize(
    "case",
    [(2, 6, 6, 3, (2, 2), None, 0, False), *POOL_OPTION_CASES.values()],
    ids=["2x2", *POOL_OPTION_CASES],
)
def test_avgpool2d_gradients(case, count_include_pad):
    n, h, w, c, pool_size, stride, padding, ceil_mode = case
    rng = np.random.default_rng(34)
    x = rng.standard_normal((n, h, w, c))

    def pool():
        return ops.avgpool2d_forward(x, pool_size, stride, padding, ceil_mode, count_include_pad)

    y, cache = pool()
    assert y.dtype == np.float64
    dy = rng.standard_normal(y.shape)
    dx = ops.avgpool2d_backward(dy, cache)
    assert_grad(dx, lambda: float(np.sum(pool()[0] * dy)), x, "dx")


def test_avgpool2d_divisors_follow_torch():
    """Ones in, so each output is (image pixels in the window) / divisor: with count_include_pad the
    divisor counts the padding but not a ceil-mode window's overhang past it."""
    x = np.ones((1, 3, 3, 1))
    counted = ops.avgpool2d_forward(x, 2, 2, 1, ceil_mode=True, count_include_pad=True)[0][0, :, :, 0]
    np.testing.assert_allclose(counted, [[1 / 4, 2 / 4], [2 / 4, 4 / 4]])
    skipped = ops.avgpool2d_forward(x, 2, 2, 1, ceil_mode=True, count_include_pad=False)[0]
    np.testing.assert_array_equal(skipped, 1.0)
    overhang = ops.avgpool2d_forward(np.ones((1, 4, 4, 1)), 3, 2, 0, ceil_mode=True)[0][0, :, :, 0]
    np.testing.assert_allclose(overhang, [[1, 1], [1, 1]])  # last window: 2x2 pixels, divided by 2x2


def reference_maxpool(x, pool_size, stride, dy):
    """Loops: each window's max, and its gradient sent to the first maximum in row-major order."""
    n, h, w, c = x.shape
    ph, pw = pool_size
    out_h, out_w = (h - ph) // stride + 1, (w - pw) // stride + 1
    y = np.zeros((n, out_h, out_w, c), dtype=x.dtype)
    dx = np.zeros_like(x)
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                for k in range(c):
                    best = None
                    for di in range(ph):
                        for dj in range(pw):
                            r, q = i * stride + di, j * stride + dj
                            if best is None or x[b, r, q, k] > x[b, best[0], best[1], k]:
                                best = (r, q)
                    y[b, i, j, k] = x[b, best[0], best[1], k]
                    dx[b, best[0], best[1], k] += dy[b, i, j, k]
    return y, dx


TIE_CASES = {
    "2x2": ((2, 2), 2, (2, 6, 6, 3)),
    "2x2-odd": ((2, 2), 2, (2, 7, 5, 2)),
    "3x3-stride3-not-divisible": ((3, 3), 3, (2, 8, 7, 2)),
    "3x3-stride2-overlapping": ((3, 3), 2, (2, 7, 7, 2)),
    "2x2-stride1-overlapping": ((2, 2), 1, (1, 5, 5, 2)),
    "2x3-stride2": ((2, 3), 2, (1, 6, 7, 2)),
}


@pytest.mark.parametrize("values", [2, 3], ids=["values0-1", "values0-2"])
@pytest.mark.parametrize("case", list(TIE_CASES.values()), ids=list(TIE_CASES))
def test_maxpool2d_ties_go_to_first_maximum(case, values):
    pool_size, stride, shape = case
    rng = np.random.default_rng(5)
    x = rng.integers(0, values, size=shape).astype(np.float64)
    x[0, : pool_size[0], : pool_size[1], 0] = 1.0  # one window that is all ties
    dy = rng.standard_normal(
        (shape[0], (shape[1] - pool_size[0]) // stride + 1, (shape[2] - pool_size[1]) // stride + 1, shape[3])
    )
    y_ref, dx_ref = reference_maxpool(x, pool_size, stride, dy)

    y, cache = ops.maxpool2d_forward(x, pool_size, stride)
    dx = ops.maxpool2d_backward(dy, cache)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)

    # the plain (windowed) path, forced, gives exactly the same answers as the public entry point
    out_h, out_w = y.shape[1:3]
    y_plain, plain_cache = pool._windowed_forward(x, pool_size, stride, out_h, out_w)
    dx_plain = pool._windowed_backward(dy, plain_cache)
    np.testing.assert_array_equal(y_plain, y_ref)
    np.testing.assert_array_equal(dx_plain, dx_ref)

    if pool_size == (stride, stride):
        # a fast path was the one checked above: pairwise maxima for 2x2, whole tiles otherwise
        assert cache[0] == ("pairwise" if pool_size == (2, 2) else "tiled")
        y_tiled, tiled_cache = pool._tiled_forward(x, pool_size[0], out_h, out_w)
        np.testing.assert_array_equal(y_tiled, y_ref)
        np.testing.assert_array_equal(pool._tiled_backward(dy, tiled_cache), dx_ref)
        # non-overlapping windows: exactly one input per window receives its gradient
        assert np.count_nonzero(dx) == np.count_nonzero(dy)


@pytest.mark.parametrize("path", ["pairwise", "tiled"])
def test_maxpool2d_fast_paths_on_a_non_contiguous_input(path):
    rng = np.random.default_rng(6)
    base = rng.integers(0, 3, size=(2, 3, 7, 6)).astype(np.float64)
    x = base.transpose(0, 2, 3, 1)  # (2, 7, 6, 3), not C-contiguous
    dy = rng.standard_normal((2, 3, 3, 3))
    if path == "pairwise":
        y, cache = ops.maxpool2d_forward(x, (2, 2), 2)
    else:
        y, cache = pool._tiled_forward(x, 2, 3, 3)
    assert cache[0] == path
    y_ref, dx_ref = reference_maxpool(np.ascontiguousarray(x), (2, 2), 2, dy)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(ops.maxpool2d_backward(dy, cache), dx_ref)


# ---------------------------------------------------------------- activations, dense, flatten, loss


def test_relu_gradient():
    rng = np.random.default_rng(7)
    x = away_from_zero(rng, (3, 4, 5, 2))
    y, cache = ops.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = rng.standard_normal(y.shape)
    dx = ops.relu_backward(dy, cache)
    assert_grad(dx, lambda: float(np.sum(ops.relu_forward(x)[0] * dy)), x, "dx")


def test_relu_gradient_is_zero_at_zero():
    x = np.array([[-1.0, 0.0, 2.0]])
    _, cache = ops.relu_forward(x)
    np.testing.assert_array_equal(ops.relu_backward(np.ones_like(x), cache), [[0.0, 0.0, 1.0]])


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradients(use_bias):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 7))
    w = rng.standard_normal((7, 5))
    b = rng.standard_normal(5) if use_bias else None
    y, cache = ops.dense_forward(x, w, b)
    assert y.dtype == np.float64
    dy = rng.standard_normal(y.shape)
    dx, dw, db = ops.dense_backward(dy, cache)

    def loss():
        return float(np.sum(ops.dense_forward(x, w, b)[0] * dy))

    assert_grad(dx, loss, x, "dx")
    assert_grad(dw, loss, w, "dw")
    if use_bias:
        assert_grad(db, loss, b, "db")
    else:
        assert db is None


def test_softmax_gradient():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6)) * 2
    p, cache = ops.softmax_forward(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    dy = rng.standard_normal(p.shape)
    dx = ops.softmax_backward(dy, cache)
    assert_grad(dx, lambda: float(np.sum(ops.softmax_forward(x)[0] * dy)), x, "dx")


def test_softmax_is_stable_for_large_logits():
    p = ops.softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]])


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(10)
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss, cache = softmax_cross_entropy_forward(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss, -np.mean(np.log(p[np.arange(5), labels])), rtol=1e-12)
    dlogits = softmax_cross_entropy_backward(cache)
    assert_grad(dlogits, lambda: softmax_cross_entropy_forward(logits, labels)[0], logits, "dlogits")
    np.testing.assert_allclose(softmax_cross_entropy_backward(cache, dloss=2.5), 2.5 * dlogits, rtol=1e-12)


def test_label_smoothed_cross_entropy_gradient():
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss, cache = softmax_cross_entropy_forward(logits, labels, label_smoothing=0.2)
    target = np.full((5, 4), 0.2 / 4)
    target[np.arange(5), labels] += 0.8
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss, -(target * log_p).sum(axis=1).mean(), rtol=1e-12)
    dlogits = softmax_cross_entropy_backward(cache)
    assert_grad(
        dlogits,
        lambda: softmax_cross_entropy_forward(logits, labels, label_smoothing=0.2)[0],
        logits,
        "dlogits",
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        softmax_cross_entropy_forward(logits, labels, label_smoothing=1.0)


def test_dropout_gradient_with_a_fixed_mask():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3, 3, 2))
    rate = 0.4
    y, mask = ops.dropout_forward(x, rate, np.random.default_rng(123))
    assert y.dtype == mask.dtype == np.float64
    assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - rate)}
    assert 0 < np.count_nonzero(mask) < mask.size
    np.testing.assert_array_equal(y, x * mask)
    dy = rng.standard_normal(y.shape)
    dx = ops.dropout_backward(dy, mask)
    np.testing.assert_array_equal(dx, dy * mask)
    # the same seed gives the same mask, so the forward pass is a fixed function of x
    assert_grad(
        dx, lambda: float(np.sum(ops.dropout_forward(x, rate, np.random.default_rng(123))[0] * dy)), x, "dx"
    )


def test_dropout_rate_zero_is_the_identity():
    x = np.arange(6.0).reshape(2, 3)
    y, cache = ops.dropout_forward(x, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ops.dropout_backward(np.ones_like(x), cache), np.ones_like(x))


def test_flatten_gradient_and_order():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 4, 5))
    y, cache = ops.flatten_forward(x)
    assert y.shape == (2, 60)
    # (h, w, c) order: channel varies fastest
    assert y[1, (2 * 4 + 3) * 5 + 1] == x[1, 2, 3, 1]
    dy = rng.standard_normal(y.shape)
    dx = ops.flatten_backward(dy, cache)
    assert_grad(dx, lambda: float(np.sum(ops.flatten_forward(x)[0] * dy)), x, "dx")


# ---------------------------------------------------------------- layers


def build_float64(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    for key in layer.params:
        layer.params[key] = layer.params[key].astype(np.float64)
    return layer


def check_layer(layer, x, rng):
    y = layer.forward(x, training=True)
    assert y.dtype == np.float64
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    grads = {k: g.copy() for k, g in layer.grads.items()}
    assert set(grads) == set(layer.params)

    def loss():
        return float(np.sum(layer.forward(x, training=True) * dy))

    assert_grad(dx, loss, x, "dx")
    for key, param in layer.params.items():
        assert_grad(grads[key], loss, param, key)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filters": 3, "kernel_size": 3, "activation": "relu"},
        {"filters": 3, "kernel_size": 3, "stride": 2, "padding": 1, "activation": "relu"},
        {"filters": 2, "kernel_size": (3, 5), "padding": "valid", "activation": None, "use_bias": False},
        {"filters": 4, "kernel_size": 3, "dilation": (2, 1), "groups": 2, "stride": (1, 2), "padding": 1},
        {"filters": 6, "kernel_size": (2, 3), "groups": 2, "padding": ((1, 0), (0, 2)), "use_bias": False},
    ],
    ids=[
        "same-relu",
        "stride2-pad1-relu",
        "3x5-valid-nobias",
        "dilated-grouped-rect-stride",
        "depthwise-x3-asym",
    ],
)
def test_conv2d_layer_gradients(kwargs):
    rng = np.random.default_rng(13)
    layer = build_float64(layers.Conv2D(**kwargs), (6, 7, 2))
    x = rng.standard_normal((2, 6, 7, 2))
    if layer.activation == "relu":  # keep every pre-activation clear of the kink
        z, _ = ops.conv2d_forward(
            x, layer.params["weight"], layer.params["bias"], layer.stride, layer.padding, layer.dilation
        )
        assert np.abs(z).min() > 1e-3
    check_layer(layer, x, rng)


@pytest.mark.parametrize("activation", [None, "relu", "softmax"])
def test_dense_layer_gradients(activation):
    rng = np.random.default_rng(14)
    layer = build_float64(layers.Dense(4, activation=activation), (6,))
    x = rng.standard_normal((3, 6))
    if activation == "relu":
        z, _ = ops.dense_forward(x, layer.params["weight"], layer.params["bias"])
        assert np.abs(z).min() > 1e-3
    check_layer(layer, x, rng)


@pytest.mark.parametrize(
    "pool_size, stride", [(2, None), (3, 2), (3, 3), ((2, 3), 1)], ids=["2x2", "3x3s2", "3x3s3", "2x3s1"]
)
def test_maxpool2d_layer_gradients(pool_size, stride):
    rng = np.random.default_rng(15)
    layer = build_float64(layers.MaxPool2D(pool_size, stride), (7, 8, 2))
    x = rng.permutation(2 * 7 * 8 * 2).reshape(2, 7, 8, 2) / 10.0
    check_layer(layer, x, rng)
    assert layer.forward(x).shape[1:] == layer.output_shape


@pytest.mark.parametrize(
    "layer",
    [
        lambda: layers.MaxPool2D(3, stride=(2, 1), padding=1, ceil_mode=True),
        lambda: layers.AvgPool2D(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        lambda: layers.AvgPool2D((2, 3), stride=(1, 2), padding=(1, 0)),
    ],
    ids=["maxpool-pad-ceil", "avgpool-pad-ceil-skip-pad", "avgpool-rect"],
)
def test_padded_pooling_layer_gradients(layer):
    rng = np.random.default_rng(35)
    pooling = build_float64(layer(), (7, 8, 2))
    x = rng.permutation(2 * 7 * 8 * 2).reshape(2, 7, 8, 2) / 10.0
    check_layer(pooling, x, rng)
    assert pooling.forward(x).shape[1:] == pooling.output_shape


def test_flatten_relu_softmax_layer_gradients():
    rng = np.random.default_rng(16)
    check_layer(build_float64(layers.Flatten(), (3, 2, 2)), rng.standard_normal((2, 3, 2, 2)), rng)
    check_layer(build_float64(layers.ReLU(), (5,)), away_from_zero(rng, (3, 5)), rng)
    check_layer(build_float64(layers.Softmax(), (5,)), rng.standard_normal((3, 5)), rng)


# ---------------------------------------------------------------- a whole model


def small_model(head):
    """Conv2D(4, 3, stride 2, padding 1) -> ReLU -> MaxPool2D -> Flatten -> Dense(5) -> softmax, float64."""
    if head == "softmax-layer":
        top = [layers.Dense(5), layers.Softmax()]
    else:
        top = [layers.Dense(5, activation="softmax")]
    model = Sequential(
        [
            layers.Conv2D(4, 3, stride=2, padding=1),
            layers.ReLU(),
            layers.MaxPool2D(2),
            layers.Flatten(),
            *top,
        ],
        input_shape=(9, 9, 3),
        seed=0,
    )
    for layer in model.layers:
        for key in layer.params:
            layer.params[key] = layer.params[key].astype(np.float64)
    return model


@pytest.mark.usefixtures("kernel_backend")
@pytest.mark.parametrize("head", ["softmax-layer", "softmax-activation"])
def test_model_loss_gradients(head):
    model = small_model(head)
    rng = np.random.default_rng(17)
    x = rng.standard_normal((4, 9, 9, 3))
    y = np.array([0, 4, 2, 2])
    loss, logits = model.loss_and_gradients(x, y)
    assert logits.dtype == np.float64 and logits.shape == (4, 5)
    # training uses the logits, before the softmax head
    np.testing.assert_allclose(ops.softmax(logits), model(x.astype(np.float32)), rtol=1e-5, atol=1e-6)
    grads = {k: g.copy() for k, g in model.gradients().items()}
    state = model.state_dict()
    assert set(grads) == set(state) == {"0.weight", "0.bias", "4.weight", "4.bias"}
    for key, param in state.items():
        assert param.dtype == np.float64
        assert_grad(grads[key], lambda: model.loss_and_gradients(x, y)[0], param, key)


# ---------------------------------------------------------------- batch normalisation, global average pooling

BATCHNORM_CASES = {
    # name: input shape (N, H, W, C)
    "2x3x4x3": (2, 3, 4, 3),
    "one-image": (1, 3, 3, 2),
    "1x1-spatial": (5, 1, 1, 4),
}


@pytest.mark.parametrize("shape", list(BATCHNORM_CASES.values()), ids=list(BATCHNORM_CASES))
def test_batchnorm2d_gradients(shape):
    rng = np.random.default_rng(18)
    x = rng.standard_normal(shape) * 2.0 + 0.5
    weight = rng.uniform(0.5, 1.5, shape[3])
    bias = rng.standard_normal(shape[3])
    y, cache = ops.batchnorm2d_forward(x, weight, bias, eps=1e-3)
    assert y.dtype == np.float64 and y.shape == shape
    rows = x.reshape(-1, shape[3])
    expected = (rows - rows.mean(axis=0)) / np.sqrt(rows.var(axis=0) + 1e-3) * weight + bias
    np.testing.assert_allclose(y.reshape(-1, shape[3]), expected, rtol=1e-12, atol=1e-12)
    assert cache.statistics.count == rows.shape[0]
    np.testing.assert_allclose(cache.statistics.var, rows.var(axis=0), rtol=1e-12)  # biased
    dy = rng.standard_normal(shape)
    dx, dweight, dbias = ops.batchnorm2d_backward(dy, cache)

    def loss():
        return float(np.sum(ops.batchnorm2d_forward(x, weight, bias, eps=1e-3)[0] * dy))

    assert_grad(dx, loss, x, "dx")
    assert_grad(dweight, loss, weight, "dweight")
    assert_grad(dbias, loss, bias, "dbias")


def test_batchnorm2d_needs_two_values_per_channel_in_training():
    with pytest.raises(ValueError, match=r"more than 1 value per channel, got input shape \(1, 1, 1, 3\)"):
        ops.batchnorm2d_forward(np.ones((1, 1, 1, 3)), np.ones(3), np.zeros(3))


def test_batchnorm2d_inference_uses_the_running_statistics():
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, 3, 3, 4))
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    y = ops.batchnorm2d(x, mean, var, weight, bias, eps=1e-5)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * weight + bias, rtol=1e-12, atol=1e-12)


def test_combined_shard_statistics_equal_the_whole_batch():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((7, 3, 2, 3)) * 3.0 + 1.0
    weight, bias = np.ones(3), np.zeros(3)
    whole = ops.batchnorm2d_forward(x, weight, bias)[1].statistics
    shards = [ops.batchnorm2d_forward(part, weight, bias)[1].statistics for part in (x[:2], x[2:3], x[3:])]
    combined = ops.combine_batch_statistics(shards)
    assert combined.count == whole.count == 42
    np.testing.assert_allclose(combined.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(combined.var, whole.var, rtol=1e-13)
    assert ops.combine_batch_statistics([whole]) is whole


def test_running_statistics_move_by_momentum_with_the_unbiased_variance():
    statistics = ops.BatchStatistics(count=5, mean=np.array([1.0, -2.0]), var=np.array([4.0, 0.8]))
    running_mean, running_var = np.zeros(2), np.ones(2)
    ops.update_running_statistics(running_mean, running_var, statistics, momentum=0.25)
    np.testing.assert_allclose(running_mean, [0.25, -0.5])
    np.testing.assert_allclose(running_var, [0.75 + 0.25 * 5.0, 0.75 + 0.25 * 1.0])


def test_batchnorm2d_layer_gradients():
    rng = np.random.default_rng(21)
    layer = build_float64(layers.BatchNorm2D(eps=1e-3), (3, 4, 3))
    layer.params["weight"][...] = rng.uniform(0.5, 1.5, 3)
    layer.params["bias"][...] = rng.standard_normal(3)
    check_layer(layer, rng.standard_normal((2, 3, 4, 3)), rng)


def test_global_avgpool2d_gradients():
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 3, 5, 4))
    y, cache = ops.global_avgpool2d_forward(x)
    assert y.dtype == np.float64 and y.shape == (2, 4)
    np.testing.assert_allclose(y, x.mean(axis=(1, 2)), rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = ops.global_avgpool2d_backward(dy, cache)
    assert dx.flags.writeable and dx.flags.c_contiguous
    assert_grad(dx, lambda: float(np.sum(ops.global_avgpool2d_forward(x)[0] * dy)), x, "dx")
    check_layer(build_float64(layers.GlobalAvgPool2D(), (3, 5, 4)), x, rng)


def test_model_with_batchnorm_loss_gradients():
    """Conv (no bias: batch norm cancels it) -> BatchNorm2D -> MaxPool -> GlobalAvgPool2D ->
    Dense(softmax): every parameter, float64; the buffers are in the state_dict but not among the
    parameters or gradients."""
    model = Sequential(
        [
            layers.Conv2D(3, 3, padding="same", use_bias=False),
            layers.BatchNorm2D(eps=1e-3),
            layers.MaxPool2D(2),
            layers.GlobalAvgPool2D(),
            layers.Dense(4, activation="softmax"),
        ],
        input_shape=(6, 6, 2),
        seed=0,
    )
    for layer in model.layers:
        for group in (layer.params, layer.buffers):
            for key in group:
                group[key] = group[key].astype(np.float64)
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 6, 6, 2))
    y = np.array([0, 3, 1])
    model.loss_and_gradients(x, y)
    grads = {k: g.copy() for k, g in model.gradients().items()}
    assert set(grads) == set(model.parameters()) == {"0.weight", "1.weight", "1.bias", "4.weight", "4.bias"}
    assert set(model.state_dict()) - set(grads) == {"1.running_mean", "1.running_var"}
    for key, param in model.parameters().items():
        assert_grad(grads[key], lambda: model.loss_and_gradients(x, y)[0], param, key)
    # loss_and_gradients records the batch statistics; only a training step moves the buffers
    np.testing.assert_array_equal(model.state_dict()["1.running_mean"], 0.0)
