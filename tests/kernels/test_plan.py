"""The plan (which kernel runs each layer), the backend switch, the fused optimiser updates, and the
fast path at the scale of whole models: the same numbers as the reference, bit-identical runs."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from convscope import kernels, layers
from convscope.models import seed_cnn, small_vgg
from convscope.optim import SGD, Adam

pytest.importorskip("numba")


def kernel_names(model):
    return [(tuple(layer.name for layer in stage.layers), stage.kernel) for stage in model.plan()]


def test_seed_cnn_plan_fuses_conv_relu_pool_and_dense_relu():
    with kernels.using("numba"):
        model = seed_cnn((28, 28, 1), 10)
        assert kernel_names(model) == [
            (("conv2d", "relu", "maxpool2d"), "direct conv + bias + ReLU + 2x2 max pool"),
            (
                ("conv2d_1", "relu_1", "maxpool2d_1"),
                "Winograd F(2x2, 3x3) + matmul + bias + ReLU + 2x2 max pool",
            ),
            (("flatten",), "reference"),
            (("dense", "relu_2"), "matmul + bias + ReLU"),
            (("dense_1",), "matmul + bias"),  # logits: the softmax is the loss's
        ]
        text = model.summary(print_fn=None)
    assert "Kernels (numba):" in text
    assert "  conv2d + relu + maxpool2d: direct conv + bias + ReLU + 2x2 max pool" in text


def test_small_vgg_plan_fuses_batch_norm_relu_pool():
    with kernels.using("numba"):
        names = kernel_names(small_vgg((32, 32, 3), 10))
    assert names[:4] == [
        (("conv2d",), "direct conv"),
        (("batchnorm2d", "relu"), "batch norm + ReLU"),
        (("conv2d_1",), "Winograd F(2x2, 3x3) + matmul"),
        (("batchnorm2d_1", "relu_1", "maxpool2d"), "batch norm + ReLU + 2x2 max pool"),
    ]
    assert names[-3:] == [
        (("globalavgpool2d",), "reference"),
        (("dropout",), "reference"),
        (("dense",), "matmul + bias"),
    ]


def test_numpy_backend_runs_every_layer_on_its_reference_op():
    with kernels.using("numpy"):
        model = seed_cnn((28, 28, 1), 10)
        assert all(kernel == "reference" for _, kernel in kernel_names(model))
        assert "Kernels (numpy):" in model.summary(print_fn=None)


def test_settings_without_a_fast_kernel_fall_back_to_the_reference_visibly():
    model_layers = [
        layers.Conv2D(4, 3, dilation=2),  # dilation: no fused kernel
        layers.ReLU(),
        layers.MaxPool2D(3, stride=2),  # not 2x2/2: not absorbed
        layers.Conv2D(4, 3, activation="relu"),
        layers.AvgPool2D(2),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ]
    with kernels.using("numba"):
        from convscope.model import Sequential

        model = Sequential(model_layers, input_shape=(16, 16, 2))
        assert kernel_names(model) == [
            (("conv2d",), "reference"),
            (("relu",), "reference"),
            (("maxpool2d",), "reference"),
            (("conv2d_1",), "direct conv + bias + ReLU"),
            (("avgpool2d",), "reference"),
            (("flatten",), "reference"),
            (("dense",), "matmul + bias"),
        ]
        x = np.random.default_rng(0).random((3, 16, 16, 2), dtype=np.float32)
        fast = model.predict_proba(x)
    with kernels.using("numpy"):
        np.testing.assert_allclose(model.predict_proba(x), fast, rtol=1e-5, atol=1e-6)


def test_the_plan_follows_the_backend_switch():
    model = seed_cnn((8, 8, 1), 10)
    with kernels.using("numpy"):
        assert model.plan()[0].kernel == "reference"
    with kernels.using("numba"):
        assert model.plan()[0].kernel.startswith("direct conv")


def test_set_backend_checks_its_argument():
    with pytest.raises(ValueError, match="kernel backend must be one of numba, numpy, got 'cuda'"):
        kernels.set_backend("cuda")


def _run_python(code, **environment):
    env = {**os.environ, **environment}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_environment_variable_chooses_the_backend():
    code = "from convscope import kernels; print(kernels.backend())"
    assert _run_python(code, CONVSCOPE_KERNELS="numpy").stdout.strip() == "numpy"
    assert _run_python(code, CONVSCOPE_KERNELS="NumBa").stdout.strip() == "numba"
    bad = _run_python(code, CONVSCOPE_KERNELS="fast")
    assert bad.returncode != 0 and "CONVSCOPE_KERNELS='fast': must be one of numba, numpy" in bad.stderr


def test_import_does_not_load_numba_and_jit_code_is_cached_where_numba_cache_dir_says(tmp_path):
    code = (
        "import sys, convscope; assert 'numba' not in sys.modules, 'numba imported by import convscope'\n"
        "import numpy as np; from convscope.models import seed_cnn\n"
        "seed_cnn((8, 8, 1), 10).predict(np.zeros((2, 8, 8, 1), np.float32)); print('ok')"
    )
    done = _run_python(
        code, NUMBA_CACHE_DIR=str(tmp_path), CONVSCOPE_KERNELS="numba", CONVSCOPE_KERNEL_LIBRARY="none"
    )
    assert done.stdout.strip() == "ok", done.stderr
    cached = [name for _, _, files in os.walk(tmp_path) for name in files]
    assert any(name.endswith(".nbi") for name in cached) and any(name.endswith(".nbc") for name in cached)


OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1),
    "sgd-momentum-decay": lambda: SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd-nesterov": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: Adam(lr=1e-2),
    "adam-decay": lambda: Adam(lr=1e-2, weight_decay=1e-2, betas=(0.8, 0.95)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fused_optimizer_updates_match_the_reference(name):
    rng = np.random.default_rng(5)
    start = {
        "a": rng.standard_normal((4, 5)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
    }
    steps = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in start.items()} for _ in range(4)]
    results = {}
    for backend in ("numpy", "numba"):
        params = {k: v.copy() for k, v in start.items()}
        optimizer = OPTIMIZERS[name]()
        with kernels.using(backend):
            for grads in steps:
                optimizer.step(params, grads)
        results[backend] = (params, optimizer.state_dict()["state"])
    for key in start:
        np.testing.assert_allclose(results["numba"][0][key], results["numpy"][0][key], rtol=1e-6, atol=1e-7)
        for buffer, value in results["numpy"][1].get(key, {}).items():
            np.testing.assert_allclose(results["numba"][1][key][buffer], value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "build, shape", [(seed_cnn, (28, 28, 1)), (seed_cnn, (32, 32, 3)), (small_vgg, (32, 32, 3))]
)
def test_whole_model_loss_and_gradients_match_between_paths(build, shape):
    rng = np.random.default_rng(6)
    x = rng.random((8, *shape), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    results = {}
    for backend in ("numpy", "numba"):
        with kernels.using(backend):
            model = build(shape, 10, seed=0)
            model.workers = 1
            loss, logits = model.loss_and_gradients(x, y, rng=np.random.default_rng(0))
            results[backend] = (loss, logits, {k: v.copy() for k, v in model.gradients().items()})
    assert results["numba"][0] == pytest.approx(results["numpy"][0], rel=1e-6)
    np.testing.assert_allclose(results["numba"][1], results["numpy"][1], rtol=1e-5, atol=1e-6)
    for name, grad in results["numpy"][2].items():
        scale = max(1e-3, float(np.abs(grad).max()))
        np.testing.assert_allclose(
            results["numba"][2][name], grad, rtol=1e-4, atol=1e-5 * scale, err_msg=name
        )


def _fit_weights(seed):
    rng = np.random.default_rng(7)
    x = rng.random((96, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 3, 96)
    model = seed_cnn((12, 12, 1), 3, seed=seed)
    model.workers = 2
    model.compile(Adam(3e-3))
    model.fit(x, y, epochs=2, batch_size=32, seed=seed, verbose=0)
    return model.state_dict()


def test_training_on_the_fast_path_is_bit_identical_run_to_run():
    with kernels.using("numba"):
        first, second = _fit_weights(0), _fit_weights(0)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_concurrent_predictions_on_one_model_equal_serial_ones():
    rng = np.random.default_rng(8)
    batches = [rng.random((40, 28, 28, 1), dtype=np.float32) for _ in range(6)]
    with kernels.using("numba"):
        model = seed_cnn((28, 28, 1), 10)
        expected = [model.predict_proba(b) for b in batches]
        results = [None] * len(batches)

        def predict(index):
            for _ in range(5):
                results[index] = model.predict_proba(batches[index])

        threads = [threading.Thread(target=predict, args=(i,)) for i in range(len(batches))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for got, want in zip(results, expected, strict=True):  # BLAS's thread count may differ: rounding
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
