"""Loaders given damaged, hostile or unusual files: one clear error naming the file, no big allocation;
unusual but valid images converted properly."""

import gzip
import io
import resource
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from convscope.data import DataFormatError, read_idx
from convscope.data.cifar import RECORD_BYTES, cifar_class_names, read_cifar_batch
from convscope.data.idx import load_idx_pair
from convscope.data.images import MAX_IMAGE_PIXELS, ImageFileError, read_image


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def idx_header(type_code: int, *dims: int) -> bytes:
    return struct.pack(">HBB", 0, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


# IDX


def test_gzip_idx_declaring_2_gb_fails_before_reading(tmp_path):
    """A small gz whose header declares ~2 GB is refused from the header: nothing big is decompressed."""
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, 2**15, 2**15, 2**1 - 1) + bytes(2**20)))
    before = peak_mb()
    with pytest.raises(
        DataFormatError, match=r"bomb-idx3-ubyte.gz: declared shape .* more than a [\d,]+-byte gzip"
    ):
        read_idx(path)
    assert peak_mb() - before < 50


def test_short_gzip_is_read_in_chunks(tmp_path):
    """A gz that holds less than its header declares (within what gzip could hold) fails at its end,
    having held only what is really there."""
    path = tmp_path / "short.gz"
    noise = np.random.default_rng(0).integers(0, 256, 2_000_000, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(idx_header(0x08, 1000, 1000, 200) + noise, compresslevel=1))
    before = peak_mb()
    with pytest.raises(
        DataFormatError, match=r"short.gz: truncated IDX file: shape \(1000, 1000, 200\) needs"
    ):
        read_idx(path)
    assert peak_mb() - before < 50


def test_plain_idx_size_is_checked_before_reading(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(idx_header(0x08, 60000, 28, 28) + bytes(100))
    with pytest.raises(
        DataFormatError, match=r"big: truncated IDX file: shape \(60000, 28, 28\) needs 47,040,016"
    ):
        read_idx(path)


def test_dimension_product_overflowing_int64_is_refused(tmp_path):
    """65536**4 = 2**64 wrapped to 0 in an int64 product: the old reader then failed in reshape."""
    path = tmp_path / "wrap"
    path.write_bytes(idx_header(0x08, 65536, 65536, 65536, 65536))
    with pytest.raises(DataFormatError, match="wrap: declared shape .* over the limit"):
        read_idx(path)


def test_corrupt_gzip_data_is_a_data_format_error(tmp_path):
    """A damaged deflate stream raised zlib.error, which is not even a ValueError."""
    raw = bytearray(gzip.compress(idx_header(0x08, 100) + bytes(range(100)), mtime=0))
    raw[15] ^= 0xFF
    (tmp_path / "damaged.gz").write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="damaged.gz: cannot read"):
        read_idx(tmp_path / "damaged.gz")


def write_pair(folder, images: bytes, labels: bytes):
    (folder / "train-images-idx3-ubyte").write_bytes(images)
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)


def test_idx_pair_checks_types_and_label_range(tmp_path):
    images = idx_header(0x08, 2, 2, 2) + bytes(8)
    write_pair(tmp_path, images, idx_header(0x08, 2) + bytes([3, 12]))
    with pytest.raises(
        DataFormatError, match="train-labels-idx1-ubyte: labels must be class ids 0 to 9, got values 3 to 12"
    ):
        load_idx_pair(tmp_path, "train")
    write_pair(tmp_path, idx_header(0x0D, 2, 1, 1) + bytes(8), idx_header(0x08, 2) + bytes(2))
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte: images must be unsigned bytes"):
        load_idx_pair(tmp_path, "train")
    write_pair(tmp_path, images, idx_header(0x0D, 2) + bytes(8))
    with pytest.raises(DataFormatError, match="labels must be class ids 0 to 9, got float32"):
        load_idx_pair(tmp_path, "train")


# CIFAR


def test_cifar_plain_file_of_wrong_size_is_refused_before_reading(tmp_path):
    (tmp_path / "b.bin").write_bytes(bytes(RECORD_BYTES * 2 + 1))
    with pytest.raises(DataFormatError, match=r"b.bin: 6,147 bytes is not a whole number of 3073-byte"):
        read_cifar_batch(tmp_path / "b.bin")


def test_cifar_corrupt_gzip(tmp_path):
    raw = bytearray(gzip.compress(bytes(RECORD_BYTES * 2), mtime=0))
    raw[12] ^= 0x55
    (tmp_path / "b.bin.gz").write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="b.bin.gz: cannot read"):
        read_cifar_batch(tmp_path / "b.bin.gz")


def test_cifar_meta_file_limits(tmp_path):
    (tmp_path / "batches.meta.txt").write_text("\n".join(["cat"] * 10))
    with pytest.raises(
        DataFormatError, match="batches.meta.txt: expected 10 different class names, found 10 with repeats"
    ):
        cifar_class_names(tmp_path)
    (tmp_path / "batches.meta.txt").write_bytes(b"x" * (1 << 17))
    with pytest.raises(DataFormatError, match="batches.meta.txt: over 65,536 bytes"):
        cifar_class_names(tmp_path)


# images


