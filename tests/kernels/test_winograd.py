"""Winograd F(2x2, 3x3) (convscope.kernels.winograd) against the reference ops: the transforms and
their adjoints, whole conv stages in inference (pooling, padding, odd sizes, many channels, float64)
and in training (forward and backward, float64 gradient checks), chunking, and the cases it leaves
to im2col."""

import numpy as np
import pytest
from gradient_helpers import assert_grad
from test_fused_stages import assert_close, conv_layers, fused_pass, inputs, reference_pass

from convscope.kernels import plan, winograd
from convscope.kernels.plan import ConvStage

pytest.importorskip("numba")

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def reference_inference(stack, x):
    for layer in stack:
        x = layer.forward(x, training=False)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_transform_is_g_g_g_transposed(dtype):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, 3, 4, 5)).astype(dtype)
    u = np.empty((16, 4, 5), dtype)
    winograd.transform_kernels(4, 5, dtype)(weight, u)
    expected = np.einsum("ak,klio,bl->abio", G, weight.astype(np.float64), G).reshape(16, 4, 5)
    np.testing.assert_allclose(u, expected, rtol=1e-6, atol=1e-6)


def test_tile_transform_is_b_transposed_d_b():
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
    rng = np.random.default_rng(1)
    xp = rng.standard_normal((2, 6, 8, 3)).astype(np.float32)
    v = np.empty((16, 2 * 2 * 3, 3), np.float32)
    winograd.transform_tiles(3, np.float32)(xp, 2, 3, v)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                d = xp[b, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4].astype(np.float64)
                expected = np.einsum("ar,rcx,bc->abx", bt, d, bt).reshape(16, 3)
                np.testing.assert_allclose(v[:, (b * 2 + i) * 3 + j], expected, rtol=1e-6, atol=1e-6)


WINOGRAD_CASES = {
    # name: (N, H, W, C_in, C_out, kernel, stride, padding, relu, pool, bias), as in test_fused_stages
    "seed-second-layer": (4, 14, 14, 16, 32, 3, 1, "same", True, 2, True),
    "odd-sizes-pool": (2, 9, 7, 5, 6, 3, 1, "same", True, 2, True),
    "valid-pool": (2, 10, 9, 3, 4, 3, 1, "valid", False, 2, True),
    "resnet-body": (3, 8, 8, 16, 16, 3, 1, "same", False, 1, False),
    "even-valid-relu": (2, 8, 6, 4, 7, 3, 1, "valid", True, 1, True),
    "wide": (2, 6, 6, 64, 64, 3, 1, "same", True, 1, True),
    "asymmetric-padding": (2, 7, 7, 2, 3, 3, 1, ((1, 0), (0, 1)), True, 2, True),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(WINOGRAD_CASES.values()), ids=list(WINOGRAD_CASES))
def test_inference_through_winograd_matches_the_reference_ops(case, dtype):
    rng = np.random.default_rng(2)
    n, h, w, c_in = case[:4]
    stack = conv_layers(case, rng, "normal", dtype)
    stage = ConvStage(stack, relu=case[8], pool=case[9], direct=False)
    assert stage.winograd is not None and "Winograd" in stage.kernel
    x = rng.standard_normal((n, h, w, c_in)).astype(dtype)
    assert_close(stage.forward(x), reference_inference(stack, x), "inference y")


def test_winograd_gives_the_same_results_a_few_images_at_a_time(monkeypatch):
    rng = np.random.default_rng(3)
    case = WINOGRAD_CASES["seed-second-layer"]
    stack = conv_layers(case, rng, "normal")
    stage = ConvStage(stack, relu=True, pool=2, direct=False)
    x = rng.standard_normal((7, 14, 14, 16)).astype(np.float32)
    whole = stage.forward(x).copy()
    monkeypatch.setattr(plan, "WINOGRAD_CHUNK_BYTES", 1)  # one image per chunk
    assert_close(stage.forward(x), whole, "chunked")


