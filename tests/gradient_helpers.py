"""Finite-difference gradient checks in float64, shared by tests/ops and tests/kernels."""

import numpy as np

EPS = 1e-6
TOL = 1e-6


def rel_error(a, b) -> float:
    """|a - b| / (|a| + |b|) over whole arrays (Euclidean norms), floored to avoid 0 / 0."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(1e-8, np.linalg.norm(a) + np.linalg.norm(b)))


def numerical_grad(f, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of x, perturbed in place."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, x)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def assert_grad(analytic, f, x, what=""):
    assert analytic.shape == x.shape, what
    assert analytic.dtype == np.float64, what
    numeric = numerical_grad(f, x)
    err = rel_error(analytic, numeric)
    assert err < TOL, f"{what}: relative error {err:.3e}"
    assert np.abs(numeric).max() > 0, f"{what}: degenerate check, the numerical gradient is all zero"


def away_from_zero(rng, shape, margin=0.05):
    """Uniform values in (-1, -margin) U (margin, 1): a ReLU's kink stays out of reach of eps."""
    return rng.uniform(margin, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
