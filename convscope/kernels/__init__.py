"""The fast path: fused, compiled kernels for the hot loops of training and inference.

`convscope/ops/` is the reference, plain NumPy, one idea per function. This package computes the
same numbers faster: Numba-compiled loops that do in one pass what the reference does in several
(conv + bias + ReLU + 2x2 max pooling, and their backward), with the large matrix products left to
BLAS. Which layers run on which kernel is decided once per model by the plan (`plan.py`), which
`Sequential.summary()` prints; a layer or setting without a fast kernel runs its reference op.

One switch chooses the path for every model: the environment variable `CONVSCOPE_KERNELS`
(`numba`, the default, or `numpy` for the reference ops everywhere), read once, or
`convscope.kernels.set_backend(name)` / `with convscope.kernels.using(name): ...` from Python.
Numba is imported only when a numba plan is first built, so `import convscope` stays quick.
"""

import contextlib
import os

BACKENDS = ("numba", "numpy")
_ENVIRONMENT_VARIABLE = "CONVSCOPE_KERNELS"
_chosen: list[str] = []  # the backend in force, set on first use (a one-item list: no `global`)


def _checked(name) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name.strip().lower()


def backend() -> str:
    """'numba' or 'numpy': the path that models built from now on take."""
    if not _chosen:
        value = os.environ.get(_ENVIRONMENT_VARIABLE, "numba")
        try:
            _chosen.append(_checked(value))
        except ValueError:
            raise ValueError(
                f"{_ENVIRONMENT_VARIABLE}={value!r}: must be one of {', '.join(BACKENDS)}"
            ) from None
    return _chosen[0]


def set_backend(name: str) -> str:
    """Choose 'numba' or 'numpy' for every model; returns the previous choice."""
    previous = backend()
    _chosen[0] = _checked(name)
    return previous


@contextlib.contextmanager
def using(name: str):
    """Within the block, models run on `name` ('numba' or 'numpy')."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)
