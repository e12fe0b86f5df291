"""Figures of why a network decides: attribution heat maps over the input, what each kernel and class
wants to see (activation maximisation), network health, and how the first layer's kernels grew.

Colour scales, stated on every figure: attribution maps that are never negative (gradient, SmoothGrad,
Grad-CAM) use magma from 0 to the map's largest value; occlusion, which can be negative, uses RdBu_r
symmetric around 0. Overlays draw the input in gray and the heat map on top, 55% opaque. Optimised
images are pixels on the input's own 0..1 scale, like the top patches beside them.
"""

import numpy as np

from convscope.explain.figures import matplotlib_figure, panel_grid, shape_text, show_image
from convscope.explain.learned import GAP_RGB, OUTSIDE_RGB, mosaic

OVERLAY_ALPHA = 0.55
MAX_PANELS = 64
MAX_STRIP_COLUMNS = 16
MAX_STRIP_ROWS = 32


def _gray(image: np.ndarray) -> np.ndarray:
    """(H, W, C) in 0..1 -> (H, W) luminance, for the overlays."""
    return image[..., 0] if image.shape[-1] == 1 else image @ np.array([0.299, 0.587, 0.114], np.float32)


def attribution_scale(attribution) -> dict:
    """imshow arguments of a map: RdBu_r symmetric for occlusion, magma 0..max for the others."""
    values = attribution.values
    if attribution.signed:
        bound = float(np.abs(values).max()) or 1.0
        return {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
    return {"cmap": "magma", "vmin": 0.0, "vmax": float(values.max()) or 1.0}


def method_title(attribution) -> str:
    extra = ""
    if attribution.method == "gradcam":
        extra = f" on {attribution.layer}"
    elif attribution.method == "occlusion":
        extra = (
            f" {attribution.settings['size']}×{attribution.settings['size']}/{attribution.settings['stride']}"
        )
    elif attribution.method == "smoothgrad":
        extra = f" n={attribution.settings['samples']}"
    return f"{attribution.method}{extra}\n{attribution.seconds * 1000:.0f} ms"


def attribution_figure(image: np.ndarray, attributions, title: str):
    """The input, then each method's map (top row) and the map over the input (bottom row), each with
    its colour bar."""
    count = len(attributions) + 1
    fig = matplotlib_figure(2.3 * count + 0.6, 5.6)
    axes = fig.subplots(2, count, squeeze=False, gridspec_kw={"hspace": 0.35, "wspace": 0.3})
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_label("panel")
    show_image(axes[0, 0], image)
    axes[0, 0].set_title(f"input {shape_text(image.shape)}", fontsize=9)
    axes[1, 0].set_axis_off()
    gray = _gray(image)
    for column, attribution in enumerate(attributions, start=1):
        scale = attribution_scale(attribution)
        shown = axes[0, column].imshow(attribution.values, interpolation="nearest", **scale)
        axes[0, column].set_title(method_title(attribution), fontsize=9)
        fig.colorbar(shown, ax=axes[0, column], fraction=0.046, pad=0.03)
        axes[1, column].imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        over = axes[1, column].imshow(
            attribution.values, interpolation="nearest", alpha=OVERLAY_ALPHA, **scale
        )
        fig.colorbar(over, ax=axes[1, column], fraction=0.046, pad=0.03)
        row, col = attribution.peak()
        axes[1, column].plot([col], [row], marker="+", color="cyan", markersize=10, mew=2)
        axes[1, column].set_title("over the input (+ = peak)", fontsize=8)
    fig.suptitle(title, fontsize=11, x=0.02, ha="left")
    return fig


def _dimmed_outside(images: np.ndarray, field, positions) -> np.ndarray:
    """RGB tiles (K, H, W, 3) of the images with everything outside the receptive field of each one's
    position (K, 2) dimmed towards dark blue, as the top patches are shown."""
    tiles = np.clip(images, 0.0, 1.0)
    tiles = np.repeat(tiles, 3, axis=-1) if tiles.shape[-1] == 1 else tiles
    inside = np.zeros(tiles.shape[:3], dtype=bool)
    for k, position in enumerate(positions):
        rows, columns = field.window(*position)
        inside[k, max(rows.start, 0) : max(rows.stop, 0), max(columns.start, 0) : max(columns.stop, 0)] = True
    dimmed = 0.4 * tiles + 0.6 * np.asarray(OUTSIDE_RGB)
    return np.where(inside[..., None], tiles, dimmed)


def maximized_kernels_figure(result, title: str):
    """One panel per kernel (the first MAX_PANELS): its optimised input, the receptive field of its
    strongest position lit and the rest dimmed; the value reached above it."""
    shown = min(len(result.images), MAX_PANELS)
    columns = min(shown, 8)
    rows = -(-shown // columns)
    fig = matplotlib_figure(1.45 * columns + 0.4, 1.6 * rows + 0.7)
    panels = panel_grid(fig, shown, top=1 - 0.55 / (1.6 * rows + 0.7))
    tiles = _dimmed_outside(result.images[:shown], result.field, result.positions[:shown])
    for c, ax in enumerate(panels):
        ax.imshow(tiles[c], interpolation="nearest")
        ax.set_title(f"kernel {c}: {result.values[c]:.2f}", fontsize=8, pad=2)
    more = f", first {shown} of {len(result.images)}" if shown < len(result.images) else ""
    fig.suptitle(
        f"{title}   (optimised inputs, pixels 0..1; lit: the {shape_text(result.field.size)} receptive field "
        f"of the strongest position{more})",
        fontsize=11,
        x=0.02,
        ha="left",
    )
    return fig


def maximized_classes_figure(result, names, title: str):
    """One panel per class: the input that maximises its logit, the logit reached above it."""
    count = len(result.images)
    columns = min(count, 10)
    rows = -(-count // columns)
    fig = matplotlib_figure(1.55 * columns + 0.4, 1.75 * rows + 0.7)
    panels = panel_grid(fig, count, max_columns=columns, top=1 - 0.55 / (1.75 * rows + 0.7))
    for c, ax in enumerate(panels):
        show_image(ax, result.images[c])
        ax.set_title(f"{names[c]}: {result.values[c]:.1f}", fontsize=8, pad=2)
    fig.suptitle(f"{title}   (pixels 0..1; above each: the logit reached)", fontsize=11, x=0.02, ha="left")
    return fig


def health_figure(report, title: str):
    """Left: the share of dead units of every ReLU layer (red over half). Right: the rms of every
    weight gradient, log scale."""
    fig = matplotlib_figure(11.0, 3.4)
    left, right = fig.subplots(1, 2, gridspec_kw={"wspace": 0.35})
    relus = [layer for layer in report if layer.relu_units]
    names = [layer.name for layer in relus]
    shares = [layer.dead_share for layer in relus]
    left.bar(names, shares, color=["#c0392b" if s > 0.5 else "#27ae60" for s in shares])
    left.axhline(0.5, color="gray", linestyle="--", linewidth=0.8)
    left.set_ylim(0, 1)
    left.set_ylabel("dead share (never active)")
    left.tick_params(axis="x", rotation=45, labelsize=8)
    weighted = [
        (layer.name, layer.gradient_rms["weight"]) for layer in report if "weight" in layer.gradient_rms
    ]
    right.bar([n for n, _ in weighted], [max(v, 1e-30) for _, v in weighted], color="#2980b9")
    right.set_yscale("log")
    right.set_ylabel("rms of the weight gradient")
    right.tick_params(axis="x", rotation=45, labelsize=8)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=11, x=0.02, ha="left")
    return fig


def _strip_columns(count: int) -> list[int]:
    """At most MAX_STRIP_COLUMNS snapshot indices, evenly spread, first and last included."""
    if count <= MAX_STRIP_COLUMNS:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, MAX_STRIP_COLUMNS)})


