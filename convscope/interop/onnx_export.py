"""convscope -> ONNX: the model as an inference graph that onnxruntime (and TensorRT, OpenVINO, ...)
can run.

The graph works in NCHW inside, as ONNX's Conv and MaxPool require. With layout='nhwc' (the
default) its input `images` is (N, H, W, C) like convscope's, and a Transpose node makes it NCHW;
with layout='nchw' the input is (N, C, H, W) like PyTorch's. Flatten then gives (c, h, w) order,
so the first Dense layer after it gets its weight's input axis permuted (as in to_torch): one
weight reordering at export instead of a transpose at every run.

A model's input standardisation becomes Sub and Div nodes with per-channel (C, 1, 1) constants right
after the input (the same float32 arithmetic as convscope's); BatchNorm2D becomes
BatchNormalization (inference: the running statistics), GlobalAvgPool2D becomes GlobalAveragePool
and Flatten. A Residual block becomes its body's nodes and its shortcut's from the same input (option
A: Slice every second pixel, Pad zero channels), then Add and Relu; its constants are named like its
state_dict entries ('3.body.0.weight').

Outputs: `logits` (N, K); a model ending in softmax also has `probabilities` (N, K), listed first.
metadata_props hold class_names (JSON), convscope_version, input_layout, input_shape and
convscope_config (the architecture as in the model file's config.json).
"""

import json

import numpy as np

from convscope import blocks
from convscope import layers as L
from convscope.interop.pytorch import conv_weight_to_torch, dense_weight_to_torch

OPSET = 13
IR_VERSION = 8  # the IR version of opset 13's release: readable by runtimes back to 2021
LAYOUTS = ("nhwc", "nchw")


def _version() -> str:
    from convscope import __version__

    return __version__


class _Graph:
    """Nodes and initializers collected in order; `tensor` is the current output's name."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.tensor = "images"

    def add(self, op: str, name: str, inputs=(), **attributes) -> str:
        """Append `op` on the current tensor plus `inputs`; its output, named `name`, becomes current."""
        self.nodes.append(self.helper.make_node(op, [self.tensor, *inputs], [name], name=name, **attributes))
        self.tensor = name
        return name

    def constant(self, name: str, array: np.ndarray, dtype=np.float32) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array, dtype), name))
        return name


def _pads(layer) -> list:
    """((top, bottom), (left, right)) -> ONNX's order: all begins, then all ends."""
    (top, bottom), (left, right) = layer.padding
    return [top, left, bottom, right]


def _conv(graph: _Graph, index: int, layer: L.Conv2D, out: str):
    attributes = {
        "kernel_shape": list(layer.kernel_size),
        "strides": list(layer.stride),
        "pads": _pads(layer),
    }
    attributes.update(dilations=list(layer.dilation), group=layer.groups)
    inputs = [graph.constant(f"{index}.weight", conv_weight_to_torch(layer.params["weight"]))]
    if layer.use_bias:
        inputs.append(graph.constant(f"{index}.bias", layer.params["bias"]))
    graph.add("Conv", out, inputs, **attributes)


def _overhang(layer) -> tuple[int, int]:
    """Rows and columns that ceil-mode windows reach past the padded image (0, 0 without ceil_mode)."""
    h, w, _ = layer.input_shape
    out_h, out_w, _ = layer.output_shape
    return tuple(
        max(0, (out - 1) * stride + pool - (size + before + after))
        for out, stride, pool, size, (before, after) in zip(
            (out_h, out_w), layer.stride, layer.pool_size, (h, w), layer.padding, strict=True
        )
    )


