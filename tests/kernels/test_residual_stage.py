"""Residual blocks on the fast path: the plan runs a block's body and shortcut on fused stages of their
own (and the option-A shortcut on its reference op, visibly), and a ResNet computes the same numbers
on both paths: logits, loss, every gradient, the running statistics, inference."""

import numpy as np
import pytest

from convscope import kernels
from convscope.kernels.plan import ResidualStage, describe
from convscope.models import resnet

pytest.importorskip("numba")


def model_on(backend, shortcut, seed=3):
    with kernels.using(backend):
        model = resnet(8, (8, 8, 3), 6, seed=seed, shortcut=shortcut, width=4)
        model.workers = 1
        model.plan()
    return model


def test_plan_runs_the_blocks_insides_on_fused_stages():
    model = model_on("numba", "A")
    stages = model.plan()
    assert [type(stage).__name__ for stage in stages][:3] == ["ConvStage", "BatchNormStage", "ResidualStage"]
    block = stages[3]
    assert isinstance(block, ResidualStage) and block.kernel.endswith("add + ReLU")
    lines = describe(stages)
    assert "residual_1: residual block: body + shortcut, then add + ReLU" in lines
    assert "  residual_1.body.0: direct conv" in lines  # 4 input channels: direct loops
    assert "  residual_1.body.1 + residual_1.body.2: batch norm + ReLU" in lines
    assert "  residual_1.body.3: Winograd F(2x2, 3x3) + matmul" in lines
    assert "  residual_1.body.4: batch norm" in lines
    assert "  residual_1.shortcut.0: reference" in lines  # SubsampleZeroPad: no fused kernel
    assert "  shortcut: identity" in lines  # the first block keeps the shape
    assert "  residual_2.shortcut.0: im2col + matmul" in describe(model_on("numba", "B").plan())
    with kernels.using("numpy"):  # the reference path runs each block on its own reference ops
        assert all(line.endswith(": reference") for line in describe(model_on("numpy", "A").plan()))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_fast_path_matches_the_reference_in_training_and_inference(shortcut):
    fast, reference = model_on("numba", shortcut), model_on("numpy", shortcut)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 6, 12)
    with kernels.using("numba"):
        loss_fast, logits_fast = fast.loss_and_gradients(x, y)
        grads_fast = {k: v.copy() for k, v in fast.gradients().items()}
        stats_fast = fast.batch_statistics()
    with kernels.using("numpy"):
        loss_ref, logits_ref = reference.loss_and_gradients(x, y)
        grads_ref = reference.gradients()
        stats_ref = reference.batch_statistics()
    assert loss_fast == pytest.approx(loss_ref, rel=1e-5)
    np.testing.assert_allclose(logits_fast, logits_ref, rtol=1e-5, atol=1e-5)
    assert set(grads_fast) == set(grads_ref) == set(fast.parameters())
    for key, value in grads_ref.items():
        scale = max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(grads_fast[key], value, rtol=1e-4, atol=1e-5 * scale, err_msg=key)
    assert stats_fast.keys() == stats_ref.keys()
    for index, block_stats in stats_ref.items():
        ours = stats_fast[index]
        pairs = block_stats.items() if isinstance(block_stats, dict) else [(None, block_stats)]
        for path, statistics in pairs:
            mine = ours[path] if path is not None else ours
            np.testing.assert_allclose(mine.mean, statistics.mean, rtol=1e-5, atol=1e-6)
    for model in (fast, reference):
        for key, value in model.state_dict().items():
            if "running" in key:
                value[...] = np.linspace(0.5, 1.5, value.size).reshape(value.shape)
    with kernels.using("numba"):
        inferred_fast = fast.predict_proba(x)
    with kernels.using("numpy"):
        inferred_ref = reference.predict_proba(x)
    np.testing.assert_allclose(inferred_fast, inferred_ref, rtol=1e-5, atol=1e-6)


def test_training_on_the_fast_path_is_bit_identical_run_to_run():
    from convscope import SGD

    rng = np.random.default_rng(6)
    x = rng.random((64, 8, 8, 3), dtype=np.float32)
    y = rng.integers(0, 6, 64)
    runs = []
    for _ in range(2):
        with kernels.using("numba"):
            model = resnet(8, (8, 8, 3), 6, seed=4, width=4).compile(SGD(0.1, momentum=0.9))
            model.workers = 2
            model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        runs.append(model.state_dict())
    for key, value in runs[0].items():
        np.testing.assert_array_equal(runs[1][key], value, err_msg=key)
