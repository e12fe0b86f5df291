"""The fast path against the reference, stage by stage: each fused stage of convscope.kernels.plan
computes what its layers' reference ops compute (float32, 1e-5), and its gradients pass float64
finite-difference checks of their own.

Inputs come in two kinds: random normals, and small integers (with integer kernels), whose sums are
exact, so that pooling windows hold exact ties and both paths must send the gradient to the same first
maximum.
"""

import numpy as np
import pytest
from gradient_helpers import assert_grad

from convscope import layers
from convscope.kernels.plan import BatchNormStage, ConvStage, DenseStage

pytest.importorskip("numba")

RTOL = ATOL = 1e-5


def assert_close(actual, expected, what=""):
    """Within 1e-5, absolute tolerance scaled by the largest expected value (sums of many terms)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale, err_msg=what)


def reference_pass(stage_layers, x, dy, need_dx=True):
    """Forward and backward through the layers' own reference ops: y, dx and {name: grads}."""
    h = x
    for layer in stage_layers:
        h = layer.forward(h, training=True)
    g = dy
    for index in range(len(stage_layers) - 1, -1, -1):
        g = stage_layers[index].backward(g, need_dx=need_dx or index > 0)
    grads = {f"{i}.{k}": v.copy() for i, layer in enumerate(stage_layers) for k, v in layer.grads.items()}
    return h, g, grads


def fused_pass(stage, x, dy, need_dx=True):
    """Copies of y, dx and the gradients: a stage writes its output and input gradient into work
    arrays that its next pass reuses."""
    y = stage.forward(x, training=True).copy()
    dx = stage.backward(dy, need_dx=need_dx)
    dx = None if dx is None else dx.copy()
    grads = {f"{i}.{k}": v.copy() for i, layer in enumerate(stage.layers) for k, v in layer.grads.items()}
    return y, dx, grads


def inputs(kind, shape, rng, dtype=np.float32):
    if kind == "ties":
        return rng.integers(-2, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def conv_layers(case, rng, kind, dtype=np.float32):
    """The layers of a conv stage: Conv2D [+ ReLU] [+ MaxPool2D(2)], built for the case's input."""
    n, h, w, c_in, c_out, kernel, stride, padding, relu, pool, bias = case
    stack = [layers.Conv2D(c_out, kernel, stride=stride, padding=padding, use_bias=bias)]
    stack += [layers.ReLU()] if relu else []
    stack += [layers.MaxPool2D(2)] if pool == 2 else []
    shape = (h, w, c_in)
    for layer in stack:
        shape = layer.build(shape, rng)
    weight = stack[0].params["weight"]
    if kind == "ties":
        weight[...] = rng.integers(-1, 2, size=weight.shape)
        if bias:
            stack[0].params["bias"][...] = rng.integers(-1, 2, size=c_out)
    for layer in stack:
        for key in layer.params:
            layer.params[key] = layer.params[key].astype(dtype)
    return stack


CONV_CASES = {
    # name: (N, H, W, C_in, C_out, kernel, stride, padding, relu, pool, bias)
    "seed-first-layer": (3, 12, 12, 1, 16, 3, 1, "same", True, 2, True),
    "seed-second-layer": (3, 8, 8, 16, 32, 3, 1, "same", True, 2, True),
    "colour-first-layer": (2, 10, 10, 3, 16, 3, 1, "same", True, 2, True),
    "odd-sizes-pool": (2, 9, 7, 3, 5, 3, 1, "same", True, 2, True),
    "valid-no-relu-pool": (2, 9, 9, 2, 4, 3, 1, "valid", False, 2, True),
    "stride2-pad1": (2, 9, 8, 3, 4, 3, 2, 1, True, 1, True),
    "5x5-pad2-no-bias": (2, 7, 7, 2, 3, 5, 1, 2, True, 1, False),
    "even-kernel-same": (2, 6, 5, 2, 3, 2, 1, "same", False, 1, True),
    "rectangular-kernel": (1, 7, 9, 6, 3, (3, 5), 1, "same", True, 2, True),
    "1x1": (2, 5, 5, 6, 3, 1, 1, "valid", True, 1, True),
    "plain-conv": (2, 6, 6, 8, 4, 3, 1, "same", False, 1, False),
    "gray-stride2-pool": (2, 11, 11, 1, 4, 3, 2, 1, True, 2, True),  # the pooled direct kernel, strided
    "2x2-two-channels-pool": (2, 7, 6, 2, 3, 2, 1, "valid", True, 2, False),  # 2x2 kernel, two channels
}


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "im2col"])
@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_conv_stage_matches_the_reference_ops(case, kind, direct):
    rng = np.random.default_rng(0)
    n, h, w, c_in = case[:4]
    stack = conv_layers(case, rng, kind)
    x = inputs(kind, (n, h, w, c_in), rng)
    stage = ConvStage(stack, relu=case[8], pool=case[9], direct=direct)
    y = stage.forward(x, training=True)
    dy = inputs(kind, y.shape, rng)
    y_fast, dx_fast, grads_fast = fused_pass(stage, x, dy)
    y_ref, dx_ref, grads_ref = reference_pass(stack, x, dy)
    assert_close(y_fast, y_ref, "y")
    assert_close(stage.forward(x), y_ref, "inference y")
    assert_close(dx_fast, dx_ref, "dx")
    assert grads_fast.keys() == grads_ref.keys()
    for name in grads_ref:
        assert_close(grads_fast[name], grads_ref[name], name)
    if kind == "ties":  # exact sums: the same winners, so exactly the same gradient pattern
        np.testing.assert_array_equal(dx_fast != 0, dx_ref != 0)


