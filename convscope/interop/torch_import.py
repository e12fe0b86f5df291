"""PyTorch -> convscope: an nn.Sequential of the layers convscope has, weights included.

The torch model takes (N, C, H, W) images, the convscope model (N, H, W, C). Each torch module
usually becomes one convscope layer at the same index, so the state_dict names ('0.weight', ...) are
the same. Kernels go from (C_out, C_in, kh, kw) to (kh, kw, C_in, C_out), Linear weights from
(D_out, D_in) to (D_in, D_out); the first Linear after a Flatten of an image block has its input
axis reordered from torch's (c, h, w) to convscope's (h, w, c).

Three patterns are read differently (see interop.pytorch): a leading non-affine nn.BatchNorm2d
becomes the model's input standardisation, mean = running_mean and std = sqrt(running_var + eps),
not a layer; nn.AdaptiveAvgPool2d(1) followed by nn.Flatten() becomes one GlobalAvgPool2D layer;
nn.ZeroPad2d followed by nn.Conv2d becomes one Conv2D whose padding is their sum. After any of them,
the convscope layer indices (and state_dict names) differ from the torch module indices; errors name
the torch module's index.

Conv2d's stride, dilation, groups and padding (an int, a pair, 'same', 'valid'), MaxPool2d's and
AvgPool2d's window, stride, padding, ceil_mode and count_include_pad are kept as they are. Anything
convscope cannot compute exactly is refused with an error naming the module's index, its type and
the setting: padding modes other than zeros, pooling with dilation, return_indices or
divisor_override, batch normalisation without running statistics or with a cumulative average
(momentum=None), and modules convscope does not have.
"""

import numpy as np

from convscope import blocks
from convscope import layers as L
from convscope.interop.pytorch import check_flatten_order, conv_weight_from_torch, dense_weight_from_torch
from convscope.model import Sequential, checked_standardization
from convscope.ops import resolve_padding

SUPPORTED = (
    "Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Linear, Dropout, Softmax, BatchNorm2d, "
    "AdaptiveAvgPool2d(1) + Flatten, ZeroPad2d + Conv2d, and convscope.interop.torch_blocks' Residual "
    "and SubsampleZeroPad"
)


def _where(index: int, module) -> str:
    return f"from_torch: layer {index} ({type(module).__name__})"


def _require(where: str, setting: str, value, fits):
    if value != fits:
        raise ValueError(
            f"{where}: {setting}={value!r} is not supported (convscope needs {setting}={fits!r})"
        )


def _conv2d(where: str, module, zero_padding=None) -> L.Conv2D:
    """nn.Conv2d -> Conv2D; `zero_padding` ((top, bottom), (left, right)) is an nn.ZeroPad2d's before it."""
    _require(where, "padding_mode", module.padding_mode, "zeros")
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    if zero_padding is not None:
        kernel, stride, dilation = (tuple(getattr(module, k)) for k in ("kernel_size", "stride", "dilation"))
        own = resolve_padding(padding, kernel, stride, dilation)
        (top, bottom), (left, right) = zero_padding
        padding = ((top + own[0][0], bottom + own[0][1]), (left + own[1][0], right + own[1][1]))
    return L.Conv2D(
        module.out_channels,
        tuple(module.kernel_size),
        stride=tuple(module.stride),
        padding=padding,
        use_bias=module.bias is not None,
        dilation=tuple(module.dilation),
        groups=module.groups,
    )


def _zero_padding(where: str, module, following) -> tuple:
    """nn.ZeroPad2d (left, right, top, bottom) before an nn.Conv2d -> ((top, bottom), (left, right))."""
    from torch import nn

    if not isinstance(following, nn.Conv2d):
        raise ValueError(
            f"{where}: ZeroPad2d is supported right before an nn.Conv2d (together: a convscope Conv2D "
            "with that padding added to its own)"
        )
    left, right, top, bottom = module.padding
    if min(left, right, top, bottom) < 0:
        raise ValueError(f"{where}: negative padding {tuple(module.padding)!r} (cropping) is not supported")
    return ((top, bottom), (left, right))


def _pool2d(where: str, module):
    """nn.MaxPool2d or nn.AvgPool2d -> MaxPool2D or AvgPool2D with the same settings."""
    from torch import nn

    settings = {
        "stride": module.stride,
        "padding": module.padding,
        "ceil_mode": module.ceil_mode,
    }
    if isinstance(module, nn.MaxPool2d):
        _require(where, "return_indices", module.return_indices, False)
        if module.dilation not in (1, (1, 1)):
            raise ValueError(
                f"{where}: dilation={module.dilation!r} is not supported (convscope needs dilation=1)"
            )
        return L.MaxPool2D(module.kernel_size, **settings)
    _require(where, "divisor_override", module.divisor_override, None)
    return L.AvgPool2D(module.kernel_size, count_include_pad=module.count_include_pad, **settings)


