import numpy as np
import pytest

from convscope.explain.convolve import convolution_figure, convolve_image, sample_photo, size_rule_text
from convscope.explain.figures import count_panels
from convscope.explain.kernels import classic_kernel


def vertical_bar(height=9, width=9, column=4) -> np.ndarray:
    image = np.zeros((height, width, 1), dtype=np.float32)
    image[:, column, 0] = 1.0
    return image


def test_vertical_line_kernel_peaks_along_a_vertical_bar_and_is_zero_elsewhere():
    feature_map = convolve_image(vertical_bar(), classic_kernel("vertical_line"), padding="same")[..., 0]
    assert feature_map.shape == (9, 9)
    assert np.all(feature_map.argmax(axis=1) == 4)  # every row peaks on the bar
    assert np.allclose(feature_map[1:-1, 4], 6.0)  # 3 rows x weight 2, inside the image
    far = np.abs(np.arange(9) - 4) >= 2
    assert np.allclose(feature_map[:, far], 0.0)  # flat areas away from the bar give 0
    assert np.all(feature_map[:, [3, 5]] < 0)  # beside the bar: darker than the kernel wants
    assert np.array_equal(np.flatnonzero(np.maximum(feature_map, 0).any(axis=0)), [4])  # bright only on it


def test_horizontal_line_kernel_ignores_the_vertical_bar_inside_the_image():
    feature_map = convolve_image(vertical_bar(), classic_kernel("horizontal_line"), padding="valid")
    assert np.allclose(feature_map, 0.0)


@pytest.mark.parametrize(
    "padding, stride, pad",
    [("valid", 1, 0), ("valid", 2, 0), ("same", 1, None), (1, 2, 1), (2, 1, 2), (0, 3, 0)],
)
@pytest.mark.parametrize("kernel_name", ["sobel_x", "gaussian_blur_5x5"])
def test_output_size_follows_the_documented_rule(padding, stride, pad, kernel_name):
    kernel = classic_kernel(kernel_name)
    k = kernel.shape[0]
    pad = (k - 1) // 2 if pad is None else pad
    image = np.random.default_rng(0).random((11, 14, 3), dtype=np.float32)
    feature_map = convolve_image(image, kernel, padding=padding, stride=stride)
    expected = ((11 + 2 * pad - k) // stride + 1, (14 + 2 * pad - k) // stride + 1)
    assert feature_map.shape == (*expected, 1)
    assert convolve_image(image, kernel, padding, stride, per_channel=True).shape == (*expected, 3)
    assert size_rule_text(11, k, stride, (pad, pad)).endswith(f"= {expected[0]}")


def test_same_padding_with_stride_two_is_refused_clearly():
    with pytest.raises(ValueError, match="padding='same' needs stride 1, got stride=2"):
        convolve_image(vertical_bar(), classic_kernel("sobel_x"), padding="same", stride=2)


def test_summed_colour_convolution_is_the_sum_of_per_channel_maps_and_matches_loops():
    rng = np.random.default_rng(1)
    image = rng.random((6, 7, 3), dtype=np.float32)
    kernel = rng.normal(size=(3, 3)).astype(np.float32)
    summed = convolve_image(image, kernel, padding=1, stride=2)
    per_channel = convolve_image(image, kernel, padding=1, stride=2, per_channel=True)
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    loops = np.zeros_like(per_channel)
    for row in range(loops.shape[0]):
        for column in range(loops.shape[1]):
            window = padded[2 * row : 2 * row + 3, 2 * column : 2 * column + 3]
            loops[row, column] = np.einsum("hwc,hw->c", window, kernel)
    assert np.allclose(per_channel, loops, atol=1e-5)
    assert np.allclose(summed[..., 0], per_channel.sum(axis=-1), atol=1e-5)


def test_convolution_figure_shows_shapes_and_the_map_after_relu():
    image = vertical_bar(12, 10, 5)
    feature_map = convolve_image(image, classic_kernel("vertical_line"), padding=1, stride=1)
    fig = convolution_figure(image, classic_kernel("vertical_line"), feature_map, 1, 1, "vertical_line")
    titles = [ax.get_title() for ax in fig.axes]
    assert "input 12×10×1" in titles and "feature map 12×10×1 (one map)" in titles
    assert "floor((12 + 2·1 − 3) / 1) + 1 = 12" in fig.get_suptitle()
    assert "after ReLU: max(0, feature map)" in titles
    assert count_panels(fig) == 4
    blurred = convolve_image(image, classic_kernel("box_blur"))
    assert (
        count_panels(convolution_figure(image, classic_kernel("box_blur"), blurred)) == 3
    )  # nothing negative


def test_sample_photo_is_bundled():
    photo = sample_photo()
    assert photo.shape == (427, 640, 3) and photo.dtype == np.float32
    assert 0.0 <= photo.min() and photo.max() <= 1.0
