"""Shared figure plumbing: matplotlib (Agg, imported lazily), PNG bytes, and the colour scales.

Figures are plain `matplotlib.figure.Figure` objects, not pyplot ones: nothing is registered in a
global figure manager, so nothing needs closing. Every panel that shows one map (a channel, a kernel,
a patch) is labelled "panel", so tests and callers can count them: `count_panels(fig)`.

Colour scales (the report explains them once, at the top):
- images and patches: gray, 0 (black) to 1 (white), the model's own input range; colour images as RGB;
- blocks that are never negative (after ReLU or max pooling): `magma`, 0 (black) to the block's largest
  value (pale yellow), one scale shared by every panel of the block;
- blocks that can be negative (a conv before its ReLU, kernels, dense outputs): `RdBu_r`, symmetric
  around 0 (white): red positive, blue negative, one scale shared by every panel.
"""

import io

import numpy as np

PANEL = "panel"
DPI = 100
SMALL_MAP = 160  # maps up to this many pixels a side are drawn with nearest-neighbour pixels


def matplotlib_figure(width: float, height: float, layout=None):
    """A new Figure of (width, height) inches on the Agg backend ('constrained' layout if asked)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def figure_png(fig) -> bytes:
    """The figure as PNG bytes, cropped to its content."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08, facecolor="white")
    return buffer.getvalue()


def save_png(png: bytes, path) -> str:
    """Write PNG bytes to `path` and return the path."""
    with open(path, "wb") as handle:
        handle.write(png)
    return str(path)


def mark_panel(ax):
    """Label an axes as one map panel and hide its ticks and frame."""
    ax.set_label(PANEL)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


def count_panels(fig) -> int:
    return sum(ax.get_label() == PANEL for ax in fig.axes)


def colour_scale(values: np.ndarray) -> dict:
    """imshow arguments for one shared scale: magma 0..max if never negative, else RdBu_r +-max|v|."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() < 0:
        bound = float(np.abs(finite).max()) or 1.0
        return {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
    top = float(finite.max()) if finite.size else 1.0
    return {"cmap": "magma", "vmin": 0.0, "vmax": top if top > 0 else 1.0}


def grid_shape(count: int, max_columns: int = 8) -> tuple[int, int]:
    """(rows, columns) for `count` panels, at most `max_columns` wide."""
    columns = min(count, max_columns)
    return -(-count // columns), columns


def panel_grid(fig, count: int, max_columns: int = 8, top: float = 0.9):
    """`count` marked panels laid out in rows on `fig`; the unused cells of the last row are removed."""
    rows, columns = grid_shape(count, max_columns)
    layout = {"top": top, "left": 0.01, "right": 0.92, "bottom": 0.02, "wspace": 0.08, "hspace": 0.3}
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw=layout)
    flat = axes.ravel()
    for ax in flat[count:]:
        fig.delaxes(ax)
    return [mark_panel(ax) for ax in flat[:count]]


def interpolation(shape) -> str:
    """Big square pixels (nearest neighbour) for small maps, antialiased shrinking for photos."""
    return "nearest" if max(shape[:2]) <= SMALL_MAP else "antialiased"


def show_image(ax, image: np.ndarray):
    """Draw an (H, W, C) image in [0, 1] (C = 1 gray, C = 3 RGB); small images get big pixels."""
    image = np.clip(image, 0.0, 1.0)
    if image.shape[-1] == 1:
        return ax.imshow(
            image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation=interpolation(image.shape)
        )
    return ax.imshow(image, interpolation=interpolation(image.shape))


def shape_text(shape) -> str:
    """(8, 8, 16) -> '8×8×16'."""
    return "×".join(str(int(d)) for d in shape)
