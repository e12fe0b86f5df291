"""convscope -> PyTorch: the same network as a torch.nn.Sequential, weights included.

convscope is channels-last; PyTorch is channels-first. The torch model takes (N, C, H, W) images,
conv kernels go from (kh, kw, C_in, C_out) to (C_out, C_in, kh, kw), dense weights from
(D_in, D_out) to (D_out, D_in). Flatten is the subtle part: convscope flattens in (h, w, c) order
and torch in (c, h, w) order, so the weight of the first Dense layer after a Flatten has its input
axis permuted to match; without that the converted model is silently wrong.

Conv2D becomes nn.Conv2d with the same stride, dilation and groups; its padding is torch's (ph, pw) when
both sides are alike, 'same' where torch's 'same' pads the same way, and otherwise an nn.ZeroPad2d
module before an unpadded nn.Conv2d (two modules for one layer). MaxPool2D and AvgPool2D become
nn.MaxPool2d and nn.AvgPool2d with the same window, stride, padding, ceil_mode and count_include_pad.
BatchNorm2D becomes nn.BatchNorm2d (weight, bias, running statistics, eps and momentum);
GlobalAvgPool2D becomes two modules, nn.AdaptiveAvgPool2d(1) and nn.Flatten(). A Residual block
becomes one module of convscope.interop.torch_blocks (a `body` nn.Sequential, a `shortcut`
nn.Sequential or nn.Identity, the ReLU after the sum inside), its layers converted by the same rules,
so its state_dict names are '2.body.0.weight', '2.shortcut.0.weight', ...

The input standardisation a model keeps (`model.standardization`, (x - mean) / std per channel)
becomes module 0, before the network: a non-affine nn.BatchNorm2d(C, eps=0, momentum=0) whose
running_mean is the mean and running_var the std squared. In eval mode it computes exactly the
standardisation; momentum 0 keeps its statistics fixed if the network is trained further (though in
train mode torch normalises with the batch's statistics, so keep that module in eval mode:
`net.train(); net[0].eval()`). from_torch reads a leading non-affine BatchNorm2d back as the
standardisation (mean = running_mean, std = sqrt(running_var + eps)).
"""

import numpy as np

from convscope import blocks
from convscope import layers as L


def images_to_torch(x: np.ndarray):
    """(N, H, W, C) array -> contiguous (N, C, H, W) float32 tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 3, 1, 2)))


def conv_weight_to_torch(w: np.ndarray) -> np.ndarray:
    """(kh, kw, C_in, C_out) -> (C_out, C_in, kh, kw)."""
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def dense_weight_to_torch(w: np.ndarray, flattened_from=None) -> np.ndarray:
    """(D_in, D_out) -> (D_out, D_in); if the input came from flattening an (H, W, C) block, the
    input axis is reordered from (h, w, c) to torch's (c, h, w)."""
    if flattened_from is None:
        return np.ascontiguousarray(w.T)
    h, width, c = flattened_from
    d_out = w.shape[1]
    return np.ascontiguousarray(w.reshape(h, width, c, d_out).transpose(3, 2, 0, 1).reshape(d_out, -1))


def conv_weight_from_torch(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, kh, kw) -> (kh, kw, C_in, C_out)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def dense_weight_from_torch(w: np.ndarray, flattened_from=None) -> np.ndarray:
    """Inverse of dense_weight_to_torch: (D_out, D_in) -> (D_in, D_out), the input axis reordered
    from torch's (c, h, w) to convscope's (h, w, c) when it came from flattening an (H, W, C) block."""
    if flattened_from is None:
        return np.ascontiguousarray(w.T)
    h, width, c = flattened_from
    d_out = w.shape[0]
    return np.ascontiguousarray(w.reshape(d_out, c, h, width).transpose(2, 3, 1, 0).reshape(-1, d_out))


