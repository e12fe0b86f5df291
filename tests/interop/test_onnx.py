"""convscope -> ONNX: the graph is valid, says what it is, and onnxruntime computes the same outputs."""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from interop_helpers import assert_logits_close, model_logits, random_images  # noqa: E402

from convscope import Conv2D, Dense, Flatten, Sequential, Softmax, __version__  # noqa: E402
from convscope.interop import to_onnx  # noqa: E402
from convscope.models import seed_cnn  # noqa: E402


def run_onnx(proto, x, layout="nhwc") -> dict:
    """Every graph output by name, for (N, H, W, C) images fed in `layout`."""
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = x if layout == "nhwc" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": feed}), strict=True))


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_onnxruntime_matches_convscope(architecture, layout):
    x = random_images(architecture.input_shape)
    outputs = run_onnx(to_onnx(architecture, layout), x, layout)
    assert_logits_close(outputs["logits"], model_logits(architecture, x), f"{layout} logits")
    if "probabilities" in outputs:
        np.testing.assert_allclose(outputs["probabilities"], architecture(x), rtol=0, atol=1e-6)
    else:
        assert architecture._softmax_head() is None


def test_seed_cnn_graph_ops_inputs_and_metadata():
    names = [f"class {i}" for i in range(10)]
    model = seed_cnn((28, 28, 1), 10, seed=0, class_names=names)
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
    ops = [node.op_type for node in proto.graph.node]
    assert ops[0] == "Transpose"  # NHWC in, NCHW inside
    assert {"Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Softmax"} <= set(ops)
    assert "Transpose" not in ops[1:]  # the flatten order is handled by the Gemm weight, not at run time
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 28, 28, 1]
    assert [o.name for o in proto.graph.output] == ["probabilities", "logits"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == names
    assert meta["convscope_version"] == __version__ and meta["input_layout"] == "NHWC"
    assert json.loads(meta["convscope_config"]) == model.get_config()
    nchw = to_onnx(model, "nchw")
    assert [d.dim_param or d.dim_value for d in nchw.graph.input[0].type.tensor_type.shape.dim] == [
        "N",
        1,
        28,
        28,
    ]
    assert nchw.graph.node[0].op_type == "Conv"


def test_a_flattened_block_as_output_is_transposed_back_inside_the_graph():
    model = Sequential([Conv2D(3, 1), Flatten(), Flatten(), Softmax()], input_shape=(2, 2, 1), seed=0)
    x = random_images((2, 2, 1))
    np.testing.assert_allclose(run_onnx(to_onnx(model), x)["probabilities"], model(x), rtol=0, atol=1e-6)


def test_bad_layout_is_refused():
    model = Sequential([Flatten(), Dense(2)], input_shape=(2, 2, 1))
    with pytest.raises(ValueError, match=r"layout must be one of \('nhwc', 'nchw'\), got 'NHWC!'"):
        to_onnx(model, "NHWC!")


def test_standardisation_batchnorm_and_global_pooling_nodes():
    from interop_helpers import ARCHITECTURES

    model = ARCHITECTURES["small-vgg-standardized"]()
    proto = to_onnx(model, "nchw")
    ops = [node.op_type for node in proto.graph.node]
    assert ops[:4] == ["Sub", "Div", "Conv", "BatchNormalization"]  # the standardisation comes first
    assert ops.count("BatchNormalization") == 6
    tail = ["MaxPool", "GlobalAveragePool", "Flatten", "Identity", "Gemm", "Softmax", "Identity", "Identity"]
    assert ops[-8:] == tail  # ... pooling, dropout (Identity), dense, softmax, the two outputs
    batchnorm = next(node for node in proto.graph.node if node.op_type == "BatchNormalization")
    assert list(batchnorm.input[1:]) == ["1.weight", "1.bias", "1.running_mean", "1.running_var"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in batchnorm.attribute}
    assert attributes["epsilon"] == pytest.approx(1e-5) and attributes["momentum"] == pytest.approx(0.9)
    x = random_images(model.input_shape)
    outputs = run_onnx(proto, x, "nchw")
    np.testing.assert_allclose(outputs["probabilities"], model(x), rtol=0, atol=1e-6)
