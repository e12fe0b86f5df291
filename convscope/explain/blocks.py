"""Residual blocks in the explain report: what a block does, and the feature maps inside it (each body
layer's output, the shortcut's) beside its output, the residual stream that the next block reads."""

import numpy as np

from convscope.explain import feature_maps
from convscope.explain.figures import shape_text

INSIDE_PANELS = 16  # channels drawn per map inside a block (the block's output shows all, up to 64)


def _shortcut_text(block) -> str:
    if not block.shortcut:
        return "the block's input itself (an identity shortcut)"
    kinds = [type(layer).__name__ for layer in block.shortcut]
    if kinds == ["SubsampleZeroPad"]:
        return (
            "the block's input, every second pixel kept and zero channels appended to match "
            "(the paper's option A: no parameters)"
        )
    return f"the block's input through {' - '.join(kinds)} (a projection: the paper's option B)"


def residual_text(block, field_text: str = "") -> str:
    """What a Residual block does, with its shapes filled in."""
    body = " - ".join(type(layer).__name__ for layer in block.body)
    relu = ", then ReLU" if block.relu else ""
    return (
        f"A residual block: its body ({body}) turns the {shape_text(block.input_shape)} input into a "
        f"{shape_text(block.output_shape)} change, which is added to {_shortcut_text(block)}{relu}. "
        "The body only has to learn what to add, so very deep stacks of blocks still train; the output, "
        "the residual stream, is what the next block reads. Below: each layer inside, then the output."
        + field_text
    )


def add_insides(section, block, block_input: np.ndarray):
    """Figures of the feature maps inside `block` for one image's block input (H, W, C): every body
    layer's output, then the shortcut's (when it is not the identity)."""
    body, shortcut = block.branch_outputs(block_input[None])
    inside = [(layer, output) for layer, output in zip(block.body, body, strict=True)]
    inside += [(layer, output) for layer, output in zip(block.shortcut, shortcut, strict=True)]
    for layer, output in inside:
        title = f"{layer.name} ({type(layer).__name__})"
        figure = feature_maps.block_figure(output[0], title, max_panels=INSIDE_PANELS)
        where = "shortcut" if ".shortcut." in layer.name else "body"
        section.add(f"{layer.name}-feature-maps", f"inside the block ({where}): {title}", figure)
    return section