def check_flatten_order(flattened_from, what: str):
    """Refuse a model whose output is a flattened (H, W, C) block with no Dense layer after the
    Flatten: there is no weight to permute, so torch's (c, h, w) order would reach the output."""
    if flattened_from is None:
        return
    h, w, c = flattened_from
    if h * w > 1 and c > 1:
        raise ValueError(
            f"{what}: the output is a flattened {h}x{w}x{c} block with no Dense (Linear) layer after the "
            "Flatten; convscope flattens in (h, w, c) order and torch in (c, h, w) order, so the outputs "
            "would come out permuted (add a Dense layer after the Flatten)"
        )


def standardization_module(standardization):
    """The eval-mode nn.BatchNorm2d(C, eps=0, momentum=0, affine=False) computing (x - mean) / std."""
    import torch
    from torch import nn

    mean = np.asarray(standardization["mean"], dtype=np.float64)
    std = np.asarray(standardization["std"], dtype=np.float64)
    module = nn.BatchNorm2d(len(mean), eps=0.0, momentum=0.0, affine=False)
    with torch.no_grad():
        module.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        module.running_var.copy_(torch.from_numpy((std * std).astype(np.float32)))
    return module.eval()


def _torch_padding(layer: L.Conv2D):
    """torch's padding for `layer`: (ph, pw), 'same', or None when only an nn.ZeroPad2d before the conv
    can pad as it does (different amounts at the top and bottom, or left and right, beyond 'same')."""
    from convscope.ops import resolve_padding

    (top, bottom), (left, right) = layer.padding
    if top == bottom and left == right:
        return (top, left)
    if layer.stride == (1, 1) and layer.padding == resolve_padding(
        "same", layer.kernel_size, 1, layer.dilation
    ):
        return "same"  # torch's 'same' puts the odd zero row and column at the bottom and right, as we do
    return None


def _activation_module(nn, activation):
    return {"relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1)}[activation]()


def _layer_module(nn, layer):
    """The torch module computing `layer` without its fused activation (weights not yet copied)."""
    if isinstance(layer, L.Conv2D):
        kh, kw, _, c_out = layer.params["weight"].shape
        return nn.Conv2d(
            layer.input_shape[2],
            c_out,
            (kh, kw),
            stride=layer.stride,
            padding=_torch_padding(layer) or 0,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.use_bias,
        )
    if isinstance(layer, L.Dense):
        d_in, d_out = layer.params["weight"].shape
        return nn.Linear(d_in, d_out, bias=layer.use_bias)
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D)):
        (ph, _), (pw, _) = layer.padding
        settings = {"stride": layer.stride, "padding": (ph, pw), "ceil_mode": layer.ceil_mode}
        if isinstance(layer, L.MaxPool2D):
            return nn.MaxPool2d(layer.pool_size, **settings)
        return nn.AvgPool2d(layer.pool_size, count_include_pad=layer.count_include_pad, **settings)
    if isinstance(layer, L.BatchNorm2D):
        return nn.BatchNorm2d(layer.input_shape[2], eps=layer.eps, momentum=layer.momentum)
    simple = {
        L.Flatten: nn.Flatten,
        L.ReLU: nn.ReLU,
        L.Softmax: lambda: nn.Softmax(dim=1),
        L.GlobalAvgPool2D: lambda: nn.AdaptiveAvgPool2d(1),
    }
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, L.Dropout):
        return nn.Dropout(layer.rate)
    if isinstance(layer, blocks.SubsampleZeroPad):
        from convscope.interop import torch_blocks

        return torch_blocks.SubsampleZeroPad(layer.channels, layer.stride)
    raise ValueError(f"to_torch: layer type {type(layer).__name__} has no PyTorch equivalent here")


def _before_module(nn, layer):
    """The module that precedes `layer`'s own in torch, or None: the nn.ZeroPad2d of a Conv2D whose
    padding torch's Conv2d cannot express."""
    if isinstance(layer, L.Conv2D) and _torch_padding(layer) is None:
        (top, bottom), (left, right) = layer.padding
        return nn.ZeroPad2d((left, right, top, bottom))
    return None


