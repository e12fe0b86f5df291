"""Arrays -> compact JSON for the page: feature maps as base64 bytes on a stated colour scale.

A block is quantised to 0..255 between `low` and `high` (the same scale as the report's figures, from
convscope.explain.figures.colour_scale); the page looks the bytes up in the named colour map.
"""

import base64

import numpy as np

from convscope.explain.figures import colour_scale

SIGNIFICANT_DIGITS = 5


def _quantise(values: np.ndarray, low: float, high: float) -> str:
    span = (high - low) or 1.0
    scaled = np.clip((np.nan_to_num(values, nan=low) - low) / span, 0.0, 1.0)
    return base64.b64encode(np.round(scaled * 255).astype(np.uint8).tobytes()).decode("ascii")


def encode_block(block: np.ndarray) -> dict:
    """A feature-map block (H, W, C) -> one 0..255 map per channel, C x H x W bytes in base64,
    on the block's shared scale: magma 0..max if never negative, else RdBu_r symmetric around 0."""
    block = np.asarray(block, dtype=np.float32)
    scale = colour_scale(block)
    return {
        "shape": list(block.shape),
        "layout": "channels",
        "colormap": scale["cmap"],
        "low": scale["vmin"],
        "high": scale["vmax"],
        "data": _quantise(block.transpose(2, 0, 1), scale["vmin"], scale["vmax"]),
    }


def encode_image(image: np.ndarray) -> dict:
    """An image (H, W, 1 or 3) in [0, 1] -> gray (H x W bytes) or RGB (H x W x 3 bytes) in base64."""
    image = np.asarray(image, dtype=np.float32)
    rgb = image.shape[2] == 3
    return {
        "shape": list(image.shape),
        "layout": "rgb" if rgb else "channels",
        "colormap": "rgb" if rgb else "gray",
        "low": 0.0,
        "high": 1.0,
        "data": _quantise(image if rgb else image.transpose(2, 0, 1), 0.0, 1.0),
    }


def encode_scaled(values: np.ndarray, low: float, high: float, colormap: str = "gray") -> dict:
    """A map (H, W, C) on a scale chosen by the caller (the playground's clipped gray scale)."""
    values = np.asarray(values, dtype=np.float32)
    rgb = colormap == "rgb"
    return {
        "shape": list(values.shape),
        "layout": "rgb" if rgb else "channels",
        "colormap": colormap,
        "low": float(low),
        "high": float(high),
        "data": _quantise(values if rgb else values.transpose(2, 0, 1), low, high),
    }


def rounded(values) -> list:
    """Floats for JSON, to SIGNIFICANT_DIGITS significant digits (plenty for a picture, much shorter to
    send); rounded with array operations, not one string per value (this runs for every prediction)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    magnitude = np.abs(values)
    exponents = np.floor(np.log10(np.where(np.isfinite(magnitude) & (magnitude > 0), magnitude, 1.0)))
    scale = 10.0 ** (SIGNIFICANT_DIGITS - 1 - exponents)
    with np.errstate(over="ignore", invalid="ignore"):
        result = np.where(np.isfinite(values), np.round(values * scale) / scale, values)
    return result.tolist()


def encode_vector(vector: np.ndarray) -> dict:
    """A flat output (D,) -> its values and the colour scale to draw them with."""
    scale = colour_scale(vector)
    return {
        "shape": [int(vector.shape[0])],
        "colormap": scale["cmap"],
        "low": scale["vmin"],
        "high": scale["vmax"],
        "values": rounded(vector),
    }


def colormap_tables(names=("magma", "RdBu_r", "gray")) -> dict:
    """Each colour map as 256 [r, g, b] byte triples, from matplotlib (so the page matches the report)."""
    from matplotlib import colormaps

    return {
        name: np.round(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(int).tolist()
        for name in names
    }
