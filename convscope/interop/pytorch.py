"""convscope -> PyTorch: the same network as a torch.nn.Sequential, weights included.

convscope is channels-last; PyTorch is channels-first. The torch model takes (N, C, H, W) images,
conv kernels go from (kh, kw, C_in, C_out) to (C_out, C_in, kh, kw), dense weights from
(D_in, D_out) to (D_out, D_in). Flatten is the subtle part: convscope flattens in (h, w, c) order
and torch in (c, h, w) order, so the weight of the first Dense layer after a Flatten has its input
axis permuted to match; without that the converted model is silently wrong.
"""

import numpy as np

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


def refuse_standardized(model):
    """Exports do not yet carry the per-channel standardisation a model keeps; refuse rather than
    write a model that would silently expect standardised inputs."""
    if model.standardization is not None:
        raise ValueError(
            "this model standardises its inputs (it was adapted, e.g. by `convscope train`); exporting "
            "that step is not supported yet: train with --no-standardize to export"
        )


def _torch_padding(layer: L.Conv2D):
    (top, bottom), (left, right) = layer.padding
    if top == bottom and left == right:
        return (top, left)
    return "same"  # asymmetric padding only arises from 'same' with even kernels; torch pads alike


def _activation_module(nn, activation):
    return {"relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1)}[activation]()


def _layer_module(nn, layer):
    """The torch module computing `layer` without its fused activation (weights not yet copied)."""
    if isinstance(layer, L.Conv2D):
        kh, kw, c_in, c_out = layer.params["weight"].shape
        return nn.Conv2d(
            c_in, c_out, (kh, kw), stride=layer.stride, padding=_torch_padding(layer), bias=layer.use_bias
        )
    if isinstance(layer, L.Dense):
        d_in, d_out = layer.params["weight"].shape
        return nn.Linear(d_in, d_out, bias=layer.use_bias)
    if isinstance(layer, L.MaxPool2D):
        return nn.MaxPool2d(layer.pool_size, stride=layer.stride)
    simple = {L.Flatten: nn.Flatten, L.ReLU: nn.ReLU, L.Softmax: lambda: nn.Softmax(dim=1)}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, L.Dropout):
        return nn.Dropout(layer.rate)
    raise ValueError(f"to_torch: layer type {type(layer).__name__} has no PyTorch equivalent here")


def torch_positions(model) -> list[int]:
    """For each convscope layer, the index of the module of `to_torch(model)` whose output equals
    that layer's output (a layer with a fused activation becomes two modules: the second one)."""
    positions, index = [], -1
    for layer in model.layers:
        index += 2 if getattr(layer, "activation", None) else 1
        positions.append(index)
    return positions


def to_torch(model):
    """A torch.nn.Sequential computing the same function as `model` on (N, C, H, W) inputs.

    Module indices follow `torch_positions(model)`; without fused activations they equal the
    convscope layer indices, and so do the state_dict names.
    """
    import torch
    from torch import nn

    model._require_built()
    refuse_standardized(model)
    modules, flattened_from = [], None
    for layer in model.layers:
        params = {k: np.asarray(v, dtype=np.float32) for k, v in layer.params.items()}
        module = _layer_module(nn, layer)
        if isinstance(layer, L.Conv2D):
            weight = conv_weight_to_torch(params["weight"])
        elif isinstance(layer, L.Dense):
            weight = dense_weight_to_torch(params["weight"], flattened_from)
            flattened_from = None
        elif isinstance(layer, L.Flatten):
            if len(layer.input_shape) == 3:  # a Flatten of a flat input keeps the pending order
                flattened_from = layer.input_shape
        if "weight" in params:
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(weight))
                if layer.use_bias:
                    module.bias.copy_(torch.from_numpy(params["bias"]))
        modules.append(module)
        if getattr(layer, "activation", None):
            modules.append(_activation_module(nn, layer.activation))
    check_flatten_order(flattened_from, "to_torch")
    return nn.Sequential(*modules)
