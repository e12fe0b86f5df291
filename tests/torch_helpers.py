"""Layout conversions between convscope (channels-last) and PyTorch (channels-first).

convscope: images (N, H, W, C), conv kernels (kh, kw, C_in, C_out), dense weights (D_in, D_out),
Flatten in (h, w, c) order. PyTorch: images (N, C, H, W), conv kernels (C_out, C_in, kh, kw),
Linear weights (D_out, D_in), Flatten in (c, h, w) order.
"""

import numpy as np
import torch

from convscope.interop import pytorch as interop
from convscope.interop.pytorch import images_to_torch  # noqa: F401  (re-exported for the tests)


def images_from_torch(t: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C)."""
    return t.detach().numpy().transpose(0, 2, 3, 1)


def conv_weight_to_torch(w: np.ndarray) -> torch.Tensor:
    """(kh, kw, C_in, C_out) -> (C_out, C_in, kh, kw) tensor."""
    return torch.from_numpy(interop.conv_weight_to_torch(w))


def conv_weight_from_torch(t: torch.Tensor) -> np.ndarray:
    """(C_out, C_in, kh, kw) -> (kh, kw, C_in, C_out)."""
    return t.detach().numpy().transpose(2, 3, 1, 0)


def flat_dense_weight_from_torch(t: torch.Tensor, hwc) -> np.ndarray:
    """Inverse of flat_dense_weight_to_torch: (D, C*H*W) -> (H*W*C, D)."""
    h, wd, c = hwc
    d = t.shape[0]
    return t.detach().numpy().reshape(d, c, h, wd).transpose(2, 3, 1, 0).reshape(-1, d)


def to_torch_seed_cnn(model) -> torch.nn.Sequential:
    """The torch.nn.Sequential equivalent of convscope.models.seed_cnn, with the model's weights."""
    h, w, c = model.input_shape
    c1 = model.layers[0].filters
    c2 = model.layers[3].filters
    flat_hwc = model.layers[5].output_shape
    hidden = model.layers[7].units
    classes = model.layers[9].units
    net = torch.nn.Sequential(
        torch.nn.Conv2d(c, c1, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(c1, c2, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(int(np.prod(flat_hwc)), hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, classes),
    )
    # The weights come through convscope's own converter; the architecture above is written out
    # by hand, so a converter that built the wrong network would fail to load or to match.
    net.load_state_dict(interop.to_torch(model)[:-1].state_dict())
    return net


def seed_cnn_state_from_torch(sd: dict, flat_hwc) -> dict:
    """A torch seed CNN's tensors by name (`net.state_dict()`, or its gradients) in convscope layout.

    `flat_hwc` is the (H, W, C) shape that the Flatten layer flattens.
    """
    state = {
        "0.weight": conv_weight_from_torch(sd["0.weight"]),
        "3.weight": conv_weight_from_torch(sd["3.weight"]),
        "7.weight": flat_dense_weight_from_torch(sd["7.weight"], flat_hwc),
        "9.weight": sd["9.weight"].detach().numpy().T,
    }
    for index in (0, 3, 7, 9):
        state[f"{index}.bias"] = sd[f"{index}.bias"].detach().numpy()
    return state