def _epoch_label(epochs: float) -> str:
    return f"{epochs:.0f}" if float(epochs).is_integer() else f"{epochs:.2f}"


def kernel_growth_figure(snapshots, title: str):
    """Each first-layer kernel as a row of cells, one per snapshot (columns: epochs), on one diverging
    scale (RdBu_r) for all; colour kernels in colour (gray is 0)."""
    import matplotlib

    picks = _strip_columns(len(snapshots.steps))
    kernels = np.stack([snapshots.kernels[i] for i in picks])  # (S, kh, kw, C_in, C_out)
    _, kh, kw, c_in, c_out = kernels.shape
    rows = min(c_out, MAX_STRIP_ROWS)
    bound = float(np.abs(kernels).max()) or 1.0
    if c_in == 3:
        cells = np.clip(0.5 + kernels / (2 * bound), 0, 1).transpose(4, 0, 1, 2, 3)[
            :rows
        ]  # (K, S, kh, kw, 3)
        fill = GAP_RGB
    else:
        cells = kernels[:, :, :, 0].transpose(3, 0, 1, 2)[:rows]  # first input channel (K, S, kh, kw)
        fill = np.nan
    tiles = cells.reshape(rows * len(picks), *cells.shape[2:])
    image = mosaic(tiles, len(picks), fill)
    fig = matplotlib_figure(0.42 * len(picks) * max(kw, 3) / 3 + 1.8, 0.42 * rows * max(kh, 3) / 3 + 1.3)
    ax = fig.add_subplot()
    if c_in == 3:
        ax.imshow(image, interpolation="nearest")
    else:
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d0d0d0")
        shown = ax.imshow(image, cmap=cmap, vmin=-bound, vmax=bound, interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.02)
    ax.set_xticks([(kw + 1) * i + (kw - 1) / 2 for i in range(len(picks))])
    ax.set_xticklabels([_epoch_label(snapshots.epochs[i]) for i in picks], fontsize=7)
    ax.set_yticks([(kh + 1) * k + (kh - 1) / 2 for k in range(rows)])
    ax.set_yticklabels([f"kernel {k}" for k in range(rows)], fontsize=7)
    ax.set_xlabel("epochs trained")
    depth = "" if c_in in (1, 3) else f" (input channel 0 of {c_in})"
    ax.set_title(f"{title}{depth}", fontsize=10, loc="left")
    return fig


