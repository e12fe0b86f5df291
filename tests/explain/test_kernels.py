import numpy as np
import pytest

from convscope.explain.kernels import CLASSIC_KERNELS, classic_kernel, get_kernel, parse_kernel

NAMES = [
    "vertical_line",
    "horizontal_line",
    "sobel_x",
    "sobel_y",
    "laplacian",
    "sharpen",
    "box_blur",
    "gaussian_blur",
    "gaussian_blur_5x5",
    "emboss",
    "identity",
]


@pytest.mark.parametrize("name", NAMES)
def test_classic_kernels_are_odd_float32_and_documented(name):
    kernel = classic_kernel(name)
    assert kernel.dtype == np.float32 and kernel.ndim == 2
    assert kernel.shape[0] % 2 == 1 and kernel.shape[1] % 2 == 1
    assert CLASSIC_KERNELS[name].description


def test_kernel_sums_say_what_they_keep():
    for name in ("vertical_line", "horizontal_line", "sobel_x", "sobel_y", "laplacian"):
        assert classic_kernel(name).sum() == pytest.approx(0.0)  # flat areas -> 0
    for name in ("box_blur", "gaussian_blur", "gaussian_blur_5x5", "sharpen", "identity", "emboss"):
        assert classic_kernel(name).sum() == pytest.approx(1.0)  # flat areas keep their value
    assert classic_kernel("gaussian_blur_5x5").shape == (5, 5)
    assert np.array_equal(classic_kernel("horizontal_line"), classic_kernel("vertical_line").T)


def test_classic_kernel_returns_a_copy():
    classic_kernel("identity")[1, 1] = 99
    assert classic_kernel("identity")[1, 1] == 1


def test_parse_rows():
    expected = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.float32)
    assert np.array_equal(parse_kernel("0 1 0; 0 1 0; 0 1 0"), expected)
    assert np.array_equal(parse_kernel("0,1,0\n0, 1, 0\n0 1 0"), expected)
    assert np.allclose(parse_kernel("-1.5 2e-1 .25"), [[-1.5, 0.2, 0.25]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 3; 4 5; 6 7 8", "row 1 has 3 values, row 2 has 2"),
        ("0 1 0; 0 x 0; 0 1 0", "row 2 has 'x', which is not a number"),
        ("0 1 0; 0 nan 0; 0 1 0", "not a finite number"),
        ("1 2; 3 4", "odd number of rows and columns"),
        ("1 2 3 4", "odd number of rows and columns"),
        ("", "empty"),
        ("  ;  ", "empty"),
        ("1 2 3;; 4 5 6", "empty row"),
    ],
)
def test_parse_errors_are_one_clear_sentence(text, message):
    with pytest.raises(ValueError) as error:
        parse_kernel(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_get_kernel_by_name_alias_or_rows():
    assert get_kernel("sobel_x")[0] == "sobel_x"
    assert get_kernel("Gaussian_Blur_3x3")[0] == "gaussian_blur"
    label, kernel = get_kernel("1 1 1; 1 1 1; 1 1 1")
    assert label == "custom 3x3" and kernel.sum() == 9
    with pytest.raises(ValueError, match="unknown kernel 'sobelx'; known: vertical_line"):
        get_kernel("sobelx")
