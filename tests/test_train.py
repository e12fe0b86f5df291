import numpy as np
import pytest

from convscope import SGD, Adam
from convscope.data import load
from convscope.models import seed_cnn


@pytest.fixture(scope="module")
def digits():
    return load("digits", split="train"), load("digits", split="test")


def test_seed_cnn_learns_the_bundled_digits(digits):
    train, test = digits
    model = seed_cnn((8, 8, 1), 10, seed=0).compile(SGD(lr=0.05, momentum=0.9))
    history = model.fit(
        train.images,
        train.labels,
        epochs=30,
        batch_size=32,
        seed=0,
        verbose=0,
        validation_data=(test.images, test.labels),
    )
    assert history.epochs == 30 and len(history["val_accuracy"]) == 30
    assert history["loss"][-1] < history["loss"][0] / 10
    _, accuracy = model.evaluate(test.images, test.labels)
    assert accuracy >= 0.95
    assert history["val_accuracy"][-1] == pytest.approx(accuracy)


def test_same_seed_gives_bit_identical_weights(digits):
    train, _ = digits
    runs = []
    for _ in range(2):
        model = seed_cnn((8, 8, 1), 10, seed=4).compile(Adam(1e-3))
        model.fit(train.images[:256], train.labels[:256], epochs=2, batch_size=32, seed=7, verbose=0)
        runs.append(model.state_dict())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])


def test_fit_without_compile_uses_adam(digits):
    train, _ = digits
    model = seed_cnn((8, 8, 1), 10)
    model.fit(train.images[:64], train.labels[:64], epochs=1, verbose=0)
    assert isinstance(model.optimizer, Adam)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
    ],
)
def test_fit_argument_errors(digits, kwargs, message):
    train, _ = digits
    with pytest.raises(ValueError, match=message):
        seed_cnn((8, 8, 1), 10).fit(train.images[:8], train.labels[:8], verbose=0, **kwargs)


def test_fit_rejects_mismatched_labels(digits):
    train, _ = digits
    with pytest.raises(ValueError, match=r"y must have shape \(8,\)"):
        seed_cnn((8, 8, 1), 10).fit(train.images[:8], train.labels[:7], verbose=0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SGD(lr=0), "lr must be a number > 0"),
        (lambda: SGD(momentum=1.5), r"momentum must be a number \[0.0, 1.0\)"),
        (lambda: SGD(nesterov=True), "nesterov=True needs momentum > 0"),
        (lambda: Adam(betas=(0.9,)), "betas must be a pair"),
    ],
)
def test_optimiser_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