def _pool(graph: _Graph, index: int, layer, out: str):
    """MaxPool or AveragePool, without ONNX's ceil_mode: its size rule keeps a last window that starts
    in the padding after the image, which torch's (and convscope's) drops. The ceil-mode windows
    become floor-mode ones over `_overhang` more rows and columns of end padding instead, which max
    pooling never picks and AveragePool(count_include_pad=0) never counts. Average pooling that
    counts its padding and overhangs pads the image with explicit zeros first (a Pad node), so the
    padding is counted and the overhang is not, as in torch."""
    (top, bottom), (left, right) = layer.padding
    extra_h, extra_w = _overhang(layer)
    attributes = {"kernel_shape": list(layer.pool_size), "strides": list(layer.stride)}
    pads = [top, left, bottom + extra_h, right + extra_w]
    if isinstance(layer, L.MaxPool2D):
        graph.add("MaxPool", out, pads=pads, **attributes)
    elif not layer.count_include_pad or pads == _pads(layer):
        graph.add("AveragePool", out, pads=pads, count_include_pad=int(layer.count_include_pad), **attributes)
    else:
        zeros = graph.constant(f"{index}.pads", np.array([0, 0, top, left, 0, 0, bottom, right]), np.int64)
        graph.add("Pad", f"{layer.name}/pad", [zeros], mode="constant")
        graph.add("AveragePool", out, pads=[0, 0, extra_h, extra_w], count_include_pad=0, **attributes)


def _dense(graph: _Graph, index: int, layer: L.Dense, out: str, flattened_from):
    weight = dense_weight_to_torch(layer.params["weight"], flattened_from)  # (D_out, D_in)
    inputs = [graph.constant(f"{index}.weight", weight)]
    if layer.use_bias:
        inputs.append(graph.constant(f"{index}.bias", layer.params["bias"]))
    graph.add("Gemm", out, inputs, transB=1)


def _batchnorm(graph: _Graph, index: int, layer: L.BatchNorm2D, out: str):
    inputs = [
        graph.constant(f"{index}.{name}", array)
        for name, array in (*layer.params.items(), *layer.buffers.items())
    ]  # weight, bias, running_mean, running_var: ONNX's scale, B, input_mean, input_var
    graph.add("BatchNormalization", out, inputs, epsilon=layer.eps, momentum=1.0 - layer.momentum)


def _standardization(graph: _Graph, standardization):
    """(x - mean) / std per channel, on the NCHW tensor: constants of shape (C, 1, 1) broadcast."""
    for op, key in (("Sub", "mean"), ("Div", "std")):
        values = np.asarray(standardization[key], dtype=np.float32).reshape(-1, 1, 1)
        graph.add(op, f"standardization/{op.lower()}", [graph.constant(f"standardization.{key}", values)])


def _dense_follows(layers, index: int) -> bool:
    return any(isinstance(layer, L.Dense) for layer in layers[index + 1 :])


def _subsample_zero_pad(graph: _Graph, index, layer: blocks.SubsampleZeroPad, out: str):
    """Slice every stride-th row and column, then Pad zero channels after the given ones."""
    sh, sw = layer.stride
    h, w, c = layer.input_shape
    starts = graph.constant(f"{index}.starts", np.array([0, 0]), np.int64)
    ends = graph.constant(f"{index}.ends", np.array([h, w]), np.int64)
    axes = graph.constant(f"{index}.axes", np.array([2, 3]), np.int64)
    steps = graph.constant(f"{index}.steps", np.array([sh, sw]), np.int64)
    graph.add("Slice", f"{layer.name}/subsample", [starts, ends, axes, steps])
    pads = graph.constant(f"{index}.pads", np.array([0, 0, 0, 0, 0, layer.channels - c, 0, 0]), np.int64)
    graph.add("Pad", out, [pads], mode="constant")


def _residual(graph: _Graph, index, layer: blocks.Residual, out: str):
    """The body's nodes and the shortcut's from the same input, then Add (and Relu: the block's)."""
    source = graph.tensor
    for position in range(len(layer.body)):
        _add_layer(graph, layer.body, position, None, prefix=f"{index}.body.")
    body = graph.tensor
    graph.tensor = source
    for position in range(len(layer.shortcut)):
        _add_layer(graph, layer.shortcut, position, None, prefix=f"{index}.shortcut.")
    graph.add("Add", f"{layer.name}/add" if layer.relu else out, [body])
    if layer.relu:
        graph.add("Relu", out)


