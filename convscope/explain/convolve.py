"""One kernel over one photo, with the engine's own conv op, and the figure that shows it.

A colour photo is three 2D matrices (red, green, blue). By default the kernel is given depth 3 (the
same (kh, kw) weights for every channel) and the three products are summed into one feature map, as a
conv layer does; with `per_channel=True` each channel is convolved on its own, giving three maps.
"""

import os

import numpy as np

from convscope.explain.figures import interpolation, mark_panel, matplotlib_figure, shape_text, show_image
from convscope.ops import conv2d_forward, resolve_padding

SAMPLE_PHOTO = "china.jpg"  # scikit-learn ships it, so the command works offline
DEFAULT_MAX_SIDE = 800
DISPLAY_PERCENTILE = 99.5


def sample_photo() -> np.ndarray:
    """scikit-learn's bundled china.jpg as (427, 640, 3) float32 in [0, 1]."""
    from sklearn.datasets import load_sample_image

    return load_sample_image(SAMPLE_PHOTO).astype(np.float32) / 255.0


def read_photo(path, max_side: int = DEFAULT_MAX_SIDE, gray: bool = False):
    """An image file at its own size as (H, W, C) float32 in [0, 1], C = 1 or 3; (array, notes).

    Images with a side longer than `max_side` are shrunk (keeping the aspect ratio) so that the
    convolution fits in memory; transparent ones are flattened onto white.
    """
    from PIL import Image

    from convscope.data.images import _flatten_alpha, _open_image

    image, note = _flatten_alpha(_open_image(os.fspath(path)))
    notes = [note] if note else []
    mode = "L" if gray or image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
        notes.append(f"converted to {'grayscale' if mode == 'L' else 'RGB'}")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        notes.append(
            f"resized {image.size[1]}x{image.size[0]} to {size[1]}x{size[0]} (height x width, "
            f"--max-side {max_side})"
        )
        image = image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return (pixels[..., None] if pixels.ndim == 2 else pixels), notes


def convolve_image(
    image: np.ndarray, kernel: np.ndarray, padding="valid", stride: int = 1, per_channel=False
):
    """Convolve one (H, W, C) image with one (kh, kw) kernel using convscope.ops.conv2d_forward.

    Summed (default): the kernel gets depth C and the C products are added -> (H_out, W_out, 1).
    per_channel: every channel is convolved on its own -> (H_out, W_out, C).
    H_out = floor((H + 2p - kh) / stride) + 1 (likewise W_out), p from `padding` ('same', 'valid', int).
    """
    image = np.asarray(image, dtype=np.float32)
    kernel = np.asarray(kernel, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"convolve_image needs one (H, W, C) image, got shape {image.shape}")
    if kernel.ndim != 2:
        raise ValueError(f"convolve_image needs a (kh, kw) kernel, got shape {kernel.shape}")
    height, width, channels = image.shape
    if per_channel:
        batch = image.transpose(2, 0, 1)[..., None]  # (C, H, W, 1): each channel its own image
        maps, _ = conv2d_forward(batch, kernel[:, :, None, None], None, stride, padding)
        return maps[..., 0].transpose(1, 2, 0)
    weights = np.repeat(kernel[:, :, None, None], channels, axis=2)  # (kh, kw, C, 1)
    maps, _ = conv2d_forward(image[None], weights, None, stride, padding)
    return maps[0]


