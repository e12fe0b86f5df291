"""PyTorch -> convscope: an nn.Sequential of the layers convscope has, weights included.

The torch model takes (N, C, H, W) images, the convscope model (N, H, W, C). Each torch module
becomes one convscope layer at the same index, so the state_dict names ('0.weight', ...) are the
same. Kernels go from (C_out, C_in, kh, kw) to (kh, kw, C_in, C_out), Linear weights from
(D_out, D_in) to (D_in, D_out); the first Linear after a Flatten of an image block has its input
axis reordered from torch's (c, h, w) to convscope's (h, w, c).

Anything convscope cannot compute exactly is refused with an error naming the module's index,
its type and the setting: dilation, groups, padding modes other than zeros, ceil_mode, a stride
that differs between height and width, batch normalisation, and modules convscope does not have.
"""

import numpy as np

from convscope import layers as L
from convscope.interop.pytorch import check_flatten_order, conv_weight_from_torch, dense_weight_from_torch
from convscope.model import Sequential

SUPPORTED = "Conv2d, ReLU, MaxPool2d, Flatten, Linear, Dropout, Softmax"


def _where(index: int, module) -> str:
    return f"from_torch: layer {index} ({type(module).__name__})"


def _require(where: str, setting: str, value, fits):
    if value != fits:
        raise ValueError(
            f"{where}: {setting}={value!r} is not supported (convscope needs {setting}={fits!r})"
        )


def _square(where: str, setting: str, value) -> int:
    """An int, or a pair with both entries equal -> that int; anything else is an error."""
    if isinstance(value, int):
        return value
    if len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(
        f"{where}: {setting}={tuple(value)!r} is not supported (convscope needs the same {setting} for "
        "height and width)"
    )


