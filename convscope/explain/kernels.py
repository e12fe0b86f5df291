"""Classic hand-made kernels, as named (kh, kw) float32 arrays, and a parser for kernels typed as rows.

The conv op computes a cross-correlation (the kernel is not flipped), as every CNN library does, so a
kernel reads the way it is written: `sobel_x` is positive where the image gets brighter to the right.
"""

import re
from typing import NamedTuple

import numpy as np


class ClassicKernel(NamedTuple):
    name: str
    values: np.ndarray  # (kh, kw) float32
    description: str


def _kernel(rows, scale=1.0) -> np.ndarray:
    return (np.asarray(rows, dtype=np.float64) * scale).astype(np.float32)


_GAUSS_5 = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1])

CLASSIC_KERNELS = {
    kernel.name: kernel
    for kernel in (
        ClassicKernel(
            "vertical_line",
            _kernel([[-1, 2, -1], [-1, 2, -1], [-1, 2, -1]]),
            "bright where a thin vertical line is brighter than both sides; sums to 0, so flat areas give 0",
        ),
        ClassicKernel(
            "horizontal_line",
            _kernel([[-1, -1, -1], [2, 2, 2], [-1, -1, -1]]),
            "bright where a thin horizontal line is brighter than the rows above and below it",
        ),
        ClassicKernel(
            "sobel_x",
            _kernel([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
            "vertical edges: positive where the image gets brighter to the right, negative to the left",
        ),
        ClassicKernel(
            "sobel_y",
            _kernel([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
            "horizontal edges: positive where the image gets brighter downwards",
        ),
        ClassicKernel(
            "laplacian",
            _kernel([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
            "edges in every direction: a pixel minus the average of its four neighbours (times 4)",
        ),
        ClassicKernel(
            "sharpen",
            _kernel([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
            "the identity plus the negative Laplacian: edges stand out, flat areas stay as they are",
        ),
        ClassicKernel("box_blur", _kernel(np.ones((3, 3)), 1 / 9), "the mean of the 3x3 neighbourhood"),
        ClassicKernel(
            "gaussian_blur",
            _kernel([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16),
            "a 3x3 weighted mean, heavier at the centre: a softer blur than box_blur",
        ),
        ClassicKernel(
            "gaussian_blur_5x5", _kernel(_GAUSS_5, 1 / 256), "a 5x5 Gaussian (binomial) blur: a wider blur"
        ),
        ClassicKernel(
            "emboss",
            _kernel([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
            "relief: edges facing the bottom right light up, those facing the top left go dark",
        ),
        ClassicKernel(
            "identity",
            _kernel([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
            "copies the image: only the centre weight is 1",
        ),
    )
}
KERNEL_ALIASES = {"gaussian_blur_3x3": "gaussian_blur", "sobel": "sobel_x", "blur": "box_blur"}
KERNEL_EXAMPLE = "'0 1 0; 0 1 0; 0 1 0'"


def classic_kernel(name: str) -> np.ndarray:
    """A copy of a named classic kernel, (kh, kw) float32; ValueError listing the names if unknown."""
    key = KERNEL_ALIASES.get(name.lower(), name.lower())
    if key not in CLASSIC_KERNELS:
        raise ValueError(
            f"unknown kernel {name!r}; known: {', '.join(CLASSIC_KERNELS)}; "
            f"or type rows like {KERNEL_EXAMPLE}"
        )
    return CLASSIC_KERNELS[key].values.copy()


def _parse_number(token: str, row: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"kernel row {row} has {token!r}, which is not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"kernel row {row} has {token!r}, which is not a finite number")
    return value


def parse_kernel(text: str) -> np.ndarray:
    """Rows separated by ';' (or newlines), values by spaces or commas -> (kh, kw) float32.

    '0 1 0; 0 1 0; 0 1 0' is a 3x3 kernel. Both sides must be odd so the kernel has a centre pixel.
    """
    rows = [row.strip() for row in re.split(r"[;\n]", text.strip())]
    if not any(rows):
        raise ValueError(f"the kernel is empty: type rows of numbers like {KERNEL_EXAMPLE}")
    if not all(rows):
        raise ValueError(f"the kernel {text!r} has an empty row: type rows of numbers like {KERNEL_EXAMPLE}")
    values = [
        [_parse_number(token, index) for token in re.split(r"[,\s]+", row) if token]
        for index, row in enumerate(rows, start=1)
    ]
    lengths = [len(row) for row in values]
    if len(set(lengths)) > 1:
        ragged = next(i for i, n in enumerate(lengths) if n != lengths[0])
        raise ValueError(
            f"the kernel's rows must all have the same length: row 1 has {lengths[0]} values, "
            f"row {ragged + 1} has {lengths[ragged]}"
        )
    kernel = np.asarray(values, dtype=np.float32)
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(
            f"the kernel must have an odd number of rows and columns so it has a centre pixel, "
            f"got {kernel.shape[0]}x{kernel.shape[1]}"
        )
    return kernel


def get_kernel(spec: str) -> tuple[str, np.ndarray]:
    """A kernel by name ('sobel_x') or typed as rows ('0 1 0; 0 1 0; 0 1 0'): (label, (kh, kw) array)."""
    spec = spec.strip()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
        return KERNEL_ALIASES.get(spec.lower(), spec.lower()), classic_kernel(spec)
    kernel = parse_kernel(spec)
    return f"custom {kernel.shape[0]}x{kernel.shape[1]}", kernel
