"""Residual blocks (convscope.blocks): shapes, float64 gradient checks on both kernel paths, the
state_dict's torch-like names, the model file, replicas and sharded training, and clear errors."""

import re

import numpy as np
import pytest
from gradient_helpers import assert_grad

import convscope
from convscope import SGD, BatchNorm2D, Conv2D, Dense, GlobalAvgPool2D, ReLU, Residual, Sequential, Softmax
from convscope.blocks import SubsampleZeroPad
from convscope.models import resnet


def basic_block(filters, stride=1, shortcut="A"):
    return Residual(
        [
            Conv2D(filters, 3, stride=stride, padding=1, use_bias=False),
            BatchNorm2D(),
            ReLU(),
            Conv2D(filters, 3, padding=1, use_bias=False),
            BatchNorm2D(),
        ],
        shortcut=shortcut,
    )


def to_float64(model):
    for layer in model.layers:
        for group in (layer.params, layer.buffers):
            for key in group:
                group[key] = group[key].astype(np.float64)
    return model


def tiny_resnet(shortcut, workers=1, seed=0):
    """conv - BN - ReLU, an identity block, a downsampling block, global pooling, dense + softmax."""
    return Sequential(
        [
            Conv2D(3, 3, padding=1, use_bias=False),
            BatchNorm2D(),
            ReLU(),
            basic_block(3, shortcut=shortcut),
            basic_block(5, stride=2, shortcut=shortcut),
            GlobalAvgPool2D(),
            Dense(4),
            Softmax(),
        ],
        input_shape=(6, 6, 2),
        seed=seed,
        workers=workers,
    )


def test_subsample_zero_pad_keeps_every_second_pixel_and_appends_zero_channels():
    x = np.arange(2 * 5 * 4 * 3, dtype=np.float64).reshape(2, 5, 4, 3)
    layer = SubsampleZeroPad(7)
    assert layer.build((5, 4, 3), None) == (3, 2, 7)
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2])
    np.testing.assert_array_equal(y[..., 3:], 0.0)
    dy = np.random.default_rng(0).standard_normal(y.shape)
    dx = layer.backward(dy)
    assert_grad(dx, lambda: float(np.sum(layer.forward(x) * dy)), x, "dx")


@pytest.mark.parametrize("shortcut, stride, filters", [("identity", 1, 3), ("A", 2, 5), ("B", 2, 5)])
def test_residual_block_gradients_float64(shortcut, stride, filters):
    """Every parameter and the input, through body, shortcut, the sum and the block's ReLU."""
    block = basic_block(filters, stride, shortcut)
    block.build((5, 5, 3), np.random.default_rng(0))
    for key in block.params:
        block.params[key] = block.params[key].astype(np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 5, 3))
    y = block.forward(x, training=True)
    assert y.shape == (3, *block.output_shape) and (y >= 0).all()
    dy = rng.standard_normal(y.shape)
    dx = block.backward(dy)
    grads = {k: g.copy() for k, g in block.grads.items()}
    assert set(grads) == set(block.params)
    if shortcut == "B":
        assert {"shortcut.0.weight", "shortcut.1.weight", "shortcut.1.bias"} <= set(grads)

    def loss():
        return float(np.sum(block.forward(x, training=True) * dy))

    assert_grad(dx, loss, x, "dx")
    for key, param in block.params.items():
        assert_grad(grads[key], loss, param, key)


@pytest.mark.usefixtures("kernel_backend")
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet_loss_gradients_float64(shortcut):
    """The whole model on both paths (on numba, the blocks run as ResidualStages)."""
    model = to_float64(tiny_resnet(shortcut))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6, 6, 2))
    y = np.array([0, 3, 1, 2])
    model.loss_and_gradients(x, y)
    grads = {k: g.copy() for k, g in model.gradients().items()}
    assert set(grads) == set(model.parameters())
    for key, param in model.parameters().items():
        assert_grad(grads[key], lambda: model.loss_and_gradients(x, y)[0], param, key)


def test_state_dict_names_are_torch_like_and_the_summary_shows_the_nesting():
    model = tiny_resnet("B")
    keys = set(model.state_dict())
    assert {"3.body.0.weight", "3.body.1.running_var", "4.body.3.weight", "4.shortcut.0.weight"} <= keys
    assert {"4.shortcut.1.weight", "4.shortcut.1.running_mean"} <= keys
    assert not any(key.startswith("3.shortcut") for key in keys)  # same shape: identity
    assert model.layers[3].params["body.0.weight"] is model.layers[3].body[0].params["weight"]
    text = model.summary(print_fn=None)
    assert "residual_1 (Residual)" in text
    assert "  residual_1.shortcut.0 (Conv2D)" in text
    assert re.search(r"\n  residual_1\.body\.0 \(Conv2D\) +\(None, 3, 3, 5\) +135\n", text)
    assert re.search(r"\n  residual_1: .*\n(    residual_1\.\S+.*\n){6}", text)  # the plan: 6 stages inside