def _conv_padding(where: str, module):
    """torch's padding ('same', 'valid' or (ph, pw)) -> convscope's ('same', 'valid' or an int)."""
    padding = module.padding
    if isinstance(padding, str):
        return padding
    kh, kw = module.kernel_size
    if padding[0] == padding[1]:
        return "valid" if padding[0] == 0 else int(padding[0])
    if kh % 2 and kw % 2 and tuple(padding) == ((kh - 1) // 2, (kw - 1) // 2) and module.stride == (1, 1):
        return "same"  # keeps the size: the same numbers as convscope's padding='same'
    raise ValueError(
        f"{where}: padding={tuple(padding)!r} is not supported (convscope pads height and width alike, "
        "or uses 'same')"
    )


def _conv2d(where: str, module) -> L.Conv2D:
    _require(where, "dilation", tuple(module.dilation), (1, 1))
    _require(where, "groups", module.groups, 1)
    _require(where, "padding_mode", module.padding_mode, "zeros")
    stride = _square(where, "stride", module.stride)
    padding = _conv_padding(where, module)
    return L.Conv2D(
        module.out_channels,
        tuple(module.kernel_size),
        stride=stride,
        padding=padding,
        use_bias=module.bias is not None,
    )


def _maxpool2d(where: str, module) -> L.MaxPool2D:
    _require(where, "ceil_mode", module.ceil_mode, False)
    _require(where, "return_indices", module.return_indices, False)
    for setting, fits in (("padding", 0), ("dilation", 1)):
        value = getattr(module, setting)
        if value not in (fits, (fits, fits)):
            raise ValueError(
                f"{where}: {setting}={value!r} is not supported (convscope needs {setting}={fits})"
            )
    kernel = module.kernel_size
    pool_size = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return L.MaxPool2D(pool_size, stride=_square(where, "stride", module.stride))


def _flatten(where: str, module) -> L.Flatten:
    _require(where, "start_dim", module.start_dim, 1)
    _require(where, "end_dim", module.end_dim, -1)
    return L.Flatten()


def _softmax(where: str, module) -> L.Softmax:
    if module.dim not in (None, 1, -1):
        raise ValueError(f"{where}: dim={module.dim!r} is not supported (convscope's Softmax is over dim 1)")
    return L.Softmax()


def _layer(index: int, module) -> L.Layer:
    """One torch module -> the equivalent unbuilt convscope layer, or a ValueError naming it."""
    from torch import nn

    where = _where(index, module)
    converters = {
        nn.Conv2d: _conv2d,
        nn.MaxPool2d: _maxpool2d,
        nn.Flatten: _flatten,
        nn.Softmax: _softmax,
        nn.Linear: lambda _, m: L.Dense(m.out_features, use_bias=m.bias is not None),
        nn.ReLU: lambda _, m: L.ReLU(),
        nn.Dropout: lambda _, m: L.Dropout(m.p),
    }
    if type(module) in converters:
        try:
            return converters[type(module)](where, module)
        except ValueError as error:
            if str(error).startswith(where):
                raise
            raise ValueError(f"{where}: {error}") from None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise ValueError(
            f"{where}: convscope has no batch normalisation layer yet; fold it into the Conv2d before it "
            f"or remove it (supported: {SUPPORTED})"
        )
    raise ValueError(f"{where}: not supported; convscope has {SUPPORTED}")


def _check_fan_in(where: str, setting: str, value: int, expected: int, input_shape):
    if value == expected:
        return
    hint = ""
    if setting == "in_channels" and len(input_shape) == 3 and input_shape[0] == value:
        channels_last = input_shape[1:] + input_shape[:1]
        hint = f" (input_shape is convscope's (H, W, C): for torch's (C, H, W) give {channels_last})"
    raise ValueError(f"{where}: {setting}={value} but its input has {expected}{hint}")


def _state_from_torch(model: Sequential, module, input_shape) -> dict:
    """The torch parameters in convscope layout, keyed like model.state_dict(); checks the fan-ins."""
    state, flattened_from = {}, None
    for index, (layer, child) in enumerate(zip(model.layers, module, strict=True)):
        where = _where(index, child)
        if isinstance(layer, L.Flatten):
            if len(layer.input_shape) == 3:  # a Flatten of a flat input keeps the pending order
                flattened_from = layer.input_shape
        elif isinstance(layer, L.Conv2D):
            _check_fan_in(where, "in_channels", child.in_channels, layer.input_shape[2], input_shape)
            state[f"{index}.weight"] = conv_weight_from_torch(_array(child.weight))
        elif isinstance(layer, L.Dense):
            _check_fan_in(where, "in_features", child.in_features, layer.input_shape[0], input_shape)
            state[f"{index}.weight"] = dense_weight_from_torch(_array(child.weight), flattened_from)
            flattened_from = None
        if getattr(child, "bias", None) is not None:
            state[f"{index}.bias"] = _array(child.bias)
    check_flatten_order(flattened_from, "from_torch")
    return state


def _array(tensor) -> np.ndarray:
    return np.asarray(tensor.detach().cpu().numpy(), dtype=np.float32)


def from_torch(module, input_shape, class_names=None, name="from_torch", seed=0) -> Sequential:
    """A torch.nn.Sequential on (N, C, H, W) images -> a built convscope Sequential on (N, H, W, C)
    images computing the same function, with the same weights.

    `input_shape` is convscope's (H, W, C): a torch model for (N, 1, 28, 28) batches takes
    input_shape=(28, 28, 1). Raises ValueError naming the first module that cannot be converted.
    """
    from torch import nn

    if not isinstance(module, nn.Sequential):
        raise ValueError(
            f"from_torch needs a torch.nn.Sequential of {SUPPORTED}, got {type(module).__name__}"
        )
    input_shape = tuple(int(d) for d in input_shape)
    layers = [_layer(index, child) for index, child in enumerate(module)]
    model = Sequential(layers, seed=seed, class_names=class_names, name=name)
    try:
        model.build(input_shape)
    except ValueError as error:
        raise ValueError(f"from_torch: input_shape {input_shape} (H, W, C): {error}") from None
    return model.load_state_dict(_state_from_torch(model, module, input_shape))
