"""Activation maximisation: the optimised input excites its kernel more than the data set and random
inputs do, and the same seed gives the same image."""

import numpy as np
import pytest

from convscope.explain import maximize
from convscope.explain.patches import top_patches

SETTINGS = maximize.Settings(steps=128, starts=4)


@pytest.mark.parametrize("layer_index", [0, 3], ids=["conv2d", "conv2d_1"])
def test_optimised_inputs_beat_every_top_patch_and_random_inputs(trained, digits, layer_index):
    model = trained[0]
    result = maximize.maximize_kernels(model, layer_index, settings=SETTINGS)
    kernels = model.layers[layer_index].filters
    assert result.images.shape == (kernels, 8, 8, 1)
    assert result.images.min() >= 0.0 and result.images.max() <= 1.0
    responses = maximize.kernel_responses(model, result.images, layer_index)
    reached = responses[np.arange(kernels), np.arange(kernels)]
    best_patch = top_patches(model, digits[0].images, layer_index).activations[:, 0]
    random_inputs = np.random.default_rng(5).random((100, 8, 8, 1)).astype(np.float32)
    best_random = maximize.kernel_responses(model, random_inputs, layer_index).max(axis=0)
    assert (reached > best_patch).all(), np.flatnonzero(reached <= best_patch)
    assert (reached > best_random).all()


def test_the_same_seed_gives_the_same_image_and_another_seed_another(trained):
    model = trained[0]
    settings = maximize.Settings(steps=24, seed=3)
    first = maximize.maximize_kernels(model, 3, channels=[0, 5], settings=settings)
    again = maximize.maximize_kernels(model, 3, channels=[0, 5], settings=settings)
    other = maximize.maximize_kernels(model, 3, channels=[0, 5], settings=maximize.Settings(steps=24, seed=4))
    assert np.array_equal(first.images, again.images) and np.array_equal(first.values, again.values)
    assert not np.array_equal(first.images, other.images)


def test_class_maximisation_raises_each_class_logit(trained):
    model = trained[0]
    result = maximize.maximize_classes(model, settings=maximize.Settings(steps=48))
    start = model.predict_proba(np.full((1, 8, 8, 1), 0.5, np.float32))
    assert result.images.shape == (10, 8, 8, 1)
    one_step = maximize.maximize_classes(model, settings=maximize.Settings(steps=1)).values
    assert (result.values > one_step).all()
    assert (result.values > model.forward_logits(np.full((1, 8, 8, 1), 0.5, np.float32))[0]).all()
    assert start.shape == (1, 10)


def test_bad_settings_and_layers_are_refused(trained):
    model = trained[0]
    with pytest.raises(ValueError, match="is not a conv layer"):
        maximize.maximize_kernels(model, 1)
    with pytest.raises(ValueError, match="has kernels 0 to 15"):
        maximize.maximize_kernels(model, 0, channels=[16])
    with pytest.raises(ValueError, match="steps must be a whole number"):
        maximize.maximize_kernels(model, 0, settings=maximize.Settings(steps=0))