def size_rule_text(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> str:
    """'floor((427 + 2·1 − 3) / 1) + 1 = 427', the documented output size rule with numbers in."""
    padding = f"2·{pad[0]}" if pad[0] == pad[1] else f"{pad[0]}+{pad[1]}"
    out = (size + pad[0] + pad[1] - kernel) // stride + 1
    return f"floor(({size} + {padding} − {kernel}) / {stride}) + 1 = {out}"


def _draw_kernel(ax, kernel: np.ndarray, title: str):
    """Kernel weights as coloured cells (RdBu_r, symmetric around 0) with each value printed."""
    bound = float(np.abs(kernel).max()) or 1.0
    ax.imshow(kernel, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    size = 11 if max(kernel.shape) <= 3 else 8 if max(kernel.shape) <= 5 else 6
    for (row, column), value in np.ndenumerate(kernel):
        dark = abs(value) > 0.6 * bound
        text = f"{value:.3g}"
        ax.text(
            column, row, text, ha="center", va="center", fontsize=size, color="white" if dark else "black"
        )
    ax.set_title(title, fontsize=10)
    mark_panel(ax)


def _display_map(feature_map: np.ndarray) -> tuple[np.ndarray, dict, str]:
    """Feature map (H, W, 1 or C) -> (array to draw, imshow arguments, a note on the scale).

    The scale is clipped at the 99.5th percentile of |values|, so a few extreme pixels do not turn
    everything else gray.
    """
    if feature_map.shape[-1] == 1:
        values = feature_map[..., 0]
        if values.min() < 0:
            bound = float(np.percentile(np.abs(values), DISPLAY_PERCENTILE)) or 1.0
            args = {"cmap": "gray", "vmin": -bound, "vmax": bound}
            return values, args, f"gray: black −{bound:.2g}, mid-gray 0, white +{bound:.2g}"
        top = float(np.percentile(values, DISPLAY_PERCENTILE)) or 1.0
        return values, {"cmap": "gray", "vmin": 0.0, "vmax": top}, f"gray: black 0, white {top:.2g}"
    if feature_map.min() >= 0:
        top = max(1.0, float(np.percentile(feature_map, DISPLAY_PERCENTILE)))
        return np.clip(feature_map / top, 0, 1), {}, f"RGB per channel: black 0, full {top:.2g}"
    bound = float(np.percentile(np.abs(feature_map), DISPLAY_PERCENTILE)) or 1.0
    shown = np.clip(0.5 + feature_map / (2 * bound), 0, 1)
    return shown, {}, f"RGB per channel: 0 is mid-gray, ±{bound:.2g} is full"


def _draw_map(ax, feature_map: np.ndarray, title: str):
    shown, args, scale_note = _display_map(feature_map)
    ax.imshow(shown, interpolation=interpolation(shown.shape), **args)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(scale_note, fontsize=9)
    mark_panel(ax)


def _layout(fig, with_relu: bool) -> dict:
    """Axes by role: one row (input, kernel, map), or two (input, kernel / map, after ReLU)."""
    if with_relu:
        return fig.subplot_mosaic([["input", "kernel"], ["map", "relu"]])
    return fig.subplot_mosaic([["input", "kernel", "map"]], width_ratios=[1, 0.42, 1])


def convolution_figure(image, kernel, feature_map, padding="valid", stride: int = 1, kernel_label="kernel"):
    """Input | kernel (values in the cells) | feature map, shapes in the titles, the size rule on top;
    when the map has negative values also the map after ReLU, where the kernel's pattern is bright.

    image (H, W, C) in [0, 1], kernel (kh, kw), feature_map (H_out, W_out, 1 or C).
    """
    height, width, channels = image.shape
    kh, kw = kernel.shape
    pads = resolve_padding(padding, (kh, kw), stride)
    summed = channels > 1 and feature_map.shape[-1] == 1
    with_relu = bool(feature_map.min() < 0)
    fig = matplotlib_figure(11, 8.6 if with_relu else 4.0, layout="constrained")
    axes = _layout(fig, with_relu)
    show_image(axes["input"], image)
    axes["input"].set_title(f"input {shape_text(image.shape)}", fontsize=11)
    mark_panel(axes["input"])
    name = kernel_label.removesuffix(f" {kh}x{kw}")  # "custom 3x3" already says its size
    _draw_kernel(axes["kernel"], kernel, f"{name} {kh}×{kw}")
    if summed:
        axes["kernel"].set_xlabel(f"depth {channels}: the same weights\non each colour channel", fontsize=9)
    elif channels > 1:
        axes["kernel"].set_xlabel("slid over each colour\nchannel on its own", fontsize=9)
    how = f"sum over {channels} channels" if summed else "one map per channel" if channels > 1 else "one map"
    _draw_map(axes["map"], feature_map, f"feature map {shape_text(feature_map.shape)} ({how})")
    if with_relu:
        _draw_map(axes["relu"], np.maximum(feature_map, 0), "after ReLU: max(0, feature map)")
    fig.suptitle(
        f"padding {padding!s}, stride {stride}:   height {size_rule_text(height, kh, stride, pads[0])},   "
        f"width {size_rule_text(width, kw, stride, pads[1])}",
        fontsize=11,
    )
    return fig