GRADIENT_CASES = [
    "seed-first-layer",
    "odd-sizes-pool",
    "stride2-pad1",
    "5x5-pad2-no-bias",
    "valid-no-relu-pool",
]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "im2col"])
@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_conv_stage_gradients_float64(name, direct):
    n, h, w, c_in, c_out, kernel, stride, padding, relu, pool, bias = CONV_CASES[name]
    case = (2, min(h, 7), min(w, 7), c_in, min(c_out, 3), kernel, stride, padding, relu, pool, bias)
    rng = np.random.default_rng(1)
    stack = conv_layers(case, rng, "normal", np.float64)
    stage = ConvStage(stack, relu=relu, pool=pool, direct=direct)
    x = rng.standard_normal((2, case[1], case[2], c_in))
    dy = rng.standard_normal(stage.forward(x).shape)

    def loss():
        return float(np.sum(stage.forward(x) * dy))

    stage.forward(x, training=True)
    dx = stage.backward(dy, need_dx=True)
    assert dx.dtype == np.float64
    assert_grad(dx, loss, x, "dx")
    for key, param in stack[0].params.items():
        assert_grad(stack[0].grads[key], loss, param, key)


BATCHNORM_CASES = {
    # name: (N, H, W, C, relu, pool)
    "bn-relu-pool": (4, 8, 8, 32, True, 2),
    "bn-relu-pool-odd": (3, 7, 9, 16, True, 2),
    "bn-relu": (4, 6, 6, 8, True, 1),
    "bn-alone": (3, 5, 4, 4, False, 1),
    "bn-pool": (3, 6, 6, 4, False, 2),
}


def batchnorm_layers(relu, pool, shape, rng, dtype=np.float32):
    stack = (
        [layers.BatchNorm2D()]
        + ([layers.ReLU()] if relu else [])
        + ([layers.MaxPool2D(2)] if pool == 2 else [])
    )
    for layer in stack:
        shape = layer.build(shape, rng)
    norm = stack[0]
    norm.params["weight"][...] = rng.uniform(0.5, 1.5, norm.params["weight"].shape)
    norm.params["bias"][...] = rng.uniform(-0.5, 0.5, norm.params["bias"].shape)
    for key in norm.params:
        norm.params[key] = norm.params[key].astype(dtype)
    return stack


