"""Layers: thin classes that hold parameters and gradients and call their op pair.

Every layer follows one protocol:
- `build(input_shape, rng) -> output_shape` creates parameters (shapes exclude the batch axis);
- `forward(x, training=False, rng=None) -> y` remembers what its backward pass needs;
- `backward(dy, need_dx=True) -> dx` fills `grads` (same names as `params`);
- `get_config() -> dict` holds the constructor's arguments, so `layer_from_config` can rebuild it.

`params` are trained by the optimiser. `buffers` are state that is not trained but saved with the
model (BatchNorm2D's running statistics): a training forward pass records its `batch_statistics`, and
`update_buffers(shard_statistics)` moves the buffers once per training step (see Sequential.train_step).
"""

import math
from typing import NamedTuple

import numpy as np

from convscope import ops

ACTIVATIONS = (None, "relu", "softmax")


def _pair(value, what: str, layer: str) -> tuple[int, int]:
    """2 -> (2, 2); (3, 5) -> (3, 5); anything else is an error naming the layer."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (
        isinstance(pair, (tuple, list))
        and len(pair) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        return int(pair[0]), int(pair[1])
    raise ValueError(f"{layer}: {what} must be a positive int or a pair of them, got {value!r}")


def _positive_int(value, what: str, layer: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(f"{layer}: {what} must be a positive int, got {value!r}")


def _fraction(value, what: str, layer: str) -> float:
    """A number in [0, 1], or an error naming the layer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{layer}: {what} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_activation(activation, layer: str):
    if activation not in ACTIVATIONS:
        raise ValueError(f"{layer}: activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def _uniform_init(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """PyTorch's default for Conv2d and Linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Layer:
    """Base class: no parameters, output shape equals input shape."""

    uses_rng = False  # True for layers whose training forward pass draws random numbers

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.batch_statistics = None  # what the last training forward pass measured, for update_buffers
        self.input_shape = None
        self.output_shape = None
        self.name = None
        self._cache = None

    def build(self, input_shape, rng: np.random.Generator):
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        return self.output_shape

    def compute_output_shape(self, input_shape):
        return input_shape

    def infer(self, x):
        """Inference-mode output without keeping anything for a backward pass."""
        return self.forward(x)

    @property
    def built(self) -> bool:
        return self.output_shape is not None

    def count_params(self, trainable: bool | None = None) -> int:
        """Numbers in `params` (trainable) and `buffers` (non-trainable); both when trainable is None."""
        groups = {True: [self.params], False: [self.buffers], None: [self.params, self.buffers]}[trainable]
        return sum(int(p.size) for group in groups for p in group.values())

    def update_buffers(self, shard_statistics):
        """Move the buffers with the `batch_statistics` of every shard of one training step (a list);
        layers without buffers have nothing to update."""

    def get_config(self) -> dict:
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _WithActivation(Layer):
    """A layer whose output may go through a fused ReLU or softmax (Keras' `activation=`)."""

    def __init__(self, activation):
        super().__init__()
        self.activation = _check_activation(activation, type(self).__name__)
        self._activation_cache = None
        self._activated = None

    def _activate(self, z, activate: bool):
        """Apply the activation (skipped when the model asks for logits before a final softmax)."""
        self._activated = self.activation if activate else None
        if self._activated == "relu":
            y, self._activation_cache = ops.relu_forward(z)
        elif self._activated == "softmax":
            y, self._activation_cache = ops.softmax_forward(z)
        else:
            y = z
        return y

    def _activation_backward(self, dy):
        if self._activated == "relu":
            return ops.relu_backward(dy, self._activation_cache)
        if self._activated == "softmax":
            return ops.softmax_backward(dy, self._activation_cache)
        return dy


def _compact(pair: tuple[int, int]):
    """(2, 2) -> 2, (1, 2) -> [1, 2]: a pair as the model file writes it."""
    return pair[0] if pair[0] == pair[1] else list(pair)


def _padding_config(padding):
    """A padding argument as JSON: strings and ints as given, pairs as lists."""
    if isinstance(padding, (tuple, list)):
        return [_padding_config(p) for p in padding]
    return int(padding) if isinstance(padding, np.integer) else padding


class Conv2D(_WithActivation):
    """`filters` kernels of shape (kh, kw, C_in / groups) -> a `filters`-channel block.

    Input (N, H, W, C_in), output (N, H_out, W_out, filters); parameters
    `weight` (kh, kw, C_in / groups, filters) and `bias` (filters,). As torch.nn.Conv2d:
    - kernel_size, stride, dilation: an int or a pair (height, width);
    - padding: 'same' (stride 1), 'valid', an int, a pair (ph, pw) or ((top, bottom), (left, right));
    - groups: input channels and kernels are cut into `groups` groups, each group's kernels see only
      its channels. groups == C_in is a depthwise convolution with filters / C_in kernels per channel
      (the channel multiplier): `Conv2D(C_in * multiplier, 3, groups=C_in)`.

    Attributes, normalised at construction: `kernel_size`, `stride` and `dilation` are pairs (sh, sw),
    `padding` is ((top, bottom), (left, right)), `groups` an int.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        stride=1,
        padding="same",
        activation=None,
        use_bias=True,
        dilation=1,
        groups=1,
    ):
        super().__init__(activation)
        self.filters = _positive_int(filters, "filters", "Conv2D")
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2D")
        self.stride = _pair(stride, "stride", "Conv2D")
        self.dilation = _pair(dilation, "dilation", "Conv2D")
        self.groups = _positive_int(groups, "groups", "Conv2D")
        if self.filters % self.groups:
            raise ValueError(
                f"Conv2D: filters must be a multiple of groups (each group makes filters / groups "
                f"channels), got filters={self.filters}, groups={self.groups}"
            )
        try:
            self.padding = ops.resolve_padding(padding, self.kernel_size, stride, self.dilation)
        except ValueError as error:
            raise ValueError(f"Conv2D: {error}") from None
        self.padding_arg = _padding_config(padding)
        self.use_bias = bool(use_bias)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D needs (H, W, C) inputs, got shape {input_shape}")
        if input_shape[2] % self.groups:
            raise ValueError(
                f"Conv2D: groups={self.groups} needs input channels divisible by {self.groups}, "
                f"got {input_shape[2]} channels"
            )
        try:
            return ops.conv_output_shape(
                input_shape, self.kernel_size, self.stride, self.padding, self.filters, self.dilation
            )
        except ValueError as error:
            raise ValueError(f"Conv2D: {error}") from None

    def build(self, input_shape, rng):
        output_shape = super().build(input_shape, rng)
        kh, kw = self.kernel_size
        c_group = self.input_shape[2] // self.groups
        fan_in = kh * kw * c_group
        self.params["weight"] = _uniform_init(rng, (kh, kw, c_group, self.filters), fan_in)
        if self.use_bias:
            self.params["bias"] = _uniform_init(rng, (self.filters,), fan_in)
        return output_shape

    def forward(self, x, training=False, rng=None, activate=True):
        z, self._cache = ops.conv2d_forward(
            x,
            self.params["weight"],
            self.params.get("bias"),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
        return self._activate(z, activate)

    def backward(self, dy, need_dx=True):
        dz = self._activation_backward(dy)
        dx, dw, db = ops.conv2d_backward(dz, self._cache, need_dx=need_dx)
        self.grads["weight"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def get_config(self):
        """The constructor's arguments; dilation and groups only when they are not 1, so a model
        that uses neither has the config.json of earlier versions."""
        config = {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": self.padding_arg,
            "activation": self.activation,
            "use_bias": self.use_bias,
        }
        if self.dilation != (1, 1):
            config["dilation"] = _compact(self.dilation)
        if self.groups != 1:
            config["groups"] = self.groups
        return config


def _pool_padding(padding, pool_size, layer: str):
    """An int or a pair (ph, pw), as torch pools take it -> ((ph, ph), (pw, pw))."""
    ok = (isinstance(padding, (int, np.integer)) and not isinstance(padding, bool)) or (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in padding)
    )
    if not ok:
        raise ValueError(
            f"{layer}: padding must be an int >= 0 or a pair (ph, pw) of them (both sides alike, "
            f"as torch pads), got {padding!r}"
        )
    try:
        return ops.pool_padding(padding, pool_size)
    except ValueError as error:
        raise ValueError(f"{layer}: {error}") from None


class _Pool2D(Layer):
    """Windows of pool_size moved by stride (default: pool_size, no overlap), padded by `padding`,
    the last partial window kept with ceil_mode; see convscope.ops.pool. No parameters.

    Attributes, normalised at construction: `pool_size` and `stride` are pairs, `padding` is
    ((top, bottom), (left, right)).
    """

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        layer = type(self).__name__
        self.pool_size = _pair(pool_size, "pool_size", layer)
        self.stride = self.pool_size if stride is None else _pair(stride, "stride", layer)
        self.padding = _pool_padding(padding, self.pool_size, layer)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise ValueError(f"{layer}: ceil_mode must be True or False, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)

    def compute_output_shape(self, input_shape):
        layer = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(f"{layer} needs (H, W, C) inputs, got shape {input_shape}")
        try:
            return ops.pool_output_shape(
                input_shape, self.pool_size, self.stride, self.padding, self.ceil_mode
            )
        except ValueError as error:
            raise ValueError(f"{layer}: {error}") from None

    def _pool_config(self) -> dict:
        (ph, _), (pw, _) = self.padding
        return {
            "pool_size": list(self.pool_size),
            "stride": _compact(self.stride),
            "padding": _compact((ph, pw)),
        }


class MaxPool2D(_Pool2D):
    """Max over each window (the image padded with -inf), as torch.nn.MaxPool2d. No parameters."""

    def forward(self, x, training=False, rng=None):
        y, self._cache = ops.maxpool2d_forward(x, self.pool_size, self.stride, self.padding, self.ceil_mode)
        return y

    def infer(self, x):
        return ops.maxpool2d(x, self.pool_size, self.stride, self.padding, self.ceil_mode)

    def backward(self, dy, need_dx=True):
        return ops.maxpool2d_backward(dy, self._cache)

    def get_config(self):
        """pool_size and stride; padding and ceil_mode only when set, so a plain pooling layer has the
        config.json of earlier versions."""
        config = self._pool_config()
        if self.padding == ops.pool.NO_PADDING:
            del config["padding"]
        if self.ceil_mode:
            config["ceil_mode"] = True
        return config


class AvgPool2D(_Pool2D):
    """Mean over each window, as torch.nn.AvgPool2d: zero padding, divided by the window's size
    (count_include_pad=True) or by the image pixels in it (False). No parameters."""

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(pool_size, stride, padding, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise ValueError(f"AvgPool2D: count_include_pad must be True or False, got {count_include_pad!r}")
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x, training=False, rng=None):
        y, self._cache = ops.avgpool2d_forward(
            x, self.pool_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )
        return y

    def backward(self, dy, need_dx=True):
        return ops.avgpool2d_backward(dy, self._cache)

    def get_config(self):
        return {
            **self._pool_config(),
            "ceil_mode": self.ceil_mode,
            "count_include_pad": self.count_include_pad,
        }


class Flatten(Layer):
    """(N, H, W, C) -> (N, H * W * C), in row-major (h, w, c) order."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False, rng=None):
        y, self._cache = ops.flatten_forward(x)
        return y

    def backward(self, dy, need_dx=True):
        return ops.flatten_backward(dy, self._cache)


class Dense(_WithActivation):
    """Fully connected: (N, D_in) -> (N, units). Parameters `weight` (D_in, units), `bias` (units,)."""

    def __init__(self, units, activation=None, use_bias=True):
        super().__init__(activation)
        self.units = _positive_int(units, "units", "Dense")
        self.use_bias = bool(use_bias)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense needs flat (D,) inputs, got shape {input_shape}: put a Flatten() before it"
            )
        return (self.units,)

    def build(self, input_shape, rng):
        output_shape = super().build(input_shape, rng)
        fan_in = self.input_shape[0]
        self.params["weight"] = _uniform_init(rng, (fan_in, self.units), fan_in)
        if self.use_bias:
            self.params["bias"] = _uniform_init(rng, (self.units,), fan_in)
        return output_shape

    def forward(self, x, training=False, rng=None, activate=True):
        z, self._cache = ops.dense_forward(x, self.params["weight"], self.params.get("bias"))
        return self._activate(z, activate)

    def backward(self, dy, need_dx=True):
        dz = self._activation_backward(dy)
        dx, dw, db = ops.dense_backward(dz, self._cache, need_dx=need_dx)
        self.grads["weight"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def get_config(self):
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias}


