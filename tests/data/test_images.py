import numpy as np
import pytest
from PIL import Image

from convscope.data.images import ImageFileError, read_image


def test_colour_photo_becomes_small_gray_input(tmp_path):
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[:, 30:] = 255
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    pixels, notes = read_image(tmp_path / "photo.jpg", (28, 28, 1))
    assert pixels.shape == (28, 28, 1) and pixels.dtype == np.float32
    assert pixels[:, :10].max() < 0.05 and pixels[:, -10:].min() > 0.95
    assert "converted RGB to grayscale" in notes and "resized 40x60 to 28x28 (height x width)" in notes


def test_transparency_and_invert(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent -> white, then inverted -> 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    pixels, notes = read_image(tmp_path / "clear.png", (8, 8, 1), invert=True)
    assert np.allclose(pixels, 0.0)
    assert notes[0] == "flattened transparency onto white" and notes[-1].startswith("inverted")


def test_gray_to_rgb(tmp_path):
    Image.fromarray(np.full((4, 4), 128, dtype=np.uint8)).save(tmp_path / "g.png")
    pixels, _ = read_image(tmp_path / "g.png", (4, 4, 3))
    assert pixels.shape == (4, 4, 3) and np.allclose(pixels, 128 / 255)


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ImageFileError, match="notes.png: not an image"):
        read_image(tmp_path / "notes.png", (8, 8, 1))


def test_truncated_image(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    raw = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageFileError, match="a.png: damaged image"):
        read_image(tmp_path / "a.png", (8, 8, 1))