def test_model_file_keeps_the_blocks(tmp_path):
    model = tiny_resnet("A")
    model.compile(SGD(0.1, momentum=0.9))
    x = np.random.default_rng(3).random((32, 6, 6, 2), dtype=np.float32)
    model.fit(x, np.arange(32) % 4, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "r.convscope"
    model.save(path)
    loaded = convscope.load(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.get_config()["layers"][4]["config"]["shortcut"] == "A"
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_replicas_share_block_parameters_but_not_gradients():
    model = tiny_resnet("B")
    twin = model.replica()
    assert twin.layers[4].body[0] is not model.layers[4].body[0]
    assert twin.layers[4].params["shortcut.0.weight"] is model.layers[4].params["shortcut.0.weight"]
    twin.loss_and_gradients(np.ones((4, 6, 6, 2)), np.zeros(4, dtype=np.int64))
    assert model.gradients() == {} and set(twin.gradients()) == set(model.parameters())


def test_sharded_step_is_the_sum_of_its_shards_and_moves_every_running_statistic():
    x = np.random.default_rng(4).random((64, 6, 6, 2), dtype=np.float32)
    y = np.arange(64) % 4
    sharded = tiny_resnet("B", workers=2).compile(SGD(0.1))
    single = tiny_resnet("B", workers=1)
    _, _, grads = sharded._parallel().loss_and_gradients(x, y)
    single.loss_and_gradients(x[:32], y[:32], loss_weight=0.5)  # each shard normalised on its own
    first = {k: v.copy() for k, v in single.gradients().items()}
    single.loss_and_gradients(x[32:], y[32:], loss_weight=0.5)
    for key, value in single.gradients().items():
        np.testing.assert_allclose(grads[key], first[key] + value, rtol=1e-5, atol=1e-6)
    before = {k: v.copy() for k, v in sharded.state_dict().items()}
    sharded.train_step(x, y)
    for key in ("3.body.1.running_mean", "4.body.4.running_var", "4.shortcut.1.running_mean"):
        assert not np.array_equal(sharded.state_dict()[key], before[key]), key


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: Residual([Conv2D(4, 3, stride=2, padding=1)]).build((6, 6, 4), np.random.default_rng(0)),
            "identity shortcut",
        ),
        (lambda: Residual([Conv2D(4, 3)], shortcut="C"), "shortcut must be one of"),
        (lambda: Residual([]), "at least one layer"),
        (lambda: Residual([Conv2D(4, 3)], activation="softmax"), "activation must be"),
        (lambda: Residual([Conv2D(2, 3)], shortcut="A").build((6, 6, 4), np.random.default_rng(0)), "fewer"),
        (lambda: Residual(Conv2D(4, 3)), "body must be a list"),
    ],
)
def test_residual_errors_say_what_fits(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_resnet20_has_the_papers_parameter_count():
    """He et al. 2016, Table 6: 0.27M. Option A, no conv biases, affine batch norm."""
    model = resnet(20)
    assert sum(layer.count_params(trainable=True) for layer in model.layers) == 269_722
    assert sum(layer.count_params(trainable=False) for layer in model.layers) == 1_376
    assert [layer.output_shape for layer in model.layers if isinstance(layer, Residual)][2:4] == [
        (32, 32, 16),
        (16, 16, 32),
    ]
    assert isinstance(model.layers[-3], GlobalAvgPool2D) and isinstance(model.layers[-2], Dense)
    assert len([layer for layer in model.layers if isinstance(layer, Residual)]) == 9
    assert sum(layer.count_params(trainable=True) for layer in resnet(20, shortcut="B").layers) == 272_474


@pytest.mark.parametrize("depth", [7, 21, 0, True])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n"):
        resnet(depth)


def test_a_resnet_run_resumed_from_its_checkpoint_ends_bit_identical(tmp_path):
    """Stop after epoch 1 of 2 (the checkpoint holds every block's weights, running statistics and
    momentum buffers), resume in a fresh model: the same weights as the run that never stopped."""
    from convscope.data.augment import Augmentation

    x = np.random.default_rng(7).random((64, 6, 6, 2), dtype=np.float32)
    y = np.arange(64) % 4
    options = {"batch_size": 32, "verbose": 0, "augment": Augmentation(flip=True, crop_padding=1)}
    whole = tiny_resnet("B", workers=2).compile(SGD(0.1, momentum=0.9, weight_decay=1e-4))
    whole.fit(x, y, epochs=2, **options)  # a constant lr: the 1-epoch run's schedule is the same
    path = tmp_path / "r.ckpt"
    first = tiny_resnet("B", workers=2).compile(SGD(0.1, momentum=0.9, weight_decay=1e-4))
    first.fit(x, y, epochs=1, checkpoint=path, **options)
    resumed = tiny_resnet("B", workers=2).compile(SGD(0.1, momentum=0.9, weight_decay=1e-4))
    resumed.fit(x, y, epochs=2, resume=path, **options)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