def _add_layer(graph: _Graph, layers, position: int, flattened_from, prefix: str = ""):
    """The nodes of layers[position], its constants named '{prefix}{position}.weight' (as the
    state_dict); returns the (H, W, C) block whose flattening is still pending a weight permutation
    (or None)."""
    layer = layers[position]
    index = f"{prefix}{position}"
    fused = getattr(layer, "activation", None)
    out = f"{layer.name}/linear" if fused else layer.name
    if isinstance(layer, blocks.Residual):
        _residual(graph, index, layer, out)
    elif isinstance(layer, blocks.SubsampleZeroPad):
        _subsample_zero_pad(graph, index, layer, out)
    elif isinstance(layer, L.Conv2D):
        _conv(graph, index, layer, out)
    elif isinstance(layer, L.Dense):
        _dense(graph, index, layer, out, flattened_from)
        flattened_from = None
    elif isinstance(layer, (L.MaxPool2D, L.AvgPool2D)):
        _pool(graph, index, layer, out)
    elif isinstance(layer, L.BatchNorm2D):
        _batchnorm(graph, index, layer, out)
    elif isinstance(layer, L.GlobalAvgPool2D):
        graph.add("GlobalAveragePool", f"{layer.name}/pool")  # (N, C, 1, 1)
        graph.add("Flatten", out, axis=1)
    elif isinstance(layer, L.Flatten):
        if len(layer.input_shape) == 3:  # a Flatten of a flat input keeps the pending order
            flattened_from = layer.input_shape
            if not _dense_follows(layers, position):
                graph.add("Transpose", f"{layer.name}/nhwc", perm=[0, 2, 3, 1])  # no weight to permute
                flattened_from = None
        graph.add("Flatten", out, axis=1)
    elif isinstance(layer, L.Softmax):
        graph.add("Softmax", out, axis=1)
    elif isinstance(layer, (L.ReLU, L.Dropout)):
        graph.add("Relu" if isinstance(layer, L.ReLU) else "Identity", out)  # dropout: off at inference
    else:
        raise ValueError(f"to_onnx: layer {index} ({type(layer).__name__}) has no ONNX equivalent here")
    if fused == "relu":
        graph.add("Relu", layer.name)
    elif fused == "softmax":
        graph.add("Softmax", layer.name, axis=1)
    return flattened_from


def _logits_tensor(model) -> str:
    """The name of the tensor holding the logits: before a final Softmax layer or activation."""
    last = model.layers[-1]
    if isinstance(last, L.Softmax):
        return model.layers[-2].name
    if getattr(last, "activation", None) == "softmax":
        return f"{last.name}/linear"
    return last.name


def _metadata(model, layout: str, input_shape) -> dict:
    return {
        "class_names": json.dumps(model.class_names),
        "convscope_version": _version(),
        "input_layout": layout.upper(),
        "input_shape": json.dumps(["N", *input_shape]),
        "convscope_config": json.dumps(model.get_config()),
    }


def to_onnx(model, layout: str = "nhwc"):
    """A built convscope Sequential -> a checked onnx.ModelProto (opset 13) computing the same outputs.

    layout 'nhwc': input `images` (N, H, W, C) float32, as convscope; 'nchw': (N, C, H, W), as PyTorch.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if layout not in LAYOUTS:
        raise ValueError(f"to_onnx: layout must be one of {LAYOUTS}, got {layout!r}")
    model._require_built()
    h, w, c = model.input_shape
    input_shape = [h, w, c] if layout == "nhwc" else [c, h, w]
    graph = _Graph(helper, numpy_helper)
    if layout == "nhwc":
        graph.add("Transpose", "images_nchw", perm=[0, 3, 1, 2])
    if model.standardization is not None:
        _standardization(graph, model.standardization)
    flattened_from = None
    for index in range(len(model.layers)):
        flattened_from = _add_layer(graph, model.layers, index, flattened_from)

    k = model.num_classes
    final, logits = graph.tensor, _logits_tensor(model)
    outputs = [("probabilities", final), ("logits", logits)] if final != logits else [("logits", final)]
    for name, source in outputs:
        graph.nodes.append(helper.make_node("Identity", [source], [name], name=name))
    onnx_graph = helper.make_graph(
        graph.nodes,
        model.name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", k]) for name, _ in outputs],
        initializer=graph.initializers,
    )
    proto = helper.make_model(
        onnx_graph,
        producer_name="convscope",
        producer_version=_version(),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        doc_string=f"convscope model {model.name!r}; input images {layout.upper()} float32 in [0, 1]",
    )
    helper.set_model_props(proto, _metadata(model, layout, input_shape))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save_onnx(model, path, layout: str = "nhwc"):
    """Write `to_onnx(model, layout)` to `path`; returns the ModelProto."""
    proto = to_onnx(model, layout)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return proto