class ReLU(Layer):
    """max(x, 0), element-wise."""

    def forward(self, x, training=False, rng=None):
        y, self._cache = ops.relu_forward(x)
        return y

    def infer(self, x):
        return ops.relu(x)

    def backward(self, dy, need_dx=True):
        return ops.relu_backward(dy, self._cache)


class Softmax(Layer):
    """Logits (N, K) -> class probabilities (N, K), each row summing to 1."""

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"Softmax needs flat (K,) inputs, got shape {input_shape}")
        return input_shape

    def forward(self, x, training=False, rng=None):
        y, self._cache = ops.softmax_forward(x)
        return y

    def backward(self, dy, need_dx=True):
        return ops.softmax_backward(dy, self._cache)


class Dropout(Layer):
    """In training, zero each value with probability `rate` and scale the rest by 1 / (1 - rate);
    at inference, pass values through unchanged."""

    uses_rng = True

    def __init__(self, rate):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def forward(self, x, training=False, rng=None):
        if not training or self.rate == 0.0:
            self._cache = None
            return x
        if rng is None:
            raise ValueError("Dropout: training needs an explicit numpy Generator (rng=...)")
        y, self._cache = ops.dropout_forward(x, self.rate, rng)
        return y

    def backward(self, dy, need_dx=True):
        return ops.dropout_backward(dy, self._cache)

    def get_config(self):
        return {"rate": self.rate}


