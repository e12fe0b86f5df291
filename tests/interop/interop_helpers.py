"""Small architectures covering every supported layer and setting, and shared checks."""

import numpy as np

from convscope import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Sequential,
    Softmax,
)
from convscope.models import resnet, seed_cnn, small_vgg

LOGITS_ATOL = 1e-5


def _strided_rgb():
    """Stride 2 with int padding, fused ReLU, overlapping 3x3 pooling, dropout, fused softmax."""
    layers = [
        Conv2D(6, 3, stride=2, padding=1, activation="relu"),
        MaxPool2D(3, stride=2),
        Flatten(),
        Dropout(0.3),
        Dense(7, activation="softmax"),
    ]
    return Sequential(layers, input_shape=(13, 11, 3), seed=1)


def _even_kernels_logits():
    """An even kernel with 'same' (asymmetric padding), a 3x5 kernel, no bias, logits out."""
    layers = [
        Conv2D(4, 2, padding="same", use_bias=False),
        ReLU(),
        Conv2D(5, (3, 5), padding="same"),
        MaxPool2D(2),
        Flatten(),
        Dense(16, activation="relu"),
        Dense(5),
    ]
    return Sequential(layers, input_shape=(9, 10, 2), seed=2)


def _pointwise_wide_pool():
    """A 1x1 'valid' conv, a 2x3 pool with stride 2, a second Flatten (of a flat input: the pending
    flatten order must survive it), a Softmax layer."""
    layers = [
        Conv2D(3, 1, padding="valid"),
        MaxPool2D((2, 3), stride=2),
        Flatten(),
        Flatten(),
        Dense(4),
        Softmax(),
    ]
    return Sequential(layers, input_shape=(6, 8, 2), seed=3)


def _batch_norms_moved(model, seed):
    """The model with its batch norms' weights, biases and running statistics (and other 1-D weights
    and biases) away from their initial values, so that their layout matters."""
    rng = np.random.default_rng(seed)
    for key, array in model.state_dict().items():
        if key.endswith(("running_var", ".weight")) and array.ndim == 1:
            array[...] = rng.uniform(0.5, 2.0, array.shape)
        elif key.endswith(("running_mean", ".bias")):
            array[...] = rng.uniform(-0.5, 0.5, array.shape)
    return model


def _small_vgg_standardized():
    """small_vgg (batch norm, global average pooling) on non-square RGB images, with an input
    standardisation and batch-norm weights and running statistics away from their initial values."""
    model = _batch_norms_moved(small_vgg((14, 10, 3), 5, seed=4, width=4), seed=4)
    model.standardization = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    return model


def _depthwise_dilated():
    """Dilation with 'same', a depthwise conv (channel multiplier 2) with a rectangular stride and
    asymmetric padding (a ZeroPad2d in torch), -inf padded ceil-mode max pooling with a rectangular
    stride, ceil-mode average pooling without counting the padding."""
    layers = [
        Conv2D(6, 3, padding="same", dilation=2, activation="relu"),
        Conv2D(12, 3, stride=(2, 1), padding=((0, 1), (2, 1)), groups=6),
        MaxPool2D(3, stride=(2, 1), padding=1, ceil_mode=True),
        AvgPool2D(2, padding=1, ceil_mode=True, count_include_pad=False),
        Flatten(),
        Dense(5),
    ]
    return Sequential(layers, input_shape=(13, 10, 3), seed=5)


def _grouped_avgpool():
    """Grouped rectangular kernels with a rectangular stride, ceil-mode average pooling counting
    the padding, an even dilated kernel with 'same' (asymmetric, torch's 'same'), no bias, GAP."""
    layers = [
        Conv2D(4, (3, 1), stride=(1, 2), padding=(1, 0), groups=2),
        AvgPool2D(3, stride=2, padding=1, ceil_mode=True),
        Conv2D(4, 2, padding="same", dilation=(1, 2), use_bias=False),
        MaxPool2D((2, 3), stride=(1, 2)),
        GlobalAvgPool2D(),
        Dense(3, activation="softmax"),
    ]
    return Sequential(layers, input_shape=(11, 17, 2), seed=6)


def _resnet(shortcut):
    """A depth-8 ResNet (three residual blocks, two of them downsampling) on 8x7 RGB images, with
    batch-norm weights and running statistics away from their initial values; option A with an input
    standardisation."""

    def build():
        model = _batch_norms_moved(resnet(8, (8, 7, 3), 5, seed=8, shortcut=shortcut, width=4), seed=8)
        if shortcut == "A":
            model.standardization = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
        return model

    return build


ARCHITECTURES = {
    "seed-cnn": lambda: seed_cnn((28, 28, 1), 10, seed=0),
    "strided-rgb": _strided_rgb,
    "even-kernels-logits": _even_kernels_logits,
    "pointwise-wide-pool": _pointwise_wide_pool,
    "small-vgg-standardized": _small_vgg_standardized,
    "depthwise-dilated": _depthwise_dilated,
    "grouped-avgpool": _grouped_avgpool,
    "resnet-a-standardized": _resnet("A"),
    "resnet-b": _resnet("B"),
}


def random_images(input_shape, n=6, seed=0) -> np.ndarray:
    """(n, H, W, C) float32 in [0, 1)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, *input_shape)).astype(np.float32)


def model_logits(model, x) -> np.ndarray:
    """A convscope model's logits for raw (N, H, W, C) images, its standardisation included."""
    return model.forward_logits(model.standardize(x))


def assert_logits_close(actual, expected, what=""):
    """Same shape, every value within LOGITS_ATOL (absolute)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=LOGITS_ATOL, err_msg=what)
