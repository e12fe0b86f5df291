"""Figures of what a trained network has learned: its kernels, and the patches that excite them most.

Top patches of small images (digits, MNIST) are shown lit inside their whole image, the rest of the
image dimmed towards dark blue, so one sees which part of a stroke a kernel answers to.

Kernels are drawn on one diverging scale per layer (RdBu_r: red positive, white 0, blue negative).
Colour kernels of a first layer (kh, kw, 3, C_out) are drawn in colour instead: each weight w of the
red, green and blue slices becomes 0.5 + w / (2 max|w|), so gray is 0 and a kernel that is positive
on red looks red.
"""

import math

import numpy as np

from convscope.explain.figures import grid_shape, matplotlib_figure, panel_grid, shape_text
from convscope.explain.patches import patches_in_context

MAX_PANELS = 64
GAP_RGB = (0.80, 0.86, 0.95)  # the light blue between tiles of a mosaic
OUTSIDE_RGB = (0.10, 0.16, 0.36)  # what pixels outside a receptive field are dimmed towards
CONTEXT_MAX_SIDE = 32


def mosaic(tiles: np.ndarray, columns: int, fill) -> np.ndarray:
    """Tiles (n, h, w, ...) -> one array with `columns` tiles per row and a 1-pixel `fill` gap."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // columns)
    out = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, *tiles.shape[3:]), fill, dtype=np.float64)
    for index in range(n):
        top, left = (index // columns) * (h + 1), (index % columns) * (w + 1)
        out[top : top + h, left : left + w] = tiles[index]
    return out


def _figure_for(count: int):
    rows, columns = grid_shape(count)
    fig = matplotlib_figure(1.45 * columns + 1.2, 1.6 * rows + 0.7)
    return fig, panel_grid(fig, count, top=1 - 0.55 / (1.6 * rows + 0.7))


def _diverging(bound: float):
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d0d0d0")
    return {"cmap": cmap, "vmin": -bound, "vmax": bound, "interpolation": "nearest"}


def _print_values(ax, kernel: np.ndarray, bound: float):
    size = 7 if max(kernel.shape) <= 3 else 5
    for (row, column), value in np.ndenumerate(kernel):
        colour = "white" if abs(value) > 0.6 * bound else "black"
        ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=size, color=colour)


def first_layer_kernels_figure(weights: np.ndarray, title: str):
    """Kernels (kh, kw, C_in, C_out) of a first conv layer, one panel each: values printed in the cells
    for one-channel kernels, colour kernels in colour; deeper-looking kernels go per output channel."""
    kh, kw, c_in, c_out = weights.shape
    if c_in not in (1, 3):
        return kernels_per_output_figure(weights, title)
    shown = min(c_out, MAX_PANELS)
    fig, panels = _figure_for(shown)
    bound = float(np.abs(weights).max()) or 1.0
    for c, ax in enumerate(panels):
        if c_in == 3:
            image = ax.imshow(np.clip(0.5 + weights[:, :, :, c] / (2 * bound), 0, 1), interpolation="nearest")
        else:
            image = ax.imshow(weights[:, :, 0, c], **_diverging(bound))
            if kh * kw <= 25:
                _print_values(ax, weights[:, :, 0, c], bound)
        ax.set_title(f"kernel {c}", fontsize=8, pad=2)
    fig.suptitle(f"{title}   {shape_text(weights.shape)}", fontsize=12, x=0.02, ha="left")
    if c_in == 1:
        fig.colorbar(image, ax=panels, fraction=0.025, pad=0.015, aspect=30)
    return fig


def kernels_per_output_figure(weights: np.ndarray, title: str):
    """Kernels (kh, kw, C_in, C_out) of a deeper layer: one panel per output channel holding its C_in
    slices (kh, kw) as a mosaic read left to right, top to bottom; one diverging scale for all."""
    kh, kw, c_in, c_out = weights.shape
    shown = min(c_out, MAX_PANELS)
    fig, panels = _figure_for(shown)
    bound = float(np.abs(weights).max()) or 1.0
    columns = math.ceil(math.sqrt(c_in))
    for c, ax in enumerate(panels):
        slices = weights[:, :, :, c].transpose(2, 0, 1)  # (C_in, kh, kw)
        image = ax.imshow(mosaic(slices, columns, np.nan), **_diverging(bound))
        ax.set_title(f"kernel {c}", fontsize=8, pad=2)
    more = f", first {shown} of {c_out}" if shown < c_out else ""
    fig.suptitle(
        f"{title}   {shape_text(weights.shape)}: each panel is one kernel's {c_in} slices of {kh}×{kw}{more}",
        fontsize=12,
        x=0.02,
        ha="left",
    )
    fig.colorbar(image, ax=panels, fraction=0.025, pad=0.015, aspect=30)
    return fig


def shows_context(top, image_shape) -> bool:
    """Small images whose receptive field is smaller than the image: show each patch in its image."""
    return max(image_shape[:2]) <= CONTEXT_MAX_SIDE and any(
        size < side for size, side in zip(top.field.size, image_shape[:2], strict=True)
    )


def _tiles(top, c: int, context) -> np.ndarray:
    """Kernel c's top patches as RGB tiles (k, h, w, 3): the bare patches, or (given the output of
    patches_in_context) each whole image with everything outside the receptive field dimmed."""
    if context is None:
        tiles = np.clip(top.patches[c], 0.0, 1.0)
        return np.repeat(tiles, 3, axis=-1) if tiles.shape[-1] == 1 else tiles
    padded, inside = context
    tiles = np.clip(padded[c], 0.0, 1.0)
    tiles = np.repeat(tiles, 3, axis=-1) if tiles.shape[-1] == 1 else tiles
    dimmed = 0.4 * tiles + 0.6 * np.asarray(OUTSIDE_RGB)
    return np.where(inside[c][..., None], tiles, dimmed)


def top_patches_figure(top, title: str, images=None):
    """One panel per kernel: its top patches (TopPatches from convscope.explain.patches) as a mosaic,
    strongest top left, on the input's own 0..1 scale. Given the searched images (N, H, W, C), small
    images show each patch lit inside its dimmed image (see `shows_context`)."""
    channels, k = top.activations.shape
    in_context = images is not None and shows_context(top, images.shape[1:])
    context = patches_in_context(images, top) if in_context else None
    shown = min(channels, MAX_PANELS)
    fig, panels = _figure_for(shown)
    columns = math.ceil(math.sqrt(k))
    for c, ax in enumerate(panels):
        ax.imshow(mosaic(_tiles(top, c, context), columns, GAP_RGB), interpolation="nearest")
        ax.set_title(f"kernel {c}: max {top.activations[c, 0]:.2f}", fontsize=8, pad=2)
    where = ", lit inside their images" if in_context else ""
    fig.suptitle(
        f"{title}   (top {k} patches of {shape_text(top.field.size)} input pixels per kernel{where})",
        fontsize=12,
        x=0.02,
        ha="left",
    )
    return fig
