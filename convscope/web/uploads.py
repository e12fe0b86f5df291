"""Uploaded image files -> checked PIL images -> model inputs, with limits on bytes and pixels.

The checks happen before any pixel is decoded: the byte count while reading, the pixel count from the
image header (a small PNG can declare a huge image: a decompression bomb).
"""

import io

import numpy as np

from convscope.web.errors import WebError

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 16_000_000
READ_CHUNK = 1 << 16
DRAWING_MARGIN = 4 / 28  # MNIST digits sit in a 20x20 box centred in 28x28
SMALL_INPUT = 12  # inputs up to this size (the 8x8 digits) are filled by the drawing, no margin
INK_THRESHOLD = 0.1
DRAWING_MODES = ("RGBA", "RGB", "LA", "L")  # 8-bit images without a palette, as a canvas snapshot is
GRAY_MODES = ("1", "L", "LA", "I", "F")


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MB"


async def read_upload(upload, limit: int | None = None) -> bytes:
    """The bytes of a FastAPI UploadFile, or a 413 WebError as soon as they pass `limit` (default
    MAX_UPLOAD_BYTES)."""
    limit = MAX_UPLOAD_BYTES if limit is None else limit
    chunks, total = [], 0
    while chunk := await upload.read(READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise WebError(
                413, f"the file is larger than {_megabytes(limit)}, the upload limit: choose a smaller image"
            )
        chunks.append(chunk)
    if total == 0:
        raise WebError(422, "the uploaded file is empty: choose an image file (PNG, JPEG, ...)")
    return b"".join(chunks)


def decode_image(data: bytes, max_pixels: int | None = None):
    """Bytes of an image file -> a fully loaded PIL image (EXIF rotation applied), or a WebError:
    415 not an image, 413 more than `max_pixels` (default MAX_IMAGE_PIXELS), 422 damaged or truncated."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from convscope.data.images import FORMATS

    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    too_big = f"the image has more than {max_pixels / 1e6:.0f} megapixels, the limit: shrink it first"
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise WebError(413, too_big) from None
    except UnidentifiedImageError:
        kinds = ", ".join(FORMATS)
        raise WebError(415, f"the file is not an image the server can read: upload one of {kinds}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise WebError(422, f"the image file is damaged: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise WebError(
            413,
            f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
            f"{max_pixels / 1e6:.0f} megapixels: shrink it first",
        )
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise WebError(413, too_big) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise WebError(422, f"the image file is damaged or truncated ({error}): upload it again") from None


def fit_drawing(gray: np.ndarray, target_size: int) -> np.ndarray:
    """Crop a light-on-dark drawing (H, W) in [0, 1] to a square around its ink, the way the training
    digits are framed: filling the box for small inputs, in the middle 20/28 for MNIST-sized ones.
    An empty drawing comes back unchanged."""
    rows = np.flatnonzero((gray > INK_THRESHOLD).any(axis=1))
    columns = np.flatnonzero((gray > INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return gray
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    ink_side = max(bottom - top, right - left)
    margin = 0.0 if target_size <= SMALL_INPUT else DRAWING_MARGIN
    side = int(np.ceil(ink_side / (1 - 2 * margin)))
    framed = np.zeros((side, side), dtype=np.float32)
    ink = gray[top:bottom, left:right]
    row0, column0 = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    framed[row0 : row0 + ink.shape[0], column0 : column0 + ink.shape[1]] = ink
    return framed


def drop_opaque_alpha(image):
    """An RGBA or LA image whose alpha is 255 everywhere (a canvas snapshot) as plain RGB or L."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema() == (255, 255):
        return image.convert(image.mode[:-1])
    return image


def _library_read(data: bytes, input_shape):
    """convscope.data.images.read_image on the uploaded bytes (what `convscope predict` does to a file):
    mode converted (16-bit, palette, CMYK, transparency, ...), resized; (pixels, notes) or a 422."""
    from convscope.data.images import ImageFileError, read_image

    try:
        return read_image(data, input_shape)
    except ImageFileError as error:
        raise WebError(422, f"the image cannot be converted: {error}") from None


def _drawing_input(image, height: int, width: int):
    """A light-on-dark canvas drawing (8-bit PIL image) -> (H, W, 1) in [0, 1] framed around its ink."""
    from PIL import Image

    notes = []
    image = drop_opaque_alpha(image)
    if image.mode != "L":
        notes.append(f"converted {image.mode} to grayscale")
        image = image.convert("L")
    framed = fit_drawing(np.asarray(image, dtype=np.float32) / 255.0, height)
    if framed.shape != (image.size[1], image.size[0]):
        notes.append(
            f"framed the drawing: cropped to a {framed.shape[0]}x{framed.shape[1]} square around the ink"
        )
        image = Image.fromarray(np.round(framed * 255).astype(np.uint8))
    if image.size != (width, height):
        notes.append(f"resized {image.size[1]}x{image.size[0]} to {height}x{width} (height x width)")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return (np.asarray(image, dtype=np.float32) / 255.0)[..., None], notes


def to_model_input(data: bytes, image, input_shape, invert: bool = False, drawing: bool = False):
    """An uploaded image (its bytes and the checked PIL image from decode_image) -> one model input
    (H, W, C) float32 in [0, 1] and notes saying what was done.

    Uploads go through convscope.data.images.read_image, as `convscope predict` files do. A `drawing`
    (the page's canvas: light ink on black, 8 bits) for a gray model is first framed around its ink like
    the training digits (see fit_drawing). `invert` turns dark ink on light paper into light on dark.
    """
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise WebError(422, f"images can feed models with 1 or 3 channels; this model takes {channels}")
    if drawing and channels == 1 and image.mode in DRAWING_MODES:
        pixels, notes = _drawing_input(image, height, width)
    else:
        pixels, notes = _library_read(data, input_shape)
    if invert:
        pixels = 1.0 - pixels
        notes.append("inverted (dark ink on light paper -> light on dark)")
    return pixels, notes


def shrink_to_fit(data: bytes, image, max_side: int):
    """An uploaded image at its own size, its longer side at most `max_side`: (H, W, 1 or 3) float32
    in [0, 1] (gray images stay gray) and notes; converted by read_image like every upload."""
    width, height = image.size
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    channels = 1 if image.mode in GRAY_MODES or image.mode.startswith("I;16") else 3
    pixels, notes = _library_read(data, (*size, channels))
    return pixels, [note.replace("resized", "shrunk") for note in notes]