def _flatten(where: str, module) -> L.Flatten:
    _require(where, "start_dim", module.start_dim, 1)
    _require(where, "end_dim", module.end_dim, -1)
    return L.Flatten()


def _softmax(where: str, module) -> L.Softmax:
    if module.dim not in (None, 1, -1):
        raise ValueError(f"{where}: dim={module.dim!r} is not supported (convscope's Softmax is over dim 1)")
    return L.Softmax()


def _batchnorm2d(where: str, module) -> L.BatchNorm2D:
    _require(where, "track_running_stats", module.track_running_stats, True)
    if not module.affine:
        raise ValueError(
            f"{where}: affine=False is supported only as the first module, read as the input "
            "standardisation (convscope's BatchNorm2D has a weight and a bias)"
        )
    if module.momentum is None:
        raise ValueError(
            f"{where}: momentum=None (a cumulative average) is not supported (convscope needs a number)"
        )
    if module.bias is None:
        raise ValueError(f"{where}: bias=False is not supported (convscope's BatchNorm2D has a bias)")
    return L.BatchNorm2D(momentum=module.momentum, eps=module.eps)


def _global_avgpool2d(where: str, module, following) -> L.GlobalAvgPool2D:
    """AdaptiveAvgPool2d(1) + Flatten() -> GlobalAvgPool2D (the Flatten is consumed with it)."""
    from torch import nn

    if module.output_size not in (1, (1, 1)):
        raise ValueError(
            f"{where}: output_size={module.output_size!r} is not supported (convscope needs output_size=1)"
        )
    if not (isinstance(following, nn.Flatten) and (following.start_dim, following.end_dim) == (1, -1)):
        raise ValueError(
            f"{where}: AdaptiveAvgPool2d(1) is supported when an nn.Flatten() follows it "
            "(together: convscope's GlobalAvgPool2D)"
        )
    return L.GlobalAvgPool2D()


def _is_block(module, name: str, attributes) -> bool:
    """Whether `module` is convscope.interop.torch_blocks' `name`, or the copy of that class in an
    exported model.py (matched by name and attributes: the copy is another class object)."""
    return type(module).__name__ == name and all(hasattr(module, a) for a in attributes)


def _shortcut_modules(where: str, module) -> list:
    """A torch_blocks.Residual's shortcut as a list of modules (none for nn.Identity)."""
    from torch import nn

    if isinstance(module.shortcut, nn.Identity):
        return []
    if isinstance(module.shortcut, nn.Sequential):
        return module.shortcut
    raise ValueError(
        f"{where}: its shortcut must be nn.Identity or an nn.Sequential, got {type(module.shortcut).__name__}"
    )


def _residual(where: str, module) -> blocks.Residual:
    """torch_blocks.Residual -> Residual, its body and shortcut converted by the same rules."""
    from torch import nn

    if not isinstance(module.body, nn.Sequential):
        raise ValueError(f"{where}: its body must be an nn.Sequential, got {type(module.body).__name__}")
    body = [layer for layer, _ in _layers(module.body, top_level=False)]
    shortcut = [layer for layer, _ in _layers(_shortcut_modules(where, module), top_level=False)]
    return blocks.Residual(body, shortcut=shortcut or "identity", activation="relu" if module.relu else None)


def _layer(index: int, module) -> L.Layer:
    """One torch module -> the equivalent unbuilt convscope layer, or a ValueError naming it."""
    from torch import nn

    where = _where(index, module)
    if _is_block(module, "Residual", ("body", "shortcut", "relu")):
        return _converted(where, _residual, module)
    if _is_block(module, "SubsampleZeroPad", ("channels", "stride")):
        return _converted(where, lambda _, m: blocks.SubsampleZeroPad(m.channels, m.stride), module)
    converters = {
        nn.Conv2d: _conv2d,
        nn.MaxPool2d: _pool2d,
        nn.AvgPool2d: _pool2d,
        nn.Flatten: _flatten,
        nn.Softmax: _softmax,
        nn.BatchNorm2d: _batchnorm2d,
        nn.Linear: lambda _, m: L.Dense(m.out_features, use_bias=m.bias is not None),
        nn.ReLU: lambda _, m: L.ReLU(),
        nn.Dropout: lambda _, m: L.Dropout(m.p),
    }
    if type(module) in converters:
        return _converted(where, converters[type(module)], module)
    raise ValueError(f"{where}: not supported; convscope has {SUPPORTED}")


