"""Residual blocks: a layer that holds layers (He et al., "Deep Residual Learning for Image
Recognition", 2016).

    y = relu(body(x) + shortcut(x))

`body` is a list of layers (for the paper's CIFAR network: conv 3x3 - batch norm - ReLU - conv 3x3 -
batch norm); the ReLU after the addition belongs to the block, as in the paper. The shortcut is the
identity when the body keeps the shape of its input; when it changes it (stride 2, more channels),
the paper has two options:
- 'A': keep every second pixel and append zero channels (`SubsampleZeroPad`, no parameters);
- 'B': a 1x1 convolution with stride 2 and no bias, then batch normalisation (a projection).
Both are the identity for a block that keeps the shape. A list of layers is a shortcut of your own.

The block's parameters, gradients and buffers are its layers', by torch-like names: 'body.0.weight',
'body.1.running_mean', 'shortcut.0.weight'; in a Sequential they become '2.body.0.weight', like the
state_dict of a torch module with `body` and `shortcut` sub-modules. Assigning to
`block.params['body.0.weight']` assigns to the conv's own `params['weight']`.
"""

import copy
from collections.abc import MutableMapping

from convscope import layers, ops

SHORTCUTS = ("identity", "A", "B")
BRANCHES = ("body", "shortcut")


class SubsampleZeroPad(layers.Layer):
    """The paper's option-A shortcut: every `stride`-th row and column, then zero channels up to
    `channels`. (H, W, C) -> (ceil(H / sh), ceil(W / sw), channels). No parameters."""

    def __init__(self, channels, stride=2):
        super().__init__()
        self.channels = layers._positive_int(channels, "channels", "SubsampleZeroPad")
        self.stride = layers._pair(stride, "stride", "SubsampleZeroPad")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"SubsampleZeroPad needs (H, W, C) inputs, got shape {input_shape}")
        h, w, c = input_shape
        if self.channels < c:
            raise ValueError(
                f"SubsampleZeroPad: channels={self.channels} is fewer than "
                f"the input's {c} (it only adds zeros)"
            )
        sh, sw = self.stride
        return (-(-h // sh), -(-w // sw), self.channels)

    def forward(self, x, training=False, rng=None):
        y, self._cache = ops.subsample_zero_pad_forward(x, self.stride, self.channels)
        return y

    def infer(self, x):
        return ops.subsample_zero_pad_forward(x, self.stride, self.channels)[0]

    def backward(self, dy, need_dx=True):
        return ops.subsample_zero_pad_backward(dy, self._cache)

    def get_config(self):
        return {"channels": self.channels, "stride": layers._compact(self.stride)}


class _BranchArrays(MutableMapping):
    """One of a block's `params`, `grads` or `buffers`: its layers' dicts of that name seen as one,
    keyed 'body.0.weight'. Reads and writes go to the layers' own dicts."""

    def __init__(self, block, attribute: str):
        self.block, self.attribute = block, attribute

    def _locate(self, key):
        branch, _, rest = str(key).partition(".")
        index, _, name = rest.partition(".")
        if branch in BRANCHES and index.isdigit() and name:
            members = getattr(self.block, branch)
            if int(index) < len(members):
                return getattr(members[int(index)], self.attribute), name
        raise KeyError(key)

    def __getitem__(self, key):
        arrays, name = self._locate(key)
        return arrays[name]

    def __setitem__(self, key, value):
        arrays, name = self._locate(key)
        arrays[name] = value

    def __delitem__(self, key):
        arrays, name = self._locate(key)
        del arrays[name]

    def __iter__(self):
        return iter(
            [
                f"{path}.{name}"
                for path, layer in self.block.named_layers()
                for name in getattr(layer, self.attribute)
            ]
        )

    def __len__(self):
        return sum(len(getattr(layer, self.attribute)) for _, layer in self.block.named_layers())


def _branch_layers(value, what: str) -> list:
    """A list of layers (or {"type", "config"} entries, as a model file holds them) -> new layers list."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"Residual: {what} must be a list of layers, got {type(value).__name__}")
    members = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            item = layers.layer_from_config(item)
        if not isinstance(item, layers.Layer):
            raise ValueError(f"Residual: {what}[{index}] must be a layer, got {type(item).__name__}")
        members.append(item)
    return members


def _shortcut_stride(size: int, out: int, axis: str, shape_in, shape_out) -> int:
    """The stride that takes `size` pixels to `out` (ceil(size / stride) == out), or an error."""
    stride = -(-size // out) if out else 0
    if out < 1 or -(-size // stride) != out:
        raise ValueError(
            f"Residual: no strided shortcut maps the input {shape_in} to the body's output {shape_out} "
            f"(its {axis} goes {size} -> {out})"
        )
    return stride


class Residual(layers.Layer):
    """y = relu(body(x) + shortcut(x)): see the module's docstring.

    body: a non-empty list of layers; shortcut: 'identity', 'A', 'B' or a list of layers;
    activation: 'relu' (the paper's, default) or None (the plain sum).
    """

    def __init__(self, body, shortcut="identity", activation="relu"):
        self.body = _branch_layers(body, "body")
        if not self.body:
            raise ValueError("Residual: body needs at least one layer")
        if isinstance(shortcut, str):
            if shortcut not in SHORTCUTS:
                raise ValueError(
                    f"Residual: shortcut must be one of {SHORTCUTS} or a list of layers, got {shortcut!r}"
                )
            self.shortcut_kind, self.shortcut = shortcut, []
        else:
            self.shortcut_kind, self.shortcut = None, _branch_layers(shortcut, "shortcut")
        if activation not in (None, "relu"):
            raise ValueError(f"Residual: activation must be 'relu' or None, got {activation!r}")
        self.relu = activation == "relu"  # not `activation`: the ReLU is inside the block, not after it
        super().__init__()

    # the block's layers and their arrays

    def named_layers(self) -> list:
        """[(path, layer)] of the body, then the shortcut: ('body.0', conv), ..., ('shortcut.0', ...)."""
        return [
            (f"{branch}.{i}", layer) for branch in BRANCHES for i, layer in enumerate(getattr(self, branch))
        ]

    def _set_all(self, attribute: str, arrays):
        """Give every layer a fresh dict for `attribute`, then store `arrays` (keyed 'body.0.weight')."""
        for _, layer in self.named_layers():
            setattr(layer, attribute, {})
        view = _BranchArrays(self, attribute)
        for key, value in dict(arrays).items():
            view[key] = value

    params = property(lambda self: _BranchArrays(self, "params"), lambda self, v: self._set_all("params", v))
    grads = property(lambda self: _BranchArrays(self, "grads"), lambda self, v: self._set_all("grads", v))
    buffers = property(
        lambda self: _BranchArrays(self, "buffers"), lambda self, v: self._set_all("buffers", v)
    )

    @property
    def uses_rng(self) -> bool:
        return any(layer.uses_rng for _, layer in self.named_layers())

    @property
    def batch_statistics(self):
        """{path: what that layer's last training pass measured} for the layers with buffers, or None."""
        found = {
            path: layer.batch_statistics
            for path, layer in self.named_layers()
            if layer.batch_statistics is not None
        }
        return found or None

    @batch_statistics.setter
    def batch_statistics(self, value):
        for path, layer in self.named_layers():
            layer.batch_statistics = None if value is None else value.get(path)

    def update_buffers(self, shard_statistics):
        layers_by_path = dict(self.named_layers())
        for path in shard_statistics[0] if shard_statistics else ():
            layers_by_path[path].update_buffers([shard[path] for shard in shard_statistics])

    def __copy__(self):
        """A replica (convscope.parallel): its own layers, sharing their parameter and buffer dicts."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.body = [copy.copy(layer) for layer in self.body]
        twin.shortcut = [copy.copy(layer) for layer in self.shortcut]
        return twin

    # building

    def _shortcut_layers(self, input_shape, body_shape) -> list:
        """The layers of a named shortcut for this input and body output (none when they match)."""
        if self.shortcut_kind is None:
            return self.shortcut
        if tuple(input_shape) == tuple(body_shape):
            return []
        if self.shortcut_kind == "identity" or len(input_shape) != 3 or len(body_shape) != 3:
            raise ValueError(
                f"Residual: the body maps {tuple(input_shape)} to {tuple(body_shape)}; an identity shortcut "
                "needs the same shape (use shortcut='A' or 'B' for a body that downsamples)"
            )
        stride = tuple(
            _shortcut_stride(size, out, axis, input_shape, body_shape)
            for size, out, axis in zip(input_shape[:2], body_shape[:2], ("height", "width"), strict=True)
        )
        channels = body_shape[2]
        if self.shortcut_kind == "A":
            return [SubsampleZeroPad(channels, stride)]
        return [layers.Conv2D(channels, 1, stride=stride, padding=0, use_bias=False), layers.BatchNorm2D()]

    def _build_branch(self, branch: str, shape, rng):
        """Name and build the layers of `branch` in order from `shape`; returns their output shape."""
        for index, layer in enumerate(getattr(self, branch)):
            layer.name = f"{self.name or 'residual'}.{branch}.{index}"
            try:
                shape = layer.build(shape, rng)
            except ValueError as error:
                raise ValueError(f"{branch} layer {index} ({type(layer).__name__}): {error}") from None
        return tuple(shape)

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        shape = self._build_branch("body", self.input_shape, rng)
        self.shortcut = self._shortcut_layers(self.input_shape, shape)
        through = self._build_branch("shortcut", self.input_shape, rng)
        if through != shape:
            raise ValueError(
                f"Residual: the body's output {shape} and the shortcut's {through} differ; "
                "they must have one shape to be added"
            )
        self.output_shape = shape
        return self.output_shape

    # forward and backward

    def _add(self, body_out, shortcut_out):
        """(the block's output, the cache its backward needs)."""
        if not self.relu:
            return body_out + shortcut_out, None
        return ops.add_relu_forward(body_out, shortcut_out)

    def branch_outputs(self, x, training=False, rng=None, keep=False) -> tuple[list, list]:
        """The outputs of every body layer and every shortcut layer for x (inference unless training);
        keep: the layers keep what backward needs, in inference too (as `forward` does)."""
        outputs = {}
        for branch in BRANCHES:
            h, outputs[branch] = x, []
            for layer in getattr(self, branch):
                h = layer.forward(h, training=training, rng=rng) if training or keep else layer.infer(h)
                outputs[branch].append(h)
        return outputs["body"], outputs["shortcut"]

    def forward(self, x, training=False, rng=None):
        """Training, or inference keeping what backward needs (attribution differentiates it)."""
        body, shortcut = self.branch_outputs(x, training, rng, keep=True)
        y, self._cache = self._add(body[-1], shortcut[-1] if shortcut else x)
        return y

    def infer(self, x):
        body, shortcut = self.branch_outputs(x)
        return self._add(body[-1], shortcut[-1] if shortcut else x)[0]

    def backward(self, dy, need_dx=True):
        d = ops.add_relu_backward(dy, self._cache) if self.relu else dy
        d_body = d
        for index in range(len(self.body) - 1, -1, -1):
            d_body = self.body[index].backward(d_body, need_dx=need_dx or index > 0)
        d_shortcut = d
        for index in range(len(self.shortcut) - 1, -1, -1):
            d_shortcut = self.shortcut[index].backward(d_shortcut, need_dx=need_dx or index > 0)
        self._cache = None
        return d_body + d_shortcut if need_dx else None

    def get_config(self):
        def entries(members):
            return [{"type": type(layer).__name__, "config": layer.get_config()} for layer in members]

        shortcut = self.shortcut_kind if self.shortcut_kind is not None else entries(self.shortcut)
        return {"body": entries(self.body), "shortcut": shortcut, "activation": "relu" if self.relu else None}

    def __repr__(self):
        body = ", ".join(repr(layer) for layer in self.body)
        shortcut = self.shortcut_kind or "[" + ", ".join(repr(layer) for layer in self.shortcut) + "]"
        return (
            f"Residual(body=[{body}], shortcut={shortcut!r}, activation={self.get_config()['activation']!r})"
        )
