"""Fuzz the image upload path, convscope.data.images.read_image on arbitrary bytes: mutated PNG, JPEG,
GIF, BMP, TIFF, WebP, PPM and ICO files and random bytes behind their magic numbers. Only ImageFileError
may come out, quickly; what comes back is a finite (H, W, C) float32 array in [0, 1]."""

import io
import struct
import zlib

import numpy as np
import pytest
from fuzz_helpers import fuzz_settings, mutated, run_case
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from convscope.data.images import ImageFileError, read_image

pytestmark = [  # pillow warns about damaged EXIF and tags, and about big images before we refuse them
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]


def encoded(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def image_seeds() -> list:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    gray = rgb.convert("L")
    rgba = Image.fromarray(rng.integers(0, 256, (5, 6, 4), dtype=np.uint8), "RGBA")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    wide = Image.fromarray((rng.integers(0, 65536, (4, 4))).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        encoded(rgb, "PNG"),
        encoded(gray, "PNG"),
        encoded(rgba, "PNG"),
        encoded(palette, "PNG", transparency=0),
        encoded(wide, "PNG"),
        encoded(rgb, "JPEG", quality=50),
        encoded(rgb, "JPEG", exif=exif.tobytes()),
        encoded(rgb.convert("CMYK"), "JPEG"),
        encoded(palette, "GIF"),
        encoded(rgb, "BMP"),
        encoded(rgb, "TIFF"),
        encoded(wide, "TIFF"),
        encoded(rgb, "WEBP", lossless=True),
        encoded(gray, "PPM"),
        encoded(rgb, "ICO"),
    ]


def png_chunks(data: bytes) -> list:
    """[(type, payload)] of a PNG file."""
    chunks, at = [], 8
    while at + 8 <= len(data):
        length = struct.unpack(">I", data[at : at + 4])[0]
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def png_of(chunks) -> bytes:
    body = b"".join(
        struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        for kind, payload in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


@st.composite
def png_mutated(draw, data: bytes) -> bytes:
    """A PNG with one chunk's payload mutated and its CRC fixed, so the decoder sees the change."""
    chunks = png_chunks(data)
    index = draw(st.integers(0, len(chunks) - 1))
    kind, payload = chunks[index]
    chunks[index] = (kind, draw(mutated(payload)) if payload else draw(st.binary(max_size=16)))
    return png_of(chunks)


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"P5\n"]
SEEDS = image_seeds()
cases = st.one_of(
    st.binary(max_size=256),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=256)).map(b"".join),
    st.sampled_from(SEEDS).flatmap(mutated),
    st.sampled_from([seed for seed in SEEDS if seed.startswith(b"\x89PNG")]).flatmap(png_mutated),
)
SHAPES = st.sampled_from([(8, 8), (3, 5)])


@fuzz_settings
@given(data=cases, channels=st.sampled_from([1, 3]), size=SHAPES, invert=st.booleans())
def test_read_image_on_arbitrary_bytes(data, channels, size, invert):
    shape = (*size, channels)
    result = run_case("image", lambda: read_image(data, shape, invert=invert), (ImageFileError,))
    if result is not None:
        pixels, notes = result
        assert pixels.shape == shape and pixels.dtype == np.float32
        assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1
        assert all(isinstance(note, str) for note in notes)
