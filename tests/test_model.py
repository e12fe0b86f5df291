import json

import numpy as np
import pytest

from convscope import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential, Softmax
from convscope.models import seed_cnn


def test_seed_cnn_has_the_articles_parameter_count():
    model = seed_cnn((28, 28, 1), 10)
    assert model.count_params() == 206_922
    assert [layer.output_shape for layer in model.layers[:7]] == [
        (28, 28, 16),
        (28, 28, 16),
        (14, 14, 16),
        (14, 14, 32),
        (14, 14, 32),
        (7, 7, 32),
        (1568,),
    ]
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
        "7.weight",
        "7.bias",
        "9.weight",
        "9.bias",
    ]
    assert model.state_dict()["0.weight"].shape == (3, 3, 1, 16)
    assert model.state_dict()["7.weight"].shape == (1568, 128)


def test_summary_is_a_keras_style_table():
    text = seed_cnn((28, 28, 1), 10).summary(print_fn=None)
    assert "conv2d_1 (Conv2D)" in text and "(None, 7, 7, 32)" in text
    assert "Total params: 206,922" in text


def test_initialisation_is_seeded_and_like_pytorch():
    a, b, c = seed_cnn(seed=1), seed_cnn(seed=1), seed_cnn(seed=2)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
        assert value.dtype == np.float32
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])
    weights = a.state_dict()["7.weight"]
    bound = 1 / np.sqrt(1568)
    assert weights.min() >= -bound and weights.max() <= bound and weights.std() > bound / 2


def test_lazy_build_from_first_input():
    model = Sequential([Conv2D(4, 3), ReLU(), Flatten(), Dense(3)])
    assert not model.built
    probabilities = model.predict_proba(np.zeros((2, 5, 5, 2), dtype=np.float32))
    assert model.input_shape == (5, 5, 2) and probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_load_state_dict_round_trip_and_errors():
    source, target = seed_cnn(seed=1), seed_cnn(seed=2)
    target.load_state_dict(source.state_dict())
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(source.predict_proba(x), target.predict_proba(x))
    state = dict(source.state_dict())
    del state["9.bias"]
    with pytest.raises(ValueError, match=r"missing \['9.bias'\]"):
        target.load_state_dict(state)
    state["9.bias"] = np.zeros(11, dtype=np.float32)
    with pytest.raises(ValueError, match=r"state_dict\['9.bias'\] has shape \(11,\), expected \(10,\)"):
        target.load_state_dict(state)


