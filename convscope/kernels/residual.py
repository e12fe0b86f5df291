"""Compiled kernels for the end of a residual block (convscope.blocks.Residual): the sum of the body's
and the shortcut's outputs with the block's ReLU, and its backward. Arrays are flat (M,) views of
contiguous blocks; both kernels run in one pass and release the GIL (the thread shards of
convscope.parallel)."""

import numpy as np

from convscope.kernels.compile import jit


@jit
def add_relu(a, b, relu, y):
    """y (M,) = a + b, then max(., 0) when `relu`: the reference's add_relu_forward."""
    for i in range(y.shape[0]):
        value = a[i] + b[i]
        y[i] = value if (value > 0.0 or not relu) else 0.0


@jit
def relu_grad(dy, y, relu, d):
    """d (M,) = dy where the block's output y is positive (everywhere without relu): the gradient
    that reaches both branches."""
    for i in range(dy.shape[0]):
        d[i] = dy[i] if (y[i] > 0.0 or not relu) else dy.dtype.type(0.0)


@jit
def add(a, b, out):
    """out (M,) = a + b: the input gradient, the body's plus the shortcut's."""
    for i in range(out.shape[0]):
        out[i] = a[i] + b[i]


def flat(array: np.ndarray) -> np.ndarray:
    """A contiguous (M,) view of `array`."""
    return np.ascontiguousarray(array).reshape(-1)
