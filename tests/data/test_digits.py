import numpy as np
import pytest

from convscope.data import load


def test_digits_split_is_stratified_and_disjoint():
    train, test = load("digits", split="train"), load("digits", split="test")
    assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
    assert train.images.dtype == np.float32 and 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert np.bincount(test.labels).min() >= 35
    flat_train = {row.tobytes() for row in train.images.reshape(len(train.images), -1)}
    overlap = sum(row.tobytes() in flat_train for row in test.images.reshape(len(test.images), -1))
    assert overlap < 5  # the raw data has a few exact duplicates, nothing more


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown data set 'cifar100'"):
        load("cifar100")
    with pytest.raises(ValueError, match="split must be"):
        load("digits", split="validation")
    with pytest.raises(ValueError, match="needs data_dir"):
        load("mnist")
