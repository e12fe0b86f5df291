import numpy as np
import pytest

from convscope import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from convscope.explain.patches import layer_output, patches_in_context, top_patches
from convscope.explain.receptive import receptive_fields
from convscope.models import seed_cnn


def tiny_model(input_shape=(6, 6, 1)):
    """conv 3x3 same x4, ReLU, pool 2, conv 3x3 valid x3, flatten, dense: small enough for loops."""
    return Sequential(
        [
            Conv2D(4, 3, padding="same"),
            ReLU(),
            MaxPool2D(2),
            Conv2D(3, 3, padding="valid"),
            Flatten(),
            Dense(2),
        ],
        input_shape=input_shape,
        seed=1,
    )


def tiny_images(n=12, shape=(6, 6, 1), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def test_receptive_fields_of_the_seed_cnn():
    fields = receptive_fields(seed_cnn((8, 8, 1), 10))
    expected = [
        ((3, 3), (1, 1), (-1, -1)),  # conv 3x3 same
        ((3, 3), (1, 1), (-1, -1)),  # relu
        ((4, 4), (2, 2), (-1, -1)),  # pool 2
        ((8, 8), (2, 2), (-3, -3)),  # conv 3x3 same: 4 + 2 * 2
        ((8, 8), (2, 2), (-3, -3)),  # relu
        ((10, 10), (4, 4), (-3, -3)),  # pool 2: 8 + 1 * 2
    ]
    assert [tuple(field) for field in fields[:6]] == expected
    assert fields[6:] == [None] * 5  # flatten, dense, relu, dense, softmax


def test_an_output_value_depends_only_on_its_receptive_field():
    model = seed_cnn((14, 14, 1), 10, seed=3)
    field = receptive_fields(model)[3]  # the second conv layer
    rng = np.random.default_rng(0)
    image = rng.random((1, 14, 14, 1), dtype=np.float32)
    rows, columns = field.window(3, 4)  # rows 3..10, columns 5..12 of the input
    before = layer_output(model, image, 3)[0, 3, 4]
    outside = rng.random(image.shape, dtype=np.float32)
    outside[0, rows, columns] = image[0, rows, columns]
    assert np.allclose(layer_output(model, outside, 3)[0, 3, 4], before, atol=1e-5)
    inside = image.copy()
    inside[0, rows.start, columns.stop - 1] += 5.0  # a corner of the field
    assert not np.allclose(layer_output(model, inside, 3)[0, 3, 4], before, atol=1e-3)


def brute_force_strongest(model, images, layer_index):
    """Per image and channel the largest activation, by running images one at a time: (N, C)."""
    return np.stack([layer_output(model, image[None], layer_index)[0].max(axis=(0, 1)) for image in images])


@pytest.mark.parametrize("layer_index", [0, 3])
def test_top_patches_are_the_brute_force_maxima(layer_index):
    model, images = tiny_model(), tiny_images()
    top = top_patches(model, images, layer_index, k=5, batch_size=5)  # batches force the running merge
    strongest = brute_force_strongest(model, images, layer_index)  # (N, C)
    for channel in range(strongest.shape[1]):
        expected = np.argsort(-strongest[:, channel], kind="stable")[:5]
        assert np.array_equal(top.image_indices[channel], expected)
        assert np.allclose(top.activations[channel], strongest[expected, channel], atol=1e-5)
    height, width = model.layers[layer_index].output_shape[:2]
    for channel, rank in np.ndindex(top.activations.shape):
        row, column = top.positions[channel, rank]
        assert 0 <= row < height and 0 <= column < width
        block = layer_output(model, images[top.image_indices[channel, rank]][None], layer_index)[0]
        assert block[row, column, channel] == pytest.approx(top.activations[channel, rank], abs=1e-5)


def test_first_layer_patch_dot_kernel_is_the_activation():
    model, images = tiny_model(), tiny_images()
    top = top_patches(model, images, 0, k=9)
    weight, bias = model.layers[0].params["weight"], model.layers[0].params["bias"]
    assert top.patches.shape == (4, 9, 3, 3, 1)
    for channel, rank in np.ndindex(top.activations.shape):
        value = np.sum(top.patches[channel, rank] * weight[..., channel]) + bias[channel]
        assert value == pytest.approx(top.activations[channel, rank], abs=1e-5)


def test_second_layer_patch_alone_gives_the_activation():
    """Keep only the patch's pixels, replace the rest of the image with noise: same activation."""
    model, images = tiny_model((8, 8, 1)), tiny_images(10, (8, 8, 1))
    top = top_patches(model, images, 3, k=3)
    assert top.field.size == (8, 8) and top.patches.shape[2:] == (8, 8, 1)
    noise = np.random.default_rng(5)
    for channel, rank in np.ndindex(top.activations.shape):
        original = images[top.image_indices[channel, rank]]
        rows, columns = top.field.window(*top.positions[channel, rank])
        image = noise.random(original.shape, dtype=np.float32)
        rows_in = slice(max(rows.start, 0), min(rows.stop, 8))
        columns_in = slice(max(columns.start, 0), min(columns.stop, 8))
        image[rows_in, columns_in] = original[rows_in, columns_in]
        row, column = top.positions[channel, rank]
        value = layer_output(model, image[None], 3)[0, row, column, channel]
        assert value == pytest.approx(top.activations[channel, rank], abs=1e-5)


def test_patches_in_context_light_exactly_the_receptive_field():
    model, images = tiny_model(), tiny_images()
    top = top_patches(model, images, 0, k=4)
    tiles, inside = patches_in_context(images, top)
    assert inside.sum(axis=(2, 3)).tolist() == [[9] * 4] * 4  # every lit region is 3x3
    for channel, rank in np.ndindex(top.activations.shape):
        lit = tiles[channel, rank][inside[channel, rank]].reshape(3, 3, 1)
        assert np.array_equal(lit, top.patches[channel, rank])


def test_fewer_images_than_k_and_bad_layers():
    model, images = tiny_model(), tiny_images(3)
    assert top_patches(model, images, 0).activations.shape == (4, 3)
    with pytest.raises(ValueError, match="no spatial output"):
        top_patches(model, images, 4)
    with pytest.raises(ValueError, match=r"patch images must have shape \(N, 6, 6, 1\)"):
        top_patches(model, tiny_images(3, (5, 5, 1)), 0)
