"""The ready-made architectures (small_vgg) and what they brought: buffers, batch normalisation in
training steps (one thread and sharded), saving, and `convscope train --model`."""

import numpy as np
import pytest

import convscope
from convscope import SGD, BatchNorm2D, Conv2D, Dense, GlobalAvgPool2D, ReLU, Sequential, ops
from convscope.cli import main
from convscope.models import MODELS, seed_cnn, small_vgg


def batch(n, shape=(12, 12, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, classes, n)


def test_small_vgg_layers_shapes_and_parameter_counts():
    model = small_vgg((32, 32, 3), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    block = ["Conv2D", "BatchNorm2D", "ReLU"] * 2 + ["MaxPool2D"]
    assert kinds == block * 3 + ["GlobalAvgPool2D", "Dropout", "Dense", "Softmax"]
    assert [model.layers[i].output_shape for i in (0, 7, 14, 20, 21)] == [
        (32, 32, 32),
        (16, 16, 64),
        (8, 8, 128),
        (4, 4, 128),
        (128,),
    ]
    assert not model.layers[0].use_bias and model.layers[-3].rate == 0.3
    trainable = sum(layer.count_params(trainable=True) for layer in model.layers)
    assert trainable == 288_746 and model.count_params() == 288_746 + 896
    text = model.summary(print_fn=None)
    assert "Trainable params: 288,746" in text and "Non-trainable params: 896" in text
    assert small_vgg((28, 28, 1), 10, width=8).layers[20].output_shape == (3, 3, 32)
    assert MODELS["seed"] is seed_cnn and MODELS["small-vgg"] is small_vgg
    assert set(MODELS) == {"seed", "small-vgg", "resnet20", "resnet32", "resnet44", "resnet56"}


@pytest.mark.parametrize("width", [0, 2.5, True])
def test_small_vgg_refuses_a_bad_width(width):
    with pytest.raises(ValueError, match=f"small_vgg: width must be a positive int, got {width!r}"):
        small_vgg(width=width)


def test_batchnorm2d_arguments_are_checked():
    with pytest.raises(ValueError, match=r"BatchNorm2D: momentum must be a number in \[0, 1\], got 1.5"):
        BatchNorm2D(momentum=1.5)
    with pytest.raises(ValueError, match="BatchNorm2D: eps must be a number > 0, got 0"):
        BatchNorm2D(eps=0)
    with pytest.raises(ValueError, match=r"layer 1 \(batchnorm2d\): BatchNorm2D needs \(H, W, C\) inputs"):
        Sequential([GlobalAvgPool2D(), BatchNorm2D(), Dense(2)], input_shape=(4, 4, 2))


def test_buffers_are_in_the_state_dict_after_the_parameters_but_not_trained():
    model = small_vgg((12, 12, 3), 4, width=4)
    keys = list(model.state_dict())
    assert keys[:5] == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    assert set(keys) - set(model.parameters()) == {
        f"{i}.{name}" for i in (1, 4, 8, 11, 15, 18) for name in ("running_mean", "running_var")
    }
    state = model.state_dict()
    np.testing.assert_array_equal(state["1.running_mean"], 0.0)
    np.testing.assert_array_equal(state["1.running_var"], 1.0)
    np.testing.assert_array_equal(state["1.weight"], 1.0)
    np.testing.assert_array_equal(state["1.bias"], 0.0)
    assert model.replica().layers[1].buffers is model.layers[1].buffers


def test_a_training_step_moves_the_running_statistics_once():
    model = small_vgg((12, 12, 3), 4, width=4).compile(SGD(0.1))
    model.workers = 1
    x, y = batch(16)
    seen = model.layers[0].infer(x)  # what the first BatchNorm2D (layer 1) normalises in the step
    rows = seen.reshape(-1, 4).astype(np.float64)
    model.train_step(x, y, rng=np.random.default_rng(0))
    bn = model.layers[1].buffers
    np.testing.assert_allclose(bn["running_mean"], 0.1 * rows.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn["running_var"], 0.9 + 0.1 * rows.var(axis=0, ddof=1), rtol=1e-5)
    # inference uses them, not the batch's statistics
    weight, bias = model.layers[1].params["weight"], model.layers[1].params["bias"]
    expected = ops.batchnorm2d(seen, bn["running_mean"], bn["running_var"], weight, bias)
    np.testing.assert_allclose(model.layers[1].forward(seen), expected, rtol=1e-6)


def test_sharded_steps_normalise_per_shard_and_update_the_running_statistics_from_the_whole_batch():
    x, y = batch(96)
    models = {}
    for workers in (1, 3, 3):
        model = Sequential(
            [Conv2D(4, 3, use_bias=False), BatchNorm2D(), ReLU(), GlobalAvgPool2D(), Dense(4)],
            input_shape=(12, 12, 3),
            seed=1,
            workers=workers,
        ).compile(SGD(0.1))
        model.train_step(x, y)
        models.setdefault(workers, []).append(model)
    single, (sharded, again) = models[1][0], models[3]
    # the first step's statistics come from the same (initial) conv: equal to rounding
    for key in ("1.running_mean", "1.running_var"):
        np.testing.assert_allclose(sharded.state_dict()[key], single.state_dict()[key], rtol=1e-5, atol=1e-7)
    # each shard normalised with its own statistics, so the gradients (and weights) differ a little...
    assert not np.allclose(sharded.state_dict()["0.weight"], single.state_dict()["0.weight"], rtol=1e-6)
    # ... but the same number of workers gives bit-identical runs
    for key, value in sharded.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)


def test_saved_small_vgg_keeps_its_running_statistics(tmp_path):
    model = small_vgg((12, 12, 3), 4, width=4, class_names=list("abcd")).compile(SGD(0.05, momentum=0.9))
    x, y = batch(32)
    for _ in range(2):
        model.train_step(x, y, rng=np.random.default_rng(0))
    assert np.abs(model.state_dict()["4.running_mean"]).max() > 0
    model.save(tmp_path / "vgg.convscope")
    loaded = convscope.load(tmp_path / "vgg.convscope")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.get_config() == model.get_config()


def test_fit_trains_small_vgg():
    x, y = batch(64, seed=3)
    model = small_vgg((12, 12, 3), 4, width=4)
    history = model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    assert history["loss"][-1] < history["loss"][0]


def test_train_command_takes_the_model(tmp_path, capsys):
    out = tmp_path / "v.convscope"
    args = ["train", "--model", "small-vgg", "--epochs", "1", "--batch-size", "128", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert 'Model: "small_vgg"' in printed and "batchnorm2d (BatchNorm2D)" in printed
    assert [type(layer).__name__ for layer in convscope.load(out).layers][:2] == ["Conv2D", "BatchNorm2D"]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--model {seed,small-vgg,resnet20,resnet32,resnet44,resnet56}" in help_text
    assert "--augment --epochs 60 and evaluate --tta" in help_text