def feature_map_growth_figure(snapshots, title: str):
    """The fixed image's first-layer feature maps (rows: channels) at each snapshot (columns: epochs),
    on one colour scale for all (RdBu_r around 0, or magma when never negative)."""
    from convscope.explain.figures import colour_scale

    picks = _strip_columns(len(snapshots.steps))
    maps = np.stack([snapshots.feature_maps[i] for i in picks])  # (S, h, w, C)
    _, h, w, channels = maps.shape
    rows = min(channels, MAX_STRIP_ROWS)
    tiles = maps.transpose(3, 0, 1, 2)[:rows].reshape(rows * len(picks), h, w)
    image = mosaic(tiles, len(picks), np.nan)
    scale = colour_scale(maps)
    width = min(16.0, 0.5 * len(picks) * max(w, 8) / 8 + 2.5)
    fig = matplotlib_figure(width, min(22.0, 0.5 * rows * max(h, 8) / 8 + 1.3))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 7], "wspace": 0.25})
    show_image(axes[0], snapshots.image)
    axes[0].set_title("the fixed image", fontsize=8)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    shown = axes[1].imshow(image, interpolation="nearest", **scale)
    axes[1].set_xticks([(w + 1) * i + (w - 1) / 2 for i in range(len(picks))])
    axes[1].set_xticklabels([_epoch_label(snapshots.epochs[i]) for i in picks], fontsize=7)
    axes[1].set_yticks([(h + 1) * k + (h - 1) / 2 for k in range(rows)])
    axes[1].set_yticklabels([f"map {k}" for k in range(rows)], fontsize=7)
    axes[1].set_xlabel("epochs trained")
    fig.colorbar(shown, ax=axes[1], fraction=0.03, pad=0.02)
    axes[1].set_title(title, fontsize=10, loc="left")
    return fig


def strip_count(snapshots) -> int:
    return len(_strip_columns(len(snapshots.steps)))
