"""Figures of what flows through the network: the input, its channels, every layer's output.

A conv layer turns its input into a block of feature maps (H, W, C): one map per kernel. A block is
drawn as a grid with one panel per channel, all on one colour scale (see convscope.explain.figures),
with big nearest-neighbour pixels so that 8x8 and 4x4 maps stay readable.
"""

import numpy as np

from convscope.explain.figures import (
    colour_scale,
    grid_shape,
    mark_panel,
    matplotlib_figure,
    panel_grid,
    shape_text,
    show_image,
)

MAX_PANELS = 64
CHANNEL_NAMES = {1: ["gray"], 3: ["red", "green", "blue"]}


def input_figure(image: np.ndarray, title: str = "input"):
    """One (H, W, C) image in [0, 1] as the model sees it, with its shape."""
    fig = matplotlib_figure(3.2, 3.4)
    ax = mark_panel(fig.add_subplot())
    show_image(ax, image)
    ax.set_title(f"{title} {shape_text(image.shape)}", fontsize=10)
    return fig


def channels_figure(image: np.ndarray):
    """Each channel of an (H, W, C) image as its own grayscale map (0 black, 1 white)."""
    channels = image.shape[2]
    names = CHANNEL_NAMES.get(channels, [f"channel {c}" for c in range(channels)])
    fig = matplotlib_figure(3.0 * channels, 3.4)
    for ax, name, c in zip(
        panel_grid(fig, channels, max_columns=channels), names, range(channels), strict=True
    ):
        ax.imshow(image[:, :, c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"{name} {shape_text(image.shape[:2])}", fontsize=10)
    return fig


def block_figure(block: np.ndarray, title: str, max_panels: int = MAX_PANELS):
    """A feature-map block (H, W, C): one panel per channel (the first `max_panels`), one colour scale
    for all of them with its colour bar, and `title` plus the shape on top."""
    channels = block.shape[2]
    shown = min(channels, max_panels)
    rows, columns = grid_shape(shown)
    fig = matplotlib_figure(1.45 * columns + 1.2, 1.55 * rows + 0.7)
    panels = panel_grid(fig, shown, top=1 - 0.55 / (1.55 * rows + 0.7))
    scale = colour_scale(block)
    for c, ax in enumerate(panels):
        image = ax.imshow(block[:, :, c], interpolation="nearest", **scale)
        ax.set_title(str(c), fontsize=8, pad=2)
    more = f" (first {shown} of {channels} channels)" if shown < channels else ""
    fig.suptitle(f"{title}   {shape_text(block.shape)}{more}", fontsize=12, x=0.02, ha="left")
    fig.colorbar(image, ax=panels, fraction=0.025, pad=0.015, aspect=30)
    return fig


def vector_figure(vector: np.ndarray, title: str, row_length: int = 64):
    """A flat output (D,) as a strip of coloured cells, `row_length` per row, shared colour scale."""
    size = vector.shape[0]
    rows = -(-size // row_length)
    columns = min(size, row_length)
    cells = np.full(rows * columns, np.nan)
    cells[:size] = vector
    fig = matplotlib_figure(min(12.0, 0.18 * columns + 1.5), 0.32 * rows + 1.0)
    ax = mark_panel(fig.add_subplot())
    image = ax.imshow(cells.reshape(rows, columns), interpolation="nearest", **colour_scale(vector))
    ax.set_title(f"{title}   ({size} values, {columns} per row, read left to right)", fontsize=10, loc="left")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    return fig


def scores_figure(scores: np.ndarray, class_names, title: str):
    """One value per class (D,) as labelled horizontal bars (positive red, negative blue)."""
    fig = matplotlib_figure(7.5, 0.32 * len(scores) + 1.0)
    ax = fig.add_subplot()
    positions = np.arange(len(scores))
    ax.barh(positions, scores, color=np.where(scores >= 0, "#c0392b", "#2e6da4"))
    ax.set_yticks(positions, [str(name) for name in class_names])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_title(title, fontsize=10, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return fig
