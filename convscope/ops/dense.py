"""Fully connected (dense, affine) layer: every output neuron sees every input value."""


def dense_forward(x, w, b):
    """x: (N, D_in), w: (D_in, D_out), b: (D_out,) or None -> y: (N, D_out), cache."""
    if x.ndim != 2:
        raise ValueError(f"dense expects a batch of vectors (N, D), got shape {x.shape}")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"dense: weights expect {w.shape[0]} inputs, got {x.shape[1]}")
    y = x @ w
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def dense_backward(dy, cache, need_dx: bool = True):
    """dy: (N, D_out) -> dx: (N, D_in) or None, dw: (D_in, D_out), db: (D_out,) or None."""
    x, w, has_bias = cache
    dw = x.T @ dy
    db = dy.sum(axis=0) if has_bias else None
    dx = dy @ w.T if need_dx else None
    return dx, dw, db


def flatten_forward(x):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), in row-major order (for images: h, w, c)."""
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dy, cache):
    """(N, D) -> the input's shape."""
    return dy.reshape(cache)
