"""A small trained seed CNN shared by the explain tests (trained once per session, in about a second)."""

import pytest

from convscope.data import load
from convscope.models import seed_cnn

TRAIN_IMAGES = 300


@pytest.fixture(scope="session")
def digits():
    return load("digits", split="train"), load("digits", split="test")


@pytest.fixture(scope="session")
def trained(digits):
    """(model, history): the seed CNN after 2 epochs on 300 bundled digits, validated on 100 test ones."""
    train, test = digits
    model = seed_cnn((8, 8, 1), 10, seed=0, class_names=train.class_names)
    history = model.fit(
        train.images[:TRAIN_IMAGES],
        train.labels[:TRAIN_IMAGES],
        epochs=2,
        batch_size=32,
        seed=0,
        verbose=0,
        validation_data=(test.images[:100], test.labels[:100]),
    )
    return model, history


@pytest.fixture(scope="session")
def model_file(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "digits.convscope"
    trained[0].save(path)
    return path