class _InferenceInput(NamedTuple):
    """What an inference-mode forward pass keeps for its backward: the input."""

    x: np.ndarray


class BatchNorm2D(Layer):
    """Batch normalisation of each channel of (N, H, W, C) blocks, as torch.nn.BatchNorm2d.

    Training normalises with the batch's mean and biased variance over (N, H, W), then scales by
    `weight` (init 1) and shifts by `bias` (init 0); inference uses the buffers `running_mean` (init 0)
    and `running_var` (init 1), which every training step moves by `momentum` towards the batch's
    mean and unbiased variance. See convscope.ops.norm.
    """

    def __init__(self, momentum=0.1, eps=1e-5):
        super().__init__()
        self.momentum = _fraction(momentum, "momentum", "BatchNorm2D")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"BatchNorm2D: eps must be a number > 0, got {eps!r}")
        self.eps = float(eps)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"BatchNorm2D needs (H, W, C) inputs, got shape {input_shape}")
        return input_shape

    def build(self, input_shape, rng):
        output_shape = super().build(input_shape, rng)
        channels = self.input_shape[2]
        self.params["weight"] = np.ones(channels, dtype=np.float32)
        self.params["bias"] = np.zeros(channels, dtype=np.float32)
        self.buffers["running_mean"] = np.zeros(channels, dtype=np.float32)
        self.buffers["running_var"] = np.ones(channels, dtype=np.float32)
        return output_shape

    def forward(self, x, training=False, rng=None):
        if not training:
            self._cache = _InferenceInput(x)  # backward then differentiates the running-statistics map
            return self.infer(x)
        y, self._cache = ops.batchnorm2d_forward(x, self.params["weight"], self.params["bias"], self.eps)
        self.batch_statistics = self._cache.statistics
        return y

    def infer(self, x):
        mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        return ops.batchnorm2d(x, mean, var, self.params["weight"], self.params["bias"], self.eps)

    def backward(self, dy, need_dx=True):
        if isinstance(self._cache, _InferenceInput):
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            dx, self.grads["weight"], self.grads["bias"] = ops.batchnorm2d_inference_backward(
                dy, self._cache.x, mean, var, self.params["weight"], self.eps
            )
            return dx
        dx, self.grads["weight"], self.grads["bias"] = ops.batchnorm2d_backward(dy, self._cache)
        return dx

    def update_buffers(self, shard_statistics):
        """The whole step's statistics, combined exactly from its shards', move the running ones once."""
        statistics = ops.combine_batch_statistics(shard_statistics)
        ops.update_running_statistics(
            self.buffers["running_mean"], self.buffers["running_var"], statistics, self.momentum
        )

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}


