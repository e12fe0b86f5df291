"""The PyTorch modules of convscope's residual blocks (convscope.blocks), for to_torch and from_torch.

This file imports torch only, never convscope: `convscope export --format torch` copies these classes
into the model.py it writes, so the exported network runs without convscope. A block's state_dict
names are convscope's: 'body.0.weight', 'shortcut.0.weight', ...
"""

import torch
from torch import nn


class Residual(nn.Module):
    """y = relu(body(x) + shortcut(x)) (He et al. 2016), the ReLU part of the block; `shortcut` None
    is the identity; relu=False leaves the plain sum."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Sequential | None = None, relu: bool = True):
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.relu = relu

    def forward(self, x):
        y = self.body(x) + self.shortcut(x)
        return torch.relu(y) if self.relu else y

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


class SubsampleZeroPad(nn.Module):
    """The paper's option-A shortcut on (N, C, H, W): every stride-th row and column from the first,
    then zero channels after the C given ones, up to `channels`. No parameters."""

    def __init__(self, channels: int, stride=(2, 2)):
        super().__init__()
        self.channels = channels
        self.stride = tuple(stride)

    def forward(self, x):
        x = x[:, :, :: self.stride[0], :: self.stride[1]]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}"