def _converted(where: str, convert, *args):
    """convert(where, *args), with a ValueError from the layer's own checks prefixed by `where`."""
    try:
        return convert(where, *args)
    except ValueError as error:
        if str(error).startswith(where):
            raise
        raise ValueError(f"{where}: {error}") from None


def _is_standardization(module) -> bool:
    from torch import nn

    return isinstance(module, nn.BatchNorm2d) and not module.affine and module.track_running_stats


def _standardization(module) -> dict:
    """A leading non-affine BatchNorm2d -> {"mean": [...], "std": [...]} (eval-mode arithmetic)."""
    mean = _array(module.running_mean).astype(np.float64)
    std = np.sqrt(_array(module.running_var).astype(np.float64) + module.eps)
    return {"mean": mean.tolist(), "std": std.tolist()}


def _layers(module, top_level=True) -> list[tuple[L.Layer, int]]:
    """(convscope layer, index of the torch module holding its weights) for the modules after a
    leading standardisation (only at the top level, not in a residual block); AdaptiveAvgPool2d(1) and
    its Flatten make one layer, and so do a ZeroPad2d and the Conv2d after it."""
    from torch import nn

    children = list(module)
    pairs, index = [], 1 if top_level and children and _is_standardization(children[0]) else 0
    while index < len(children):
        child = children[index]
        if isinstance(child, nn.AdaptiveAvgPool2d):
            following = children[index + 1] if index + 1 < len(children) else None
            pairs.append((_global_avgpool2d(_where(index, child), child, following), index))
            index += 2
            continue
        if isinstance(child, nn.ZeroPad2d):
            following = children[index + 1] if index + 1 < len(children) else None
            zero_padding = _zero_padding(_where(index, child), child, following)
            where = _where(index + 1, following)
            pairs.append((_converted(where, _conv2d, following, zero_padding), index + 1))
            index += 2
            continue
        pairs.append((_layer(index, child), index))
        index += 1
    return pairs


def _check_fan_in(where: str, setting: str, value: int, expected: int, input_shape):
    if value == expected:
        return
    hint = ""
    if setting == "in_channels" and len(input_shape) == 3 and input_shape[0] == value:
        channels_last = input_shape[1:] + input_shape[:1]
        hint = f" (input_shape is convscope's (H, W, C): for torch's (C, H, W) give {channels_last})"
    raise ValueError(f"{where}: {setting}={value} but its input has {expected}{hint}")


def _residual_state(block: blocks.Residual, child, prefix: str, input_shape) -> dict:
    """A Residual's parameters and buffers from its torch_blocks.Residual, keyed '{prefix}body.0.weight'."""
    state = {}
    for branch, modules in (("body", child.body), ("shortcut", _shortcut_modules(prefix, child))):
        indices = [i for _, i in _layers(modules, top_level=False)]
        state.update(
            _state_from_torch(getattr(block, branch), modules, indices, input_shape, f"{prefix}{branch}.")
        )
    return state


def _state_from_torch(layers, module, torch_indices, input_shape, prefix="") -> dict:
    """The torch parameters and buffers in convscope layout, keyed like model.state_dict() (after
    `prefix`); checks the fan-ins. `torch_indices[i]` is the index of the torch module behind
    convscope layer i."""
    state, flattened_from = {}, None
    for position, (layer, torch_index) in enumerate(zip(layers, torch_indices, strict=True)):
        index = f"{prefix}{position}"
        child = module[torch_index]
        where = _where(torch_index, child)
        if isinstance(layer, blocks.Residual):
            state.update(_residual_state(layer, child, f"{index}.", input_shape))
            continue
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
        elif isinstance(layer, L.BatchNorm2D):
            _check_fan_in(where, "num_features", child.num_features, layer.input_shape[2], input_shape)
            state[f"{index}.weight"] = _array(child.weight)
            for name in layer.buffers:
                state[f"{index}.{name}"] = _array(getattr(child, name))
        if getattr(child, "bias", None) is not None:
            state[f"{index}.bias"] = _array(child.bias)
    if not prefix:
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
    pairs = _layers(module)
    model = Sequential([layer for layer, _ in pairs], seed=seed, class_names=class_names, name=name)
    try:
        model.build(input_shape)
    except ValueError as error:
        raise ValueError(f"from_torch: input_shape {input_shape} (H, W, C): {error}") from None
    if len(module) and _is_standardization(module[0]):
        where = _where(0, module[0])
        _check_fan_in(where, "num_features", module[0].num_features, input_shape[2], input_shape)
        try:
            model.standardization = checked_standardization(_standardization(module[0]), input_shape)
        except ValueError as error:
            raise ValueError(f"{where} (read as the input standardisation): {error}") from None
    return model.load_state_dict(_state_from_torch(model.layers, module, [i for _, i in pairs], input_shape))