class GlobalAvgPool2D(Layer):
    """(N, H, W, C) -> (N, C): the mean of each channel over the whole image. No parameters."""

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool2D needs (H, W, C) inputs, got shape {input_shape}")
        return (input_shape[2],)

    def forward(self, x, training=False, rng=None):
        y, self._cache = ops.global_avgpool2d_forward(x)
        return y

    def backward(self, dy, need_dx=True):
        return ops.global_avgpool2d_backward(dy, self._cache)


LAYER_TYPES = {
    cls.__name__: cls
    for cls in (
        Conv2D,
        MaxPool2D,
        AvgPool2D,
        Flatten,
        Dense,
        ReLU,
        Softmax,
        Dropout,
        BatchNorm2D,
        GlobalAvgPool2D,
    )
}


from convscope.blocks import Residual, SubsampleZeroPad  # noqa: E402  (blocks are layers of layers)

LAYER_TYPES.update({cls.__name__: cls for cls in (Residual, SubsampleZeroPad)})


def layer_from_config(entry: dict) -> Layer:
    """{"type": "Conv2D", "config": {...}} -> a new, unbuilt layer (a Residual's layers included)."""
    if not isinstance(entry, dict):
        raise ValueError(f"a layer must be an object with a 'type', got {type(entry).__name__}")
    kind = entry.get("type")
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    config = entry.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"layer {kind}: its config must be an object, got {type(config).__name__}")
    return LAYER_TYPES[kind](**config)
