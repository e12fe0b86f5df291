"""The public API refuses wrong inputs with a ValueError naming what was expected and what was given."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convscope.model import check_images, check_labels
from convscope.models import seed_cnn


@pytest.fixture(scope="module")
def model():
    return seed_cnn((8, 8, 1), 10)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 8, 8)), r"must have shape \(N, 8, 8, 1\), got shape \(2, 8, 8\) \(add a channel axis"),
        (
            np.zeros((2, 8, 8, 3)),
            r"got shape \(2, 8, 8, 3\) \(the model takes 1-channel images, these have 3\)",
        ),
        (np.zeros((2, 9, 8, 1)), r"must have shape \(N, 8, 8, 1\), got shape \(2, 9, 8, 1\)$"),
        (np.zeros((2, 8, 8, 1), dtype=complex), "must be a real numeric array, got dtype complex128"),
        (np.full((2, 8, 8, 1), "a"), "must be a real numeric array, got dtype <U1"),
        ([[1, 2], [3]], "must be an .* array, got list"),
        (None, "must be a real numeric array, got dtype object"),
        (
            np.where(np.arange(3 * 64).reshape(3, 8, 8, 1) == 70, np.nan, 0.0),
            "NaN or infinite .* first in image 1",
        ),
        (np.full((1, 8, 8, 1), 1e300), "too big for float32"),
    ],
)
def test_bad_images(model, x, message):
    for call in (model.predict, model.predict_proba, lambda x: model.evaluate(x, np.zeros(2, dtype=int))):
        with pytest.raises(ValueError, match=message):
            call(x)


@pytest.mark.parametrize(
    "y, message",
    [
        (np.array([0, 10]), r"class ids in \[0, 10\), got values from 0 to 10"),
        (np.array([-1, 3]), r"got values from -1 to 3"),
        (np.array([0.0, 12.0]), r"got values from 0.0 to 12.0"),
        (np.array([1e20, 0.0]), r"got values from 0.0 to 1e\+20"),
        (np.array([0.5, 1.0]), "must hold integer class ids, got dtype float64"),
        (np.array([np.nan, 1.0]), "must hold integer class ids, got dtype float64"),
        (np.array([True, False]), "must hold integer class ids, got dtype bool"),
        (np.array(["1", "2"]), "must hold integer class ids, got dtype <U1"),
        (np.zeros((2, 1), dtype=int), r"must have shape \(2,\) \(one class id per image\), got \(2, 1\)"),
    ],
)
def test_bad_labels(model, y, message):
    x = np.zeros((2, 8, 8, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        model.evaluate(x, y)
    with pytest.raises(ValueError, match=message):
        seed_cnn((8, 8, 1), 10).fit(x, y, verbose=0)


def test_bad_batch_size(model):
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        model.predict(np.zeros((2, 8, 8, 1)), batch_size=0)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int16, np.bool_]),
        shape=hnp.array_shapes(min_dims=1, max_dims=5, max_side=4),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_check_images_returns_a_finite_float32_batch_or_a_value_error(x):
    try:
        checked = check_images(x, (4, 4, 1))
    except ValueError:
        return
    assert checked.dtype == np.float32 and checked.shape[1:] == (4, 4, 1) and np.isfinite(checked).all()


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    y=hnp.arrays(
        dtype=st.sampled_from([np.int64, np.uint64, np.int8, np.float64, np.float32, np.bool_]),
        shape=st.sampled_from([(3,), (3, 1), (2,)]),
    ),
    classes=st.integers(1, 5),
)
def test_check_labels_returns_class_ids_or_a_value_error(y, classes):
    try:
        checked = check_labels(y, 3, classes)
    except ValueError:
        return
    assert (
        checked.dtype == np.int64 and checked.shape == (3,) and 0 <= checked.min() and checked.max() < classes
    )
