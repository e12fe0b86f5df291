"""Image files (PNG, JPEG, ...) -> model inputs, saying what was done to them."""

import os

import numpy as np

MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused (decompression-bomb guard)


class ImageFileError(ValueError):
    """An image file that cannot be read; the message names the file."""


def _open_image(path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.load()
            return image
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image file pillow can read") from None
    except Image.DecompressionBombError as error:
        raise ImageFileError(f"{path}: image too large ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageFileError(f"{path}: damaged image ({error})") from None


def _flatten_alpha(image):
    """Composite transparent images over white, as a viewer shows them."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), "flattened transparency onto white"
    return image, None


def read_image(path, input_shape, invert=False):
    """Read an image file as one model input of shape (H, W, C) float32 in [0, 1].

    Converts the mode to grayscale (C=1) or RGB (C=3) and resizes to (H, W) as needed.
    Returns (array, notes): notes are human sentences saying what was changed.
    """
    from PIL import Image

    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"images can feed models with 1 or 3 channels, this one has {channels}")
    path = os.fspath(path)
    image = _open_image(path)
    notes = []
    image, note = _flatten_alpha(image)
    if note:
        notes.append(note)
    target_mode = "L" if channels == 1 else "RGB"
    if image.mode != target_mode:
        notes.append(f"converted {image.mode} to {'grayscale' if channels == 1 else 'RGB'}")
        image = image.convert(target_mode)
    if image.size != (width, height):
        notes.append(f"resized {image.size[0]}x{image.size[1]} to {width}x{height}")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if invert:
        pixels = 1.0 - pixels
        notes.append("inverted (dark ink on light paper -> light on dark)")
    return pixels, notes
