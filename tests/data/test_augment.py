import numpy as np
import pytest

from convscope.data.augment import Augmentation, random_crop, random_horizontal_flip


def test_flip_mirrors_about_half_of_the_images():
    x = np.random.default_rng(0).random((200, 4, 5, 3), dtype=np.float32)
    out = random_horizontal_flip(x, np.random.default_rng(1))
    mirrored = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x, strict=True)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, x, strict=True)])
    assert np.all(mirrored ^ kept) and 70 < mirrored.sum() < 130


def test_crop_is_a_shift_with_zero_fill():
    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1) + 1
    out = random_crop(x, 2, np.random.default_rng(3))
    assert out.shape == x.shape
    for image, original in zip(out, x, strict=True):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = np.zeros_like(original)
                src = original[max(dy, 0) : 6 + min(dy, 0), max(dx, 0) : 6 + min(dx, 0)]
                shifted[
                    max(-dy, 0) : max(-dy, 0) + src.shape[0], max(-dx, 0) : max(-dx, 0) + src.shape[1]
                ] = src
                found |= np.array_equal(image, shifted)
        assert found


def test_augmentation_is_seeded():
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    augment = Augmentation(flip=True, crop_padding=2)
    np.testing.assert_array_equal(augment(x, np.random.default_rng(5)), augment(x, np.random.default_rng(5)))
    with pytest.raises(ValueError, match="crop_padding must be an int >= 0"):
        Augmentation(crop_padding=-1)
