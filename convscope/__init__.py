"""convscope: a convolutional neural network you can build, train and look inside, in NumPy."""

__version__ = "0.1.0"

from convscope.layers import (  # noqa: E402
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Residual,
    Softmax,
    SubsampleZeroPad,
)
from convscope.model import Sequential  # noqa: E402
from convscope.model_file import ModelFileError, load_model  # noqa: E402
from convscope.optim import SGD, Adam  # noqa: E402

load = load_model

__all__ = [
    "SGD",
    "Adam",
    "AvgPool2D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "MaxPool2D",
    "ModelFileError",
    "ReLU",
    "Sequential",
    "Residual",
    "Softmax",
    "SubsampleZeroPad",
    "load",
    "load_model",
]
