"""Pure array functions. Each op is a pair: `*_forward(...) -> (y, cache)` and
`*_backward(dy, cache) -> gradients`, shapes in the docstrings, channels-last images."""

from convscope.ops.activations import (
    dropout_backward,
    dropout_forward,
    relu,
    relu_backward,
    relu_forward,
    softmax,
    softmax_backward,
    softmax_forward,
)
from convscope.ops.conv import (
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv_output_shape,
    im2col,
    output_size,
    resolve_padding,
)
from convscope.ops.dense import dense_backward, dense_forward, flatten_backward, flatten_forward
from convscope.ops.norm import (
    BatchStatistics,
    batchnorm2d,
    batchnorm2d_backward,
    batchnorm2d_forward,
    combine_batch_statistics,
    update_running_statistics,
)
from convscope.ops.pool import (
    global_avgpool2d_backward,
    global_avgpool2d_forward,
    maxpool2d,
    maxpool2d_backward,
    maxpool2d_forward,
    pool_output_shape,
)

__all__ = [
    "BatchStatistics",
    "batchnorm2d",
    "batchnorm2d_backward",
    "batchnorm2d_forward",
    "col2im",
    "combine_batch_statistics",
    "conv2d_backward",
    "conv2d_forward",
    "conv_output_shape",
    "dense_backward",
    "dense_forward",
    "dropout_backward",
    "dropout_forward",
    "flatten_backward",
    "flatten_forward",
    "global_avgpool2d_backward",
    "global_avgpool2d_forward",
    "im2col",
    "maxpool2d",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "output_size",
    "pool_output_shape",
    "relu",
    "relu_backward",
    "relu_forward",
    "resolve_padding",
    "softmax",
    "softmax_backward",
    "softmax_forward",
    "update_running_statistics",
]
