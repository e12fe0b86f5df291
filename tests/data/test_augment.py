import numpy as np
import pytest

from convscope.data.augment import Augmentation, random_crop, random_cutout, random_horizontal_flip


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


def test_cutout_zeroes_one_square_per_image_clipped_at_the_edges():
    x = np.ones((300, 9, 7, 2), dtype=np.float32)
    out = random_cutout(x, 4, np.random.default_rng(2))
    assert out.dtype == np.float32 and out.shape == x.shape and np.all(x == 1)  # a copy
    for image in out:
        assert np.array_equal(image[..., 0], image[..., 1])  # every channel of a pixel
        rows, cols = np.nonzero(image[..., 0] == 0)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert rows.size == height * width  # one rectangle...
        assert height <= 4 and width <= 4  # ...the square, or what of it lies inside the image
    zeroed = (out[..., 0] == 0).sum(axis=(1, 2))
    assert zeroed.max() == 16 and zeroed.min() < 16  # whole squares inside, clipped ones at the edges
    assert random_cutout(x, 0, np.random.default_rng(2)) is x


def test_cutout_off_draws_nothing_so_earlier_runs_repeat():
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    rng, plain = np.random.default_rng(5), np.random.default_rng(5)
    out = Augmentation(flip=True, crop_padding=2, cutout=0)(x, rng)
    np.testing.assert_array_equal(out, random_crop(random_horizontal_flip(x, plain), 2, plain))
    assert rng.random() == plain.random()
    assert Augmentation(cutout=0).get_config() == {"flip": True, "crop_padding": 4}
    assert Augmentation(cutout=8).get_config() == {"flip": True, "crop_padding": 4, "cutout": 8}
    with pytest.raises(ValueError, match="cutout must be an int >= 0"):
        Augmentation(cutout=-2)
