"""Image files (PNG, JPEG, ...) -> model inputs, saying what was done to them.

Hardened for files from anywhere: only common formats are tried (PNG, JPEG, GIF, BMP, TIFF, WebP,
PPM/PGM, ICO), the pixel count is checked before decoding (decompression bombs), EXIF orientation is
honoured, palette, transparency, 16-bit, 32-bit, float, CMYK, YCbCr and LAB images are converted, and
every decoding failure is one ImageFileError naming the file.
"""

import io
import os

import numpy as np

MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused (decompression-bomb guard)
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO")  # JPEG covers MPO (phone photos)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits per pixel, one channel
EXIF_ORIENTATION = 0x0112
SHRINK_GAP = 4  # images over this many times the target size are reduced first (memory)
TRANSPOSE = {  # EXIF orientation -> the Image.Transpose that turns it upright
    1: None,
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


class ImageFileError(ValueError):
    """An image file that cannot be read; the message names the file."""


def _source(path):
    """(what Image.open takes, the name for messages) of a path, bytes or a binary file object."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return io.BytesIO(path), "uploaded image"
    if hasattr(path, "read"):
        return path, str(getattr(path, "name", "uploaded image"))
    path = os.fspath(path)
    return path, path


def _check_size(size, name: str) -> None:
    width, height = size
    if min(width, height) < 1:
        raise ImageFileError(f"{name}: damaged image (it declares {width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageFileError(
            f"{name}: image of {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit"
        )


def _orientation(image) -> int:
    """The EXIF orientation (1-8, 1 = upright); damaged EXIF data counts as upright."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # EXIF is parsed by many small readers; any may trip on a damaged block
        return 1
    return value if value in TRANSPOSE else 1


def _shrink(image, width: int, height: int):
    """A much larger image reduced to about SHRINK_GAP times (width, height) before anything else is done
    with it, so a big photo costs its decoding and little more."""
    from PIL import Image

    fx, fy = max(image.width // (SHRINK_GAP * width), 1), max(image.height // (SHRINK_GAP * height), 1)
    if fx == fy == 1:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;16"):
        size = (max(image.width // fx, 1), max(image.height // fy, 1))
        return image.resize(
            size, Image.Resampling.NEAREST if image.mode in ("1", "P") else Image.Resampling.BOX
        )
    return image.reduce((fx, fy))


def _decode(source, name: str, process):
    """Open and check an image, then process(image) while it is open; every failure an ImageFileError."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(source, formats=FORMATS) as image:
            _check_size(image.size, name)
            return process(image)
    except ImageFileError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such image file") from None
    except IsADirectoryError:
        raise ImageFileError(f"{name}: a folder, not an image file") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{name}: not an image file pillow can read ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as error:
        raise ImageFileError(f"{name}: image too large ({error})") from None
    except MemoryError:
        raise ImageFileError(f"{name}: image too large to decode") from None
    except Exception as error:  # a damaged file can make any decoder step fail, in any way
        raise ImageFileError(f"{name}: damaged image ({type(error).__name__}: {error})") from None


def _open_image(path):
    """The decoded first frame of an image file at its own size, upright (EXIF), as a PIL image; the
    checks and errors of read_image. For callers that need the whole picture (explain's convolve)."""
    from PIL import Image

    def upright(image):
        image.load()
        orientation = _orientation(image)
        return image.copy() if orientation == 1 else image.transpose(Image.Transpose[TRANSPOSE[orientation]])

    return _decode(*_source(path), upright)


def _pixels(image, shape, name: str):
    """The opened `image` upright, in the model's mode and size: (pixels, notes)."""
    from PIL import Image

    height, width, channels = shape
    orientation = _orientation(image)
    turned = orientation in (5, 6, 7, 8)  # these swap width and height
    along_x, along_y = (height, width) if turned else (width, height)
    original = image.size  # the file's own (width, height), before a JPEG's reduced decoding
    image.draft(None, (SHRINK_GAP * along_x, SHRINK_GAP * along_y))  # JPEG: decode at 1/2, 1/4 or 1/8
    image.load()
    image = _shrink(image, along_x, along_y)
    notes = []
    if orientation != 1:
        image = image.transpose(Image.Transpose[TRANSPOSE[orientation]])
        original = original[::-1] if turned else original
        notes.append("rotated upright as its EXIF orientation says")
    image, converted = _convert_mode(image, channels, name)
    notes += converted
    if image.size != (width, height) or original != (width, height):
        notes.append(f"resized {original[1]}x{original[0]} to {height}x{width} (height x width)")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    if image.mode == "F":
        pixels = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    else:
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] != channels:
        pixels = np.repeat(pixels, channels, axis=-1)
    return pixels, notes


def _flatten_alpha(image):
    """Composite transparent images over white, as a viewer shows them."""
    from PIL import Image

    if image.mode in ALPHA_MODES or (image.mode in ("P", "L", "RGB", "1") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), "flattened transparency onto white"
    return image, None


def _wide_to_float(image):
    """A 16-bit, 32-bit or float one-channel image -> ('F' image with values in [0, 1], note)."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16") or (image.mode == "I" and 255 < high <= 65535 and low >= 0):
        scaled, note = values / 65535.0, f"scaled 16-bit {image.mode} values to [0, 1]"
    elif image.mode == "I" and 0 <= low and high <= 255:
        scaled, note = values / 255.0, None
    elif image.mode == "F" and 0 <= low and high <= 1:
        scaled, note = values, None
    else:
        span = high - low if np.isfinite(high - low) and high > low else 1.0
        scaled = np.nan_to_num((values - low) / span, nan=0.0, posinf=1.0, neginf=0.0)
        note = f"stretched {image.mode} values from [{low:.4g}, {high:.4g}] to [0, 1]"
    return Image.fromarray(np.clip(scaled, 0, 1).astype(np.float32), mode="F"), note


def _convert_mode(image, channels: int, name: str):
    """(image in mode 'L', 'RGB' or 'F' (one channel, [0, 1]), notes)."""
    mode, notes = image.mode, []
    target = "L" if channels == 1 else "RGB"
    try:
        image, note = _flatten_alpha(image)
        notes += [note] if note else []
        if image.mode in WIDE_MODES:
            image, note = _wide_to_float(image)
            notes += [note] if note else []
            if channels == 3:
                notes.append(f"converted {mode} to RGB")
        elif image.mode != target:
            notes.append(f"converted {image.mode} to {'grayscale' if channels == 1 else 'RGB'}")
            if image.mode not in ("1", "P", "L", "RGB"):  # CMYK, YCbCr, LAB, HSV: through RGB
                image = image.convert("RGB")
            image = image.convert(target)
    except (ValueError, OSError) as error:
        raise ImageFileError(f"{name}: cannot convert a {mode} image ({error})") from None
    return image, notes


def read_image(path, input_shape, invert=False):
    """Read an image file as one model input of shape (H, W, C) float32 in [0, 1].

    `path` may also be the file's bytes or a binary file object (an upload). Turns the image upright
    (EXIF), converts the mode to grayscale (C=1) or RGB (C=3) and resizes to (H, W) as needed.
    Returns (array, notes): notes are human sentences saying what was changed. A file that cannot be
    read raises ImageFileError naming it (FileNotFoundError if it does not exist).
    """
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"images can feed models with 1 or 3 channels, this one has {channels}")
    if not all(isinstance(n, (int, np.integer)) and n >= 1 for n in (height, width)):
        raise ValueError(f"input_shape must hold a positive height and width, got {input_shape!r}")
    source, name = _source(path)
    pixels, notes = _decode(
        source, name, lambda image: _pixels(image, (int(height), int(width), channels), name)
    )
    if invert:
        pixels = 1.0 - pixels
        notes.append("inverted (dark ink on light paper -> light on dark)")
    return pixels, notes
