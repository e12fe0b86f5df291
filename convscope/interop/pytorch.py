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


def _torch_padding(layer: L.Conv2D):
    (top, bottom), (left, right) = layer.padding
    if top == bottom and left == right:
        return (top, left)
    return "same"  # asymmetric padding only arises from 'same' with even kernels; torch pads alike


def _activation_module(nn, activation):
    return {"relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1)}[activation]()


def to_torch(model):
    """A torch.nn.Sequential computing the same function as `model` on (N, C, H, W) inputs."""
    import torch
    from torch import nn

    model._require_built()
    modules, flattened_from = [], None
    for layer in model.layers:
        params = {k: np.asarray(v, dtype=np.float32) for k, v in layer.params.items()}
        if isinstance(layer, L.Conv2D):
            kh, kw, c_in, c_out = params["weight"].shape
            module = nn.Conv2d(
                c_in, c_out, (kh, kw), stride=layer.stride, padding=_torch_padding(layer), bias=layer.use_bias
            )
            weight = conv_weight_to_torch(params["weight"])
        elif isinstance(layer, L.Dense):
            d_in, d_out = params["weight"].shape
            module = nn.Linear(d_in, d_out, bias=layer.use_bias)
            weight = dense_weight_to_torch(params["weight"], flattened_from)
            flattened_from = None
        elif isinstance(layer, L.MaxPool2D):
            module = nn.MaxPool2d(layer.pool_size, stride=layer.stride)
        elif isinstance(layer, L.Flatten):
            module = nn.Flatten()
            flattened_from = layer.input_shape if len(layer.input_shape) == 3 else None
        elif isinstance(layer, L.ReLU):
            module = nn.ReLU()
        elif isinstance(layer, L.Softmax):
            module = nn.Softmax(dim=1)
        elif isinstance(layer, L.Dropout):
            module = nn.Dropout(layer.rate)
        else:
            raise ValueError(f"to_torch: layer type {type(layer).__name__} has no PyTorch equivalent here")
        if "weight" in params:
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(weight))
                if layer.use_bias:
                    module.bias.copy_(torch.from_numpy(params["bias"]))
        modules.append(module)
        if getattr(layer, "activation", None):
            modules.append(_activation_module(nn, layer.activation))
    return nn.Sequential(*modules)