@pytest.mark.parametrize("case", list(BATCHNORM_CASES.values()), ids=list(BATCHNORM_CASES))
def test_batchnorm_stage_matches_the_reference_ops(case):
    n, h, w, c, relu, pool = case
    rng = np.random.default_rng(2)
    stack = batchnorm_layers(relu, pool, (h, w, c), rng)
    stage = BatchNormStage(stack, relu, pool)
    x = (rng.standard_normal((n, h, w, c)) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal(stage.forward(x, training=True).shape).astype(np.float32)
    y_fast, dx_fast, grads_fast = fused_pass(stage, x, dy)
    statistics_fast = stack[0].batch_statistics
    y_ref, dx_ref, grads_ref = reference_pass(stack, x, dy)
    statistics_ref = stack[0].batch_statistics
    assert_close(y_fast, y_ref, "y")
    assert_close(dx_fast, dx_ref, "dx")
    for name in grads_ref:
        assert_close(grads_fast[name], grads_ref[name], name)
    assert statistics_fast.count == statistics_ref.count
    assert_close(statistics_fast.mean, statistics_ref.mean, "batch mean")
    assert_close(statistics_fast.var, statistics_ref.var, "batch variance")
    norm = stack[0]
    norm.buffers["running_mean"][...] = rng.standard_normal(c)
    norm.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
    expected = x
    for layer in stack:
        expected = layer.infer(expected)
    assert_close(stage.forward(x), expected, "inference y")


@pytest.mark.parametrize("name", ["bn-relu-pool-odd", "bn-alone", "bn-pool"])
def test_batchnorm_stage_gradients_float64(name):
    _, h, w, c, relu, pool = BATCHNORM_CASES[name]
    rng = np.random.default_rng(3)
    stack = batchnorm_layers(relu, pool, (h, w, min(c, 3)), rng, np.float64)
    stage = BatchNormStage(stack, relu, pool)
    x = rng.standard_normal((2, h, w, min(c, 3))) * 2
    dy = rng.standard_normal(stage.forward(x, training=True).shape)

    def loss():
        return float(np.sum(stage.forward(x, training=True) * dy))

    stage.forward(x, training=True)
    dx = stage.backward(dy)
    assert_grad(dx, loss, x, "dx")
    for key, param in stack[0].params.items():
        assert_grad(stack[0].grads[key], loss, param, key)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_stage_matches_the_reference_ops(relu, dtype):
    rng = np.random.default_rng(4)
    stack = [layers.Dense(7)] + ([layers.ReLU()] if relu else [])
    shape = (12,)
    for layer in stack:
        shape = layer.build(shape, rng)
    for key in stack[0].params:
        stack[0].params[key] = stack[0].params[key].astype(dtype)
    stage = DenseStage(stack, relu)
    x = rng.standard_normal((5, 12)).astype(dtype)
    dy = rng.standard_normal((5, 7)).astype(dtype)
    y_fast, dx_fast, grads_fast = fused_pass(stage, x, dy)
    y_ref, dx_ref, grads_ref = reference_pass(stack, x, dy)
    assert_close(y_fast, y_ref, "y")
    assert_close(dx_fast, dx_ref, "dx")
    for name in grads_ref:
        assert_close(grads_fast[name], grads_ref[name], name)


@pytest.mark.parametrize("case", ["seed-second-layer", "odd-sizes-pool", "plain-conv"])
def test_conv_stage_gives_the_same_results_a_few_images_at_a_time(case, monkeypatch):
    from convscope.kernels import plan

    rng = np.random.default_rng(9)
    stack = conv_layers(CONV_CASES[case], rng, "normal")
    n, h, w, c_in = CONV_CASES[case][:4]
    x = inputs("normal", (5, h, w, c_in), rng)
    stage = ConvStage(stack, relu=CONV_CASES[case][8], pool=CONV_CASES[case][9], direct=False)
    dy = inputs("normal", stage.forward(x).shape, rng)
    whole = fused_pass(stage, x, dy)
    monkeypatch.setattr(plan, "CHUNK_BYTES", 1)  # one image per chunk
    chunked = fused_pass(stage, x, dy)
    assert_close(chunked[0], whole[0], "y")  # BLAS may round a product of other sizes differently
    assert_close(chunked[1], whole[1], "dx")
    for name in whole[2]:
        assert_close(chunked[2][name], whole[2][name], name)
