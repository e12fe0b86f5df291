"""What the tools say about images and runs: real sizes in one order (height x width), no doubled sizes,
the demo's curves named after the split they come from."""

import numpy as np
from PIL import Image

from convscope.data.images import read_image
from convscope.explain.convolve import convolution_figure, convolve_image, read_photo
from convscope.explain.kernels import get_kernel
from convscope.explain.plots import history_figure


def _jpeg(path, width=640, height=427):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_a_jpeg_reports_its_own_size_not_the_reduced_decoding_size(tmp_path):
    photo = _jpeg(tmp_path / "china.jpg")
    _, notes = read_image(photo, (8, 8, 1))
    assert "resized 427x640 to 8x8 (height x width)" in notes  # not the 1/8 draft size, 80x54
    _, notes = read_image(photo, (214, 320, 3))
    assert "resized 427x640 to 214x320 (height x width)" in notes


def test_convolve_reports_sizes_as_height_by_width(tmp_path):
    image, notes = read_photo(_jpeg(tmp_path / "wide.jpg", 1000, 500), max_side=800)
    assert image.shape == (400, 800, 3)
    assert notes == ["resized 500x1000 to 400x800 (height x width, --max-side 800)"]


def test_a_custom_kernel_is_titled_with_its_size_once():
    label, kernel = get_kernel("0 1 0; 0 1 0; 0 1 0")
    image = np.zeros((6, 6, 1), dtype=np.float32)
    fig = convolution_figure(image, kernel, convolve_image(image, kernel), kernel_label=label)
    titles = [ax.get_title() for ax in fig.axes]
    assert "custom 3×3" in titles and not any("3x3 3×3" in t for t in titles)


def test_held_out_curves_are_named_after_their_split():
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7], "val_loss": [1.1, 0.6], "val_accuracy": [0.4, 0.6]}
    labels = [line.get_label() for ax in history_figure(history, "test").axes for line in ax.get_lines()]
    assert labels == ["training loss", "test loss", "training accuracy", "test accuracy"]
    labels = [line.get_label() for line in history_figure(history).axes[0].get_lines()]
    assert labels == ["training loss", "validation loss"]