def test_softmax_activation_equals_softmax_layer():
    with_layer = Sequential([Flatten(), Dense(4), Softmax()], input_shape=(2, 2, 1), seed=3)
    with_activation = Sequential([Flatten(), Dense(4, activation="softmax")], input_shape=(2, 2, 1), seed=3)
    x = np.random.default_rng(0).random((6, 2, 2, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(with_layer(x), with_activation(x), rtol=1e-6)
    loss_a, _ = with_layer.loss_and_gradients(x, y)
    loss_b, _ = with_activation.loss_and_gradients(x, y)
    assert loss_a == pytest.approx(loss_b)
    np.testing.assert_allclose(with_layer.gradients()["1.weight"], with_activation.gradients()["1.weight"])


@pytest.mark.parametrize(
    "layer, message",
    [
        (lambda: Conv2D(8, 3, stride=2, padding="same"), "padding='same' needs stride 1, got stride=2"),
        (lambda: Conv2D(0, 3), "filters must be a positive int, got 0"),
        (lambda: Conv2D(8, 3, padding="full"), "padding must be 'same', 'valid' or an int"),
        (lambda: Dense(10, activation="tanh"), "activation must be one of"),
        (lambda: Dropout(1.0), r"rate must be a number in \[0, 1\)"),
        (lambda: Conv2D(6, 3, groups=4), r"filters must be a multiple of groups .* got filters=6, groups=4"),
        (lambda: Conv2D(8, 3, dilation=0), "dilation must be a positive int or a pair of them, got 0"),
        (
            lambda: Conv2D(8, 3, stride=(1, 2), padding="same"),
            r"padding='same' needs stride 1, got stride=\(1, 2\)",
        ),
        (lambda: Conv2D(8, 3, padding=((1, 2), (0,))), r"padding must be .*got \(\(1, 2\), \(0,\)\)"),
        (
            lambda: MaxPool2D(3, padding=2),
            r"MaxPool2D: padding must be at most half the window .* 2\+2 .* of 3",
        ),
        (lambda: MaxPool2D(2, padding=((0, 1), (0, 1))), r"MaxPool2D: padding must be an int >= 0 or a pair"),
        (lambda: MaxPool2D(2, ceil_mode="yes"), "MaxPool2D: ceil_mode must be True or False"),
        (lambda: AvgPool2D(2, count_include_pad=None), "AvgPool2D: count_include_pad must be True or False"),
        (
            lambda: AvgPool2D((2, 0)),
            r"AvgPool2D: pool_size must be a positive int or a pair of them, got \(2, 0\)",
        ),
    ],
)
def test_bad_layer_arguments(layer, message):
    with pytest.raises(ValueError, match=message):
        layer()


def test_build_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"layer 0 \(conv2d\): Conv2D: kernel of size 5 does not fit"):
        Sequential([Conv2D(2, 5, padding="valid"), Flatten(), Dense(2)], input_shape=(3, 3, 1))
    with pytest.raises(ValueError, match="put a Flatten"):
        Sequential([Conv2D(2, 3), Dense(2)], input_shape=(4, 4, 1))
    with pytest.raises(
        ValueError, match="Conv2D: groups=2 needs input channels divisible by 2, got 3 channels"
    ):
        Sequential([Conv2D(4, 3, groups=2)], input_shape=(4, 4, 3))
    with pytest.raises(ValueError, match=r"Conv2D: kernel of size 3 \(dilation 3: spans 7\) does not fit"):
        Sequential([Conv2D(2, 3, padding="valid", dilation=3)], input_shape=(6, 6, 1))


def test_new_options_keep_old_configs_and_round_trip_through_the_config():
    """A layer without the new options writes the config of earlier versions (old files still load
    and read the same); every new option survives get_config -> layer_from_config."""
    from convscope.layers import layer_from_config

    plain = {"filters": 8, "kernel_size": [3, 3], "stride": 1, "padding": "same"}
    assert Conv2D(8, 3).get_config() == {**plain, "activation": None, "use_bias": True}
    assert MaxPool2D(2).get_config() == {"pool_size": [2, 2], "stride": 2}
    old = {"type": "MaxPool2D", "config": {"pool_size": [3, 3], "stride": 2}}
    assert layer_from_config(old).stride == (2, 2)
    for layer in (
        Conv2D(6, (3, 5), stride=(2, 1), padding=((0, 1), (2, 1)), dilation=(1, 2), groups=3, use_bias=False),
        Conv2D(4, 3, padding=(1, 0)),
        MaxPool2D((3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True),
        AvgPool2D(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    ):
        entry = {"type": type(layer).__name__, "config": layer.get_config()}
        again = layer_from_config(json.loads(json.dumps(entry)))
        assert again.get_config() == layer.get_config()
        for attribute in ("kernel_size", "pool_size", "stride", "padding", "dilation", "groups", "ceil_mode"):
            assert getattr(again, attribute, None) == getattr(layer, attribute, None), attribute


def test_input_validation_names_expected_and_got():
    model = seed_cnn((8, 8, 1), 10)
    with pytest.raises(ValueError, match=r"must have shape \(N, 8, 8, 1\), got shape \(2, 8, 8, 3\)"):
        model.predict(np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"add a channel axis"):
        model.predict(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((1, 8, 8, 1), np.nan))
    with pytest.raises(ValueError, match=r"class ids in \[0, 10\), got values from 0 to 12"):
        model.evaluate(np.zeros((2, 8, 8, 1)), np.array([0, 12]))


def test_dropout_is_identity_at_inference_and_seeded_in_training():
    model = Sequential([Flatten(), Dropout(0.5), Dense(2)], input_shape=(4, 4, 1))
    x = np.ones((3, 4, 4, 1), dtype=np.float32)
    np.testing.assert_array_equal(model(x), model(x))
    a = model.forward_logits(x, training=True, rng=np.random.default_rng(5))
    b = model.forward_logits(x, training=True, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, model(x))


def test_inference_path_gives_the_training_path_numbers():
    model = seed_cnn((9, 9, 3), 10, seed=2)
    x = np.random.default_rng(0).integers(0, 3, (5, 9, 9, 3)).astype(np.float32)  # many ties
    h_train = h_infer = x
    for layer in model.layers:
        h_train, h_infer = layer.forward(h_train, training=True), layer.infer(h_infer)
        np.testing.assert_array_equal(h_infer, h_train)


def test_tta_averages_each_image_with_its_mirror():
    model = seed_cnn((8, 8, 1), num_classes=3, seed=1)
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1])
    expected = (model.predict_proba(x) + model.predict_proba(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(model.predict_proba(x, tta=True), expected, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(x, tta=True), expected.argmax(axis=1))
    loss, accuracy = model.evaluate(x, y, tta=True)
    np.testing.assert_allclose(loss, -np.log(expected[np.arange(5), y]).mean(), rtol=1e-5)
    assert accuracy == (expected.argmax(axis=1) == y).mean()


def test_label_smoothing_changes_the_training_loss_only():
    model = seed_cnn((8, 8, 1), num_classes=3, seed=1)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 0])
    plain = model.loss_and_gradients(x, y)[0]
    model.compile("adam", label_smoothing=0.3)
    assert model.loss_and_gradients(x, y)[0] != pytest.approx(plain)
    assert model.evaluate(x, y)[0] == pytest.approx(plain)
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing"):
            model.compile("adam", label_smoothing=bad)