def _after_module(nn, layer):
    """The module that follows `layer`'s own in torch, or None: its fused activation, or the Flatten
    that turns AdaptiveAvgPool2d's (N, C, 1, 1) into GlobalAvgPool2D's (N, C)."""
    if isinstance(layer, L.GlobalAvgPool2D):
        return nn.Flatten()
    if getattr(layer, "activation", None):
        return _activation_module(nn, layer.activation)
    return None


def pads_before(layer) -> bool:
    """True for a Conv2D that to_torch precedes with an nn.ZeroPad2d."""
    return isinstance(layer, L.Conv2D) and _torch_padding(layer) is None


def modules_per_layer(layer) -> int:
    """How many torch modules compute `layer`: one, plus one for a fused activation or GlobalAvgPool2D's
    Flatten, plus one for a Conv2D's nn.ZeroPad2d."""
    after = isinstance(layer, L.GlobalAvgPool2D) or bool(getattr(layer, "activation", None))
    return 1 + int(after) + int(pads_before(layer))


def torch_positions(model) -> list[int]:
    """For each convscope layer, the index of the module of `to_torch(model)` whose output equals
    that layer's output (a layer made of two modules, a fused activation or GlobalAvgPool2D's
    pooling and flatten, maps to the second one). A model with a standardisation has it as module 0,
    which shifts every position by one; so does a Conv2D's nn.ZeroPad2d for the layers after it."""
    positions, index = [], 0 if model.standardization is not None else -1
    for layer in model.layers:
        index += modules_per_layer(layer)
        positions.append(index)
    return positions


def _torch_arrays(layer, flattened_from) -> dict:
    """The layer's parameters and buffers in torch layout, by torch's names."""
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in (*layer.params.items(), *layer.buffers.items())}
    if isinstance(layer, L.Conv2D):
        arrays["weight"] = conv_weight_to_torch(arrays["weight"])
    elif isinstance(layer, L.Dense):
        arrays["weight"] = dense_weight_to_torch(arrays["weight"], flattened_from)
    return arrays


def _residual_module(layer: blocks.Residual):
    """The torch_blocks.Residual computing `layer`, weights included."""
    from torch import nn

    from convscope.interop import torch_blocks

    body, pending = _modules(layer.body)
    check_flatten_order(pending, "to_torch (a residual block's body)")
    shortcut = nn.Sequential(*_modules(layer.shortcut)[0]) if layer.shortcut else None
    return torch_blocks.Residual(nn.Sequential(*body), shortcut, relu=layer.relu)


def _modules(layers) -> tuple[list, object]:
    """The torch modules computing `layers` in order, weights copied, and the (H, W, C) block whose
    flattening is still pending a Dense layer's weight permutation (or None)."""
    import torch
    from torch import nn

    modules, flattened_from = [], None
    for layer in layers:
        if isinstance(layer, blocks.Residual):
            modules.append(_residual_module(layer))
            continue
        before = _before_module(nn, layer)
        if before is not None:
            modules.append(before)
        module = _layer_module(nn, layer)
        arrays = _torch_arrays(layer, flattened_from)
        if isinstance(layer, L.Dense):
            flattened_from = None
        elif isinstance(layer, L.Flatten) and len(layer.input_shape) == 3:
            flattened_from = layer.input_shape  # a Flatten of a flat input keeps the pending order
        with torch.no_grad():
            for name, array in arrays.items():
                getattr(module, name).copy_(torch.from_numpy(array))
        modules.append(module)
        after = _after_module(nn, layer)
        if after is not None:
            modules.append(after)
    return modules, flattened_from


def to_torch(model):
    """A torch.nn.Sequential computing the same function as `model` on (N, C, H, W) inputs.

    Module indices follow `torch_positions(model)`; without fused activations, GlobalAvgPool2D, a
    standardisation or a Conv2D's nn.ZeroPad2d they equal the convscope layer indices, and so do the
    state_dict names.
    """
    from torch import nn

    model._require_built()
    modules = [] if model.standardization is None else [standardization_module(model.standardization)]
    layers, flattened_from = _modules(model.layers)
    check_flatten_order(flattened_from, "to_torch")
    return nn.Sequential(*modules, *layers)