def png(image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def test_16_bit_png_is_scaled_not_clipped():
    """Pillow's own I;16 -> L conversion clips every value above 255 to white."""
    values = (np.arange(16).reshape(4, 4) * 4369).astype(np.uint16)  # 0 .. 65535
    pixels, notes = read_image(png(Image.fromarray(values)), (4, 4, 1))
    np.testing.assert_allclose(pixels[..., 0], values / 65535, atol=1e-6)
    assert "scaled 16-bit I;16 values to [0, 1]" in notes
    rgb, _ = read_image(png(Image.fromarray(values)), (4, 4, 3))
    assert rgb.shape == (4, 4, 3) and np.allclose(rgb[..., 0], rgb[..., 2])


def test_cmyk_palette_and_transparency_are_converted(tmp_path):
    cmyk = Image.new("CMYK", (6, 4), (0, 255, 255, 0))  # pure red in CMYK
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=95)
    pixels, notes = read_image(buffer.getvalue(), (4, 6, 3))
    assert "converted CMYK to RGB" in notes and pixels[..., 0].min() > 0.9 and pixels[..., 1].max() < 0.1
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
    pixels, notes = read_image(png(palette, transparency=1), (4, 4, 1))
    assert notes[0] == "flattened transparency onto white" and np.allclose(pixels, 1.0)
    gray = Image.new("L", (4, 4), 0)
    pixels, _ = read_image(png(gray, transparency=0), (4, 4, 1))
    assert np.allclose(pixels, 1.0)  # a transparent colour key, like a transparent pixel


def test_exif_orientation_is_honoured():
    image = Image.new("L", (6, 2), 0)
    image.putpixel((5, 0), 255)  # top right, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to view
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    pixels, notes = read_image(buffer.getvalue(), (6, 2, 1))
    assert "rotated upright as its EXIF orientation says" in notes
    assert pixels.shape == (6, 2, 1) and np.unravel_index(pixels.argmax(), pixels.shape)[:2] == (5, 1)


def with_ihdr_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims another size (its CRC fixed), keeping the small pixel data."""
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + data[33:]


def test_decompression_bomb_is_refused_before_decoding():
    bomb = with_ihdr_size(png(Image.new("L", (4, 4))), 100_000, 100_000)
    before = peak_mb()
    with pytest.raises(ImageFileError, match="uploaded image: image too large"):
        read_image(bomb, (8, 8, 1))
    assert peak_mb() - before < 50


def test_tall_image_within_the_limit_costs_its_decoding_only():
    """6 x 7,000,000 pixels (under the limit) from a tiny file: shrunk right after decoding, before
    transparency is flattened or modes converted (which took over 1 GB before)."""
    tall = with_ihdr_size(png(Image.new("RGBA", (6, 4))), 6, 7_000_000)
    assert 6 * 7_000_000 < MAX_IMAGE_PIXELS
    before = peak_mb()
    pixels, notes = read_image(tall, (8, 8, 3))
    assert pixels.shape == (8, 8, 3) and "resized 7000000x6 to 8x8 (height x width)" in notes
    assert peak_mb() - before < 300


def test_formats_outside_the_list_and_folders_are_refused(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "TGA")
    with pytest.raises(ImageFileError, match="uploaded image: not an image file pillow can read"):
        read_image(buffer.getvalue(), (4, 4, 3))
    with pytest.raises(ImageFileError, match="a folder, not an image file"):
        read_image(tmp_path, (4, 4, 3))
    with pytest.raises(FileNotFoundError, match="none.png: no such image file"):
        read_image(tmp_path / "none.png", (4, 4, 3))


def test_file_objects_and_bytes_read_like_paths(tmp_path):
    Image.new("RGB", (5, 5), (255, 0, 0)).save(tmp_path / "red.png")
    from_path, notes = read_image(tmp_path / "red.png", (5, 5, 3))
    with open(tmp_path / "red.png", "rb") as f:
        from_file, _ = read_image(f, (5, 5, 3))
    from_bytes, _ = read_image((tmp_path / "red.png").read_bytes(), (5, 5, 3))
    np.testing.assert_array_equal(from_path, from_file)
    np.testing.assert_array_equal(from_path, from_bytes)
    assert notes == []


# image folders (convscope.data.folder reads every file with read_image)


def test_folder_of_hostile_images(tmp_path):
    """Damaged, bomb and odd images in a folder data set: one ImageFileError naming the file, or with
    skip_bad a warning; the 16-bit image is read, scaled."""
    import warnings

    from convscope.data import SkippedImagesWarning, load

    for name in ("cats", "dogs"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        Image.new("RGB", (12, 12), (200, 10, 10)).save(tmp_path / "pets" / name / "ok.png")
    (tmp_path / "pets" / "cats" / "wide.png").write_bytes(
        png(Image.fromarray(np.full((4, 4), 60000, np.uint16)))
    )
    (tmp_path / "pets" / "dogs" / "bomb.png").write_bytes(
        with_ihdr_size(png(Image.new("L", (4, 4))), 100_000, 100_000)
    )
    (tmp_path / "pets" / "dogs" / "noise.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(ImageFileError, match=r"pets/dogs/bomb.png: image too large"):
        load(f"folder:{tmp_path / 'pets'}", image_size=(8, 8), val_fraction=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedImagesWarning)
        data = load(
            f"folder:{tmp_path / 'pets'}", image_size=(8, 8), grayscale=True, val_fraction=0, skip_bad=True
        )
    assert "skipped 2 unreadable image(s)" in str(caught[0].message)
    assert data.images.shape == (3, 8, 8, 1) and data.labels.tolist() == [0, 0, 1]
    assert data.images[1].min() == pytest.approx(60000 / 65535, abs=1e-4)  # cats/wide.png, scaled
