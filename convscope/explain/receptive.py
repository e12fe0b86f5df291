"""Receptive fields: which input pixels one value of a layer's output can see.

Walking the layers from the input, per spatial axis, with `size` the receptive field size, `jump` the
distance in input pixels between neighbouring output positions, and `start` the input coordinate of
the first pixel seen by output position 0 (negative inside the zero padding):

    conv or pool with kernel k, stride s, padding p_before:
        size  <- size + (k - 1) * jump
        start <- start - p_before * jump
        jump  <- jump * s

Output position i of that layer then sees input rows [start + i * jump, start + i * jump + size).
Element-wise layers (ReLU, Dropout) keep the receptive field; Flatten and Dense see everything.
"""

from typing import NamedTuple

from convscope.ops import resolve_padding


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
    """(kernel (kh, kw), stride, padding ((t, b), (l, r))) of a conv or pool layer, else None."""
    kind = type(layer).__name__
    config = layer.get_config()
    if kind == "Conv2D":
        kernel = tuple(config["kernel_size"])
        stride = int(config["stride"])
        return kernel, stride, resolve_padding(config["padding"], kernel, stride)
    if kind == "MaxPool2D":
        kernel = tuple(config["pool_size"])
        return kernel, int(config["stride"]), ((0, 0), (0, 0))
    return None


def grow(field: ReceptiveField, kernel, stride: int, padding) -> ReceptiveField:
    """The receptive field after one more conv or pool window (see the module docstring)."""
    return ReceptiveField(
        size=tuple(field.size[a] + (kernel[a] - 1) * field.jump[a] for a in range(2)),
        jump=tuple(field.jump[a] * stride for a in range(2)),
        start=tuple(field.start[a] - padding[a][0] * field.jump[a] for a in range(2)),
    )


def receptive_fields(model) -> list:
    """One entry per layer of a built model: its ReceptiveField, or None once the output is flat."""
    field = INPUT_FIELD
    fields = []
    for layer in model.layers:
        if field is not None and len(layer.output_shape) != 3:
            field = None
        elif field is not None:
            geometry = _window_geometry(layer)
            if geometry is not None:
                field = grow(field, *geometry)
            elif tuple(layer.output_shape) != tuple(layer.input_shape):
                raise ValueError(f"cannot trace the receptive field through layer {layer.name}")
        fields.append(field)
    return fields