@pytest.mark.parametrize(
    "case",
    [
        (1, 7, 7, 3, 4, 3, 1, "same", True, 1, True),  # 7x7 outputs without pooling: no 2x2 blocks
        (1, 8, 8, 3, 4, 3, 2, 1, True, 1, True),  # stride 2
        (1, 8, 8, 3, 4, 5, 1, "same", True, 2, True),  # 5x5
        (1, 8, 8, 3, 4, (3, 1), 1, "same", True, 2, True),  # not square
    ],
    ids=["odd-outputs", "stride-2", "5x5", "3x1"],
)
def test_convolutions_winograd_does_not_cover_stay_on_im2col(case):
    stage = ConvStage(conv_layers(case, np.random.default_rng(4), "normal"), case[8], case[9], direct=False)
    assert stage.winograd is None and "Winograd" not in stage.kernel


def test_recorded_inference_keeps_what_backward_needs():
    rng = np.random.default_rng(5)
    case = WINOGRAD_CASES["seed-second-layer"]
    stack = conv_layers(case, rng, "normal")
    stage = ConvStage(stack, relu=True, pool=2, direct=False)
    x = rng.standard_normal((2, 14, 14, 16)).astype(np.float32)
    stage.forward(x, record=True)
    assert stage._cache is not None
    assert "winograd_tiles" in stage.scratch._training  # the training arrays: kept for backward


TRAINING_CASES = dict(WINOGRAD_CASES)
TRAINING_CASES["asymmetric-padding-unpooled"] = (2, 7, 7, 2, 3, 3, 1, ((1, 0), (0, 1)), True, 1, True)
TRAINING_CASES["pool-no-relu-no-bias"] = (2, 8, 6, 3, 4, 3, 1, "same", False, 2, False)
TRAINING_CASES["relu-no-bias"] = (2, 6, 4, 5, 3, 3, 1, "same", True, 1, False)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("case", list(TRAINING_CASES.values()), ids=list(TRAINING_CASES))
def test_training_through_winograd_matches_the_reference_ops(case, kind):
    """Forward and backward; with small integers every sum is exact on both paths, so the ReLU masks
    and the pooling windows' winners (the first maximum on ties) are the same too."""
    rng = np.random.default_rng(7)
    n, h, w, c_in = case[:4]
    stack = conv_layers(case, rng, kind)
    stage = ConvStage(stack, relu=case[8], pool=case[9], direct=False)
    assert stage.winograd is not None and stage.kernel.startswith("Winograd F(2x2, 3x3) + matmul")
    x = inputs(kind, (n, h, w, c_in), rng)
    dy = inputs(kind, stage.forward(x).shape, rng)
    y_fast, dx_fast, grads_fast = fused_pass(stage, x, dy)
    y_ref, dx_ref, grads_ref = reference_pass(stack, x, dy)
    assert "winograd_tiles" in stage.shared._training
    assert_close(y_fast, y_ref, "y")
    assert_close(dx_fast, dx_ref, "dx")
    assert grads_fast.keys() == grads_ref.keys()
    for name in grads_ref:
        assert_close(grads_fast[name], grads_ref[name], name)
    if kind == "ties":
        np.testing.assert_array_equal(dx_fast, dx_ref)


@pytest.mark.parametrize(
    "name", ["resnet-body", "even-valid-relu", "asymmetric-padding-unpooled", "odd-sizes-pool", "valid-pool"]
)
def test_winograd_training_gradients_float64(name):
    n, h, w, c_in, c_out, kernel, stride, padding, relu, pool, bias = TRAINING_CASES[name]
    case = (2, h, w, min(c_in, 3), min(c_out, 3), kernel, stride, padding, relu, pool, bias)
    rng = np.random.default_rng(8)
    stack = conv_layers(case, rng, "normal", np.float64)
    stage = ConvStage(stack, relu=relu, pool=pool, direct=False)
    assert stage.winograd is not None
    x = rng.standard_normal((2, case[1], case[2], case[3]))
    dy = rng.standard_normal(stage.forward(x).shape)

    def loss():
        return float(np.sum(stage.forward(x) * dy))

    stage.forward(x, training=True)
    dx = stage.backward(dy, need_dx=True)
    assert dx.dtype == np.float64
    assert_grad(dx, loss, x, "dx")
    for key, param in stack[0].params.items():
        assert_grad(stack[0].grads[key], loss, param, key)


