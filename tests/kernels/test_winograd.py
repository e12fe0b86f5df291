"""Winograd F(2x2, 3x3) in inference (convscope.kernels.winograd) against the reference ops: the
transforms, whole conv stages (pooling, padding, odd sizes, many channels, float64), chunking, and
the cases it leaves to im2col."""

import numpy as np
import pytest
from test_fused_stages import assert_close, conv_layers

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


def test_training_and_recorded_inference_stay_on_im2col():
    """Backward needs the im2col pass's windows; Winograd only ever runs in plain inference."""
    rng = np.random.default_rng(5)
    case = WINOGRAD_CASES["seed-second-layer"]
    stack = conv_layers(case, rng, "normal")
    stage = ConvStage(stack, relu=True, pool=2, direct=False)
    x = rng.standard_normal((2, 14, 14, 16)).astype(np.float32)
    stage.forward(x, record=True)
    assert stage._cache is not None  # what backward needs was kept
    assert "winograd_tiles" not in stage.scratch._training


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
