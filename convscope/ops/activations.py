"""Element-wise activations, softmax and dropout."""

import numpy as np


def relu_forward(x):
    """max(x, 0), any shape. The cache is the mask of positive inputs."""
    positive = x > 0
    return x * positive, positive


def relu(x):
    """Inference-only max(x, 0), without the backward mask."""
    return np.maximum(x, 0)


def relu_backward(dy, cache):
    """The gradient passes where the input was positive (0 at x == 0, as in PyTorch)."""
    return dy * cache


def softmax(logits, axis: int = -1):
    """Probabilities from logits, shifted by the row maximum so exp never overflows."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_forward(x):
    """x: (N, K) -> probabilities (N, K), cache."""
    p = softmax(x)
    return p, p


def softmax_backward(dy, cache):
    """Jacobian-vector product of softmax: p * (dy - sum(dy * p))."""
    p = cache
    return p * (dy - (dy * p).sum(axis=-1, keepdims=True))


def dropout_forward(x, rate: float, rng: np.random.Generator):
    """Zero each value with probability `rate`, scale the rest by 1 / (1 - rate) ("inverted")."""
    if rate == 0.0:
        return x, None
    keep = (rng.random(x.shape, dtype=np.float32) >= rate).astype(x.dtype) / (1.0 - rate)
    return x * keep, keep


def dropout_backward(dy, cache):
    return dy if cache is None else dy * cache