def test_winograd_training_gives_the_same_gradients_a_few_images_at_a_time(monkeypatch):
    rng = np.random.default_rng(9)
    stack = conv_layers(WINOGRAD_CASES["resnet-body"], rng, "normal")
    stage = ConvStage(stack, relu=False, pool=1, direct=False)
    x = rng.standard_normal((5, 8, 8, 16)).astype(np.float32)
    dy = rng.standard_normal((5, 8, 8, 16)).astype(np.float32)
    whole = fused_pass(stage, x, dy)
    monkeypatch.setattr(plan, "WINOGRAD_CHUNK_BYTES", 1)  # one image per chunk
    chunked = fused_pass(stage, x, dy)
    assert_close(chunked[0], whole[0], "y")
    assert_close(chunked[1], whole[1], "dx")
    assert_close(chunked[2]["0.weight"], whole[2]["0.weight"], "dw")
    stage.forward(x, training=True)
    assert stage.backward(dy, need_dx=False) is None
    assert_close(stage.conv.grads["weight"], whole[2]["0.weight"], "dw without dx")


def test_adjoint_transforms_are_the_transposes_of_the_forward_ones():
    """<T(a), b> == <a, T*(b)> for the tile, output and kernel transforms and their adjoints."""
    rng = np.random.default_rng(10)
    xp = rng.standard_normal((2, 6, 8, 3))
    v = np.empty((16, 2 * 2 * 3, 3))
    winograd.transform_tiles(3, np.float64)(xp, 2, 3, v)
    dv = rng.standard_normal(v.shape)
    dx = np.empty_like(xp)
    winograd.transform_tile_gradients(3, np.float64)(dv, 2, 3, 0, 0, dx)
    np.testing.assert_allclose(np.sum(v * dv), np.sum(xp * dx), rtol=1e-12)

    m = rng.standard_normal((16, 2 * 2 * 3, 4))
    y = np.empty((2, 4, 6, 4))
    winograd.transform_outputs(4, 1, np.float64)(
        m, np.zeros(4), False, 2, 3, y, np.empty((0, 0, 0, 0), np.uint8)
    )
    dz = rng.standard_normal(y.shape)
    dm = np.empty_like(m)
    winograd.transform_output_gradients(4, np.float64)(dz, 2, 3, dm)
    np.testing.assert_allclose(np.sum(y * dz), np.sum(m * dm), rtol=1e-12)

    weight = rng.standard_normal((3, 3, 2, 5))
    u = np.empty((16, 2, 5))
    winograd.transform_kernels(2, 5, np.float64)(weight, u)
    du = rng.standard_normal(u.shape)
    dweight = np.empty_like(weight)
    winograd.transform_kernel_gradients(2, 5, np.float64)(du, dweight)
    np.testing.assert_allclose(np.sum(u * du), np.sum(weight * dweight), rtol=1e-12)


def test_the_conv_stages_of_a_plan_share_one_set_of_winograd_arrays():
    """Stages run one after another: one buffer for the tiles and products, sized for the largest."""
    from convscope import kernels
    from convscope.models import resnet

    with kernels.using("numba"):
        model = resnet(8, input_shape=(8, 8, 3))
        stages, pending = [], list(model.plan())
        while pending:
            stage = pending.pop()
            stages.append(stage)
            pending += [s for _, branch in getattr(stage, "branches", ()) for s in branch]
        convs = [s for s in stages if isinstance(s, ConvStage) and s.winograd is not None]
        assert len(convs) >= 4 and len({id(s.shared) for s in convs}) == 1
        x = np.random.default_rng(6).random((3, 8, 8, 3), dtype=np.float32)
        expected = model.predict_proba(x)
        with kernels.using("numpy"):
            reference = resnet(8, input_shape=(8, 8, 3))
            reference.load_state_dict(model.state_dict())
            np.testing.assert_allclose(expected, reference.predict_proba(x), rtol=1e-5, atol=1e-6)
