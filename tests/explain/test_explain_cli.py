"""`convscope explain`, `convolve`, `evaluate --report` end to end, and their one-sentence errors."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from convscope import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Softmax
from convscope.cli import main
from convscope.explain import report as report_module
from convscope.explain.story import explain_sections
from convscope.models import seed_cnn

SECTION = re.compile(r'<section id="([^"]+)" class="kind-(\w+)">(.*?)</section>', re.S)


@pytest.fixture(scope="module")
def explained(model_file, tmp_path_factory):
    """Run `convscope explain MODEL --index 3` once; keep its output folder and the sections it wrote."""
    out = tmp_path_factory.mktemp("explain")
    written = []
    real_write_report = report_module.write_report

    def recording_write_report(sections, *args, **kwargs):
        written.extend(sections)
        return real_write_report(sections, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_module, "write_report", recording_write_report)
        assert (
            main(["explain", str(model_file), "--index", "3", "--patch-images", "200", "--out", str(out)])
            == 0
        )
    return out, written


def test_explain_writes_one_grid_per_spatial_layer_with_one_panel_per_channel(explained, trained):
    out, sections = explained
    model = trained[0]
    by_anchor = {section.anchor: section for section in sections}
    for index, layer in enumerate(model.layers):
        section = by_anchor[layer.name]
        if len(layer.output_shape) == 3:
            (grid,) = [p for p in section.pictures if p.name == f"{layer.name}-feature-maps"]
            assert grid.panels == layer.output_shape[2]  # counted in the matplotlib figure itself
            png = Image.open(out / f"{index + 1:02d}-{grid.name}.png")  # section 0 is the input
            assert png.format == "PNG" and png.size[0] > 600
    names = [p.name for p in by_anchor["conv2d"].pictures]
    assert names == ["conv2d-kernels", "conv2d-feature-maps", "conv2d-top-patches"]
    assert [p.panels for p in by_anchor["conv2d"].pictures] == [16, 16, 16]
    assert [p.panels for p in by_anchor["conv2d_1"].pictures] == [32, 32, 32]
    assert by_anchor["softmax"].pictures[0].name == "softmax-probabilities"


def test_report_html_reads_top_to_bottom_with_an_embedded_image_per_layer(explained, trained):
    out, _ = explained
    html = (out / "report.html").read_text(encoding="utf-8")
    sections = SECTION.findall(html)
    anchors = [anchor for anchor, _, _ in sections]
    assert anchors == ["input"] + [layer.name for layer in trained[0].layers]
    kinds = [kind for _, kind, _ in sections]
    assert kinds[:4] == ["input", "conv", "relu", "pool"] and kinds[-5:] == [
        "flatten",
        "dense",
        "relu",
        "dense",
        "softmax",
    ]
    for anchor, _, body in sections:
        images = re.findall(r'src="data:image/png;base64,([^"]+)"', body)
        assert images, f"section {anchor} has no embedded image"
        assert Image.open(io.BytesIO(base64.b64decode(images[0]))).format == "PNG"
    assert "test image 3 of digits, true class" in html
    assert "How to read the colours" in html and 'src="file:' not in html and "<script" not in html


def test_explain_an_image_file(model_file, tmp_path, capsys):
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[4:28, 14:18] = 255  # a "1"
    Image.fromarray(pixels).save(tmp_path / "one.png")
    out = tmp_path / "report"
    assert (
        main(
            ["explain", str(model_file), str(tmp_path / "one.png"), "--patch-images", "0", "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "converted RGB to grayscale" in printed and "resized 32x32 to 8x8 (height x width)" in printed
    assert f"report: {out / 'report.html'}" in printed
    assert "top-patches" not in " ".join(p.name for p in out.iterdir())


def test_colour_model_shows_channels_and_colour_kernels():
    model = Sequential(
        [Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten(), Dense(3), Softmax()],
        input_shape=(6, 6, 3),
        class_names=["r", "g", "b"],
    )
    image = np.random.default_rng(0).random((6, 6, 3), dtype=np.float32)
    patch_images = np.random.default_rng(1).random((5, 6, 6, 3), dtype=np.float32)
    sections = explain_sections(model, image, patch_images=patch_images)
    pictures = {p.name: p for section in sections for p in section.pictures}
    assert pictures["input-channels"].panels == 3
    assert pictures["conv2d-kernels"].panels == 4 and pictures["conv2d-top-patches"].panels == 4
    assert pictures["dense-scores"].panels == 0 and "softmax-probabilities" in pictures


def test_evaluate_report_writes_confusion_matrix_and_mistakes(model_file, tmp_path, capsys):
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(model_file), "--report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy:" in printed
    for name in ("00-confusion-matrix.png", "00-mistakes.png", "report.html"):
        assert (out / name).is_file() and str(out / name) in printed
    assert Image.open(out / "00-confusion-matrix.png").format == "PNG"


def test_convolve_without_an_image_uses_the_sample_photo(tmp_path, capsys):
    out = tmp_path / "bar.png"
    assert (
        main(
            [
                "convolve",
                "--kernel",
                "0 1 0; 0 1 0; 0 1 0",
                "--padding",
                "2",
                "--stride",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "427x640x3 -> 143x214x1 (kernel custom 3x3, padding 2, stride 3)" in capsys.readouterr().out
    assert Image.open(out).format == "PNG"


def test_convolve_an_image_file_per_channel(tmp_path, capsys):
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(tmp_path / "gray.jpg")
    args = [
        "convolve",
        str(tmp_path / "gray.jpg"),
        "--kernel",
        "sobel_y",
        "--per-channel",
        "--padding",
        "same",
    ]
    assert main([*args, "--out", str(tmp_path / "c.png")]) == 0
    assert "20x30x3 -> 20x30x3" in capsys.readouterr().out


def assert_one_clear_error(capsys, *fragments):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convscope: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_inputs_are_one_clear_sentence_and_exit_code_2(model_file, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert main(["explain", str(model_file), str(missing)]) == 2
    assert_one_clear_error(capsys, "missing.png: no such image file")
    assert main(["convolve", str(missing)]) == 2
    assert_one_clear_error(capsys, "no such image file")

    (tmp_path / "notes.png").write_text("not an image")
    assert main(["explain", str(model_file), str(tmp_path / "notes.png")]) == 2
    assert_one_clear_error(capsys, "notes.png: not an image file")

    assert main(["convolve", "--kernel", "1 2 3; 4 5", "--out", str(tmp_path / "x.png")]) == 2
    assert_one_clear_error(capsys, "rows must all have the same length: row 1 has 3 values, row 2 has 2")
    assert main(["convolve", "--kernel", "1 2; 3 4", "--out", str(tmp_path / "x.png")]) == 2
    assert_one_clear_error(capsys, "odd number of rows and columns")


def test_images_the_model_or_kernel_cannot_take(model_file, tmp_path, capsys):
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "tiny.png")
    assert main(["convolve", str(tmp_path / "tiny.png"), "--kernel", "gaussian_blur_5x5"]) == 2
    assert_one_clear_error(capsys, "kernel of size 5 does not fit in input of size 3")

    mnist_sized = tmp_path / "mnist.convscope"
    seed_cnn((28, 28, 1), 10).save(mnist_sized)
    assert main(["explain", str(mnist_sized), "--dataset", "digits", "--index", "0"]) == 2
    assert_one_clear_error(capsys, "the model takes 28x28x1 images but digits images are 8x8x1")
    assert main(["explain", str(mnist_sized)]) == 2
    assert_one_clear_error(capsys, "give an IMAGE file, or --dataset")
    assert main(["explain", str(model_file), "--index", "5000"]) == 2
    assert_one_clear_error(capsys, "--index 5000 is out of range: the test split of digits has 360 images")
