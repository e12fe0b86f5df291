"""Receptive fields: which input pixels one value of a layer's output can see.

Walking the layers from the input, per spatial axis, with `size` the receptive field size, `jump` the
distance in input pixels between neighbouring output positions, and `start` the input coordinate of
the first pixel seen by output position 0 (negative inside the zero padding):

    conv or pool with kernel k, stride s, padding p_before (a kernel with dilation d spans
    k' = d * (k - 1) + 1 pixels and counts as k'):
        size  <- size + (k - 1) * jump
        start <- start - p_before * jump
        jump  <- jump * s

Output position i of that layer then sees input rows [start + i * jump, start + i * jump + size).
Element-wise layers (ReLU, Dropout) keep the receptive field; Flatten and Dense see everything.
"""

from typing import NamedTuple

from convscope.ops import as_pair


class ReceptiveField(NamedTuple):
    size: tuple[int, int]  # (height, width) in input pixels
    jump: tuple[int, int]  # input pixels between neighbouring output positions (the total stride)
    start: tuple[int, int]  # input (row, column) of the top-left pixel seen by output (0, 0)

    def window(self, row: int, column: int) -> tuple[slice, slice]:
        """Input rows and columns seen by output position (row, column); may reach into the padding."""
        top = self.start[0] + row * self.jump[0]
        left = self.start[1] + column * self.jump[1]
        return slice(top, top + self.size[0]), slice(left, left + self.size[1])


INPUT_FIELD = ReceptiveField((1, 1), (1, 1), (0, 0))


def _window_geometry(layer):
    """(span (h, w), stride (sh, sw), padding ((t, b), (l, r))) of a conv or pool layer, else None."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        span = tuple(d * (k - 1) + 1 for k, d in zip(layer.kernel_size, layer.dilation, strict=True))
        return span, layer.stride, layer.padding
    if kind in ("MaxPool2D", "AvgPool2D"):
        return layer.pool_size, layer.stride, layer.padding
    return None


def grow(field: ReceptiveField, kernel, stride, padding) -> ReceptiveField:
    """The receptive field after one more conv or pool window (see the module docstring); stride an
    int or a pair (sh, sw)."""
    stride = as_pair(stride)
    return ReceptiveField(
        size=tuple(field.size[a] + (kernel[a] - 1) * field.jump[a] for a in range(2)),
        jump=tuple(field.jump[a] * stride[a] for a in range(2)),
        start=tuple(field.start[a] - padding[a][0] * field.jump[a] for a in range(2)),
    )


def _through(field: ReceptiveField, layers) -> list:
    """The field after each of `layers` in turn, starting from `field` (None once the output is flat).
    A residual block's field is its body's: the body's windows cover all the shortcut sees (a
    subsampled identity or a 1x1 projection) for the blocks convscope.models builds."""
    fields = []
    for layer in layers:
        if field is not None and len(layer.output_shape) != 3:
            field = None
        elif field is not None and hasattr(layer, "named_layers"):
            field = _through(field, layer.body)[-1]
        elif field is not None:
            geometry = _window_geometry(layer)
            if geometry is not None:
                field = grow(field, *geometry)
            elif tuple(layer.output_shape) != tuple(layer.input_shape):
                raise ValueError(f"cannot trace the receptive field through layer {layer.name}")
        fields.append(field)
    return fields


def receptive_fields(model) -> list:
    """One entry per layer of a built model: its ReceptiveField, or None once the output is flat."""
    return _through(INPUT_FIELD, model.layers)
