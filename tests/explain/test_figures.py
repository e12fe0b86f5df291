import io

import numpy as np
import pytest
from PIL import Image

from convscope.explain import feature_maps, learned, plots
from convscope.explain.figures import colour_scale, count_panels, figure_png
from convscope.train import History


def test_block_figure_has_one_panel_per_channel_on_one_scale():
    block = np.random.default_rng(0).normal(size=(4, 4, 6)).astype(np.float32)
    fig = feature_maps.block_figure(block, "conv2d (Conv2D)")
    assert count_panels(fig) == 6
    assert "conv2d (Conv2D)   4×4×6" in fig.get_suptitle()
    limits = {panel.get_images()[0].get_clim() for panel in fig.axes if panel.get_label() == "panel"}
    assert len(limits) == 1  # every panel shares one colour scale
    (low, high), bound = limits.pop(), np.abs(block).max()
    assert (low, high) == pytest.approx((-bound, bound))
    assert len(fig.axes) == 7  # the panels and one colour bar


def test_block_figure_caps_the_panels():
    fig = feature_maps.block_figure(np.zeros((2, 2, 70), np.float32), "big")
    assert count_panels(fig) == 64 and "first 64 of 70 channels" in fig.get_suptitle()


def test_colour_scales():
    assert colour_scale(np.array([0.0, 2.0])) == {"cmap": "magma", "vmin": 0.0, "vmax": 2.0}
    assert colour_scale(np.array([-3.0, 1.0])) == {"cmap": "RdBu_r", "vmin": -3.0, "vmax": 3.0}
    assert colour_scale(np.zeros(3))["vmax"] == 1.0


def test_input_and_channels():
    image = np.random.default_rng(0).random((5, 6, 3), dtype=np.float32)
    assert count_panels(feature_maps.input_figure(image)) == 1
    fig = feature_maps.channels_figure(image)
    assert [ax.get_title() for ax in fig.axes] == ["red 5×6", "green 5×6", "blue 5×6"]


def test_kernel_figures_have_one_panel_per_output_channel():
    rng = np.random.default_rng(0)
    gray = learned.first_layer_kernels_figure(rng.normal(size=(3, 3, 1, 5)), "k")
    assert count_panels(gray) == 5
    assert len(gray.axes[0].texts) == 9  # the values, printed in the cells
    colour = learned.first_layer_kernels_figure(rng.normal(size=(3, 3, 3, 4)), "k")
    assert count_panels(colour) == 4 and colour.axes[0].get_images()[0].get_array().shape == (3, 3, 3)
    deep = learned.kernels_per_output_figure(rng.normal(size=(3, 3, 6, 7)), "k")
    assert count_panels(deep) == 7
    assert deep.axes[0].get_images()[0].get_array().shape == (7, 11)  # 6 slices, 3 per row, 1-pixel gaps


def test_mosaic_lays_tiles_out_in_rows_with_gaps():
    tiles = np.arange(5 * 2 * 2).reshape(5, 2, 2)
    out = learned.mosaic(tiles, 3, -1)
    assert out.shape == (5, 8)
    assert out[0, :2].tolist() == [0, 1] and out[3, 0] == 12 and out[2, 0] == -1


def test_history_figure_draws_training_and_validation_curves():
    history = History()
    for epoch in range(3):
        history.record(loss=1.0 / (epoch + 1), accuracy=0.5 + 0.1 * epoch, val_loss=0.9, val_accuracy=0.6)
    fig = plots.history_figure(history)
    loss_axes, accuracy_axes = fig.axes
    assert [line.get_label() for line in loss_axes.get_lines()] == ["training loss", "validation loss"]
    assert accuracy_axes.get_lines()[0].get_ydata().tolist() == pytest.approx([0.5, 0.6, 0.7])
    png = figure_png(fig)
    assert Image.open(io.BytesIO(png)).format == "PNG"
    without_validation = History()
    without_validation.record(loss=1.0, accuracy=0.5)
    assert len(plots.history_figure(without_validation).axes[0].get_lines()) == 1
    with pytest.raises(ValueError, match="no epochs"):
        plots.history_figure(History())


def test_confusion_matrix_and_its_figure():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    matrix = plots.confusion_matrix(labels, predictions, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    fig = plots.confusion_figure(matrix, ["cat", "dog", "bird"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "bird"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "bird"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"


def test_most_confident_mistakes_come_first():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.05, 0.95], [0.7, 0.3]])
    labels = np.array([0, 0, 0, 0, 1])
    assert plots.most_confident_mistakes(probabilities, labels).tolist() == [3, 1, 4, 2]
    assert plots.most_confident_mistakes(probabilities, labels, k=2).tolist() == [3, 1]
    images = np.zeros((5, 4, 4, 1), np.float32)
    fig = plots.mistakes_figure(images, labels, probabilities, [3, 1], ["a", "b"])
    assert count_panels(fig) == 2 and fig.axes[0].get_title() == "true a\npredicted b 0.95"
    assert count_panels(plots.mistakes_figure(images, labels, probabilities, [], ["a", "b"])) == 0


def test_probabilities_figure_labels_every_class():
    fig = plots.probabilities_figure(np.array([0.1, 0.7, 0.2]), ["cat", "dog", "bird"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "bird"]
    assert "predicted dog with probability 0.700" in ax.get_title(loc="left")
