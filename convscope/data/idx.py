"""IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain.

Layout: 2 zero bytes, a type code, the number of dimensions d, then d big-endian uint32 sizes,
then the values in row-major order (big-endian for multi-byte types).
"""

import gzip
import math
import os
import zlib

import numpy as np

IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_BYTES = 2**31  # a declared size above this is refused before anything is allocated
MAX_GZIP_RATIO = 1100  # deflate cannot expand data more than ~1032 times
READ_CHUNK = 1 << 24  # bytes read at a time, so memory grows only with data that is really there
GZIP_ERRORS = (OSError, EOFError, zlib.error)  # what gzip raises on damaged data (BadGzipFile is an OSError)


class DataFormatError(ValueError):
    """A data file that cannot be read as the format it claims; the message names the file."""


def is_gzip(path) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def open_maybe_gzip(path):
    """A binary file object, decompressing on the fly if the file starts with the gzip magic."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def read_at_most(stream, limit: int) -> bytearray:
    """Up to `limit` bytes from `stream`, read in chunks (a short file allocates only what it holds)."""
    data = bytearray()
    while len(data) < limit:
        part = stream.read(min(READ_CHUNK, limit - len(data)))
        if not part:
            break
        data += part
    return data


def _read_exact(stream, n: int, path, what: str) -> bytearray:
    data = read_at_most(stream, n)
    if len(data) != n:
        raise DataFormatError(f"{path}: truncated IDX file: {what} needs {n:,} bytes, found {len(data):,}")
    return data


def _header(stream, path):
    """(dtype, shape) from an IDX header: 2 zero bytes, a type code, d, then d big-endian uint32 sizes."""
    header = _read_exact(stream, 4, path, "the header")
    if header[:2] != b"\x00\x00" or header[2] not in IDX_TYPES or header[3] == 0:
        raise DataFormatError(
            f"{path}: not an IDX file (magic bytes {header.hex()}, expected 0000 then a "
            "type code 08/09/0b/0c/0d/0e and a dimension count)"
        )
    dims = np.frombuffer(_read_exact(stream, 4 * header[3], path, "the dimensions"), dtype=">u4")
    return IDX_TYPES[header[2]], tuple(int(d) for d in dims)


def _check_declared_size(path, compressed: bool, file_size: int, header_bytes: int, shape, nbytes: int):
    """Refuse a declared size that is over the limit, or that the file cannot hold, before reading it."""
    if nbytes > MAX_IDX_BYTES:
        raise DataFormatError(f"{path}: declared shape {shape} needs {nbytes:,} bytes, over the limit")
    if compressed and header_bytes + nbytes > MAX_GZIP_RATIO * file_size:
        raise DataFormatError(
            f"{path}: declared shape {shape} needs {nbytes:,} bytes, more than a {file_size:,}-byte gzip "
            "file can hold (truncated, or not an IDX file)"
        )
    if not compressed and file_size < header_bytes + nbytes:
        raise DataFormatError(
            f"{path}: truncated IDX file: shape {shape} needs {header_bytes + nbytes:,} bytes, "
            f"the file has {file_size:,}"
        )
    if not compressed and file_size > header_bytes + nbytes:
        raise DataFormatError(f"{path}: extra bytes after the {shape} values declared in the header")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gz or plain) into an array of its declared shape, native byte order.

    A declared size is checked against the limit and against what the file can hold before any of
    it is read; gzip data is read in chunks. Every problem is a DataFormatError naming the file.
    """
    path = os.fspath(path)
    try:
        compressed, file_size = is_gzip(path), os.path.getsize(path)
        with open_maybe_gzip(path) as stream:
            dtype, shape = _header(stream, path)
            nbytes = math.prod(shape) * dtype.itemsize
            _check_declared_size(path, compressed, file_size, 4 + 4 * len(shape), shape, nbytes)
            data = _read_exact(stream, nbytes, path, f"shape {shape}")
            if stream.read(1):
                raise DataFormatError(f"{path}: extra bytes after the {shape} values declared in the header")
    except GZIP_ERRORS as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DataFormatError(f"{path}: cannot read: {error}") from None
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape(shape)


def find_file(folder, stem: str):
    """`stem` or `stem.gz` inside `folder`, whichever exists; FileNotFoundError names both."""
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"neither {stem} nor {stem}.gz found in {folder}")


def load_idx_pair(folder, split: str, num_classes: int = 10):
    """MNIST-style images (N, 28, 28, 1) float32 in [0, 1] and labels (N,) int64 from a folder.

    split 'train' reads train-images-idx3-ubyte / train-labels-idx1-ubyte, 'test' reads t10k-*.
    Images must be unsigned bytes, labels whole numbers in [0, num_classes).
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images_path = find_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = find_file(folder, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not form a data set "
            "(expected (N, H, W) images and (N,) labels)"
        )
    if images.dtype != np.uint8 or min(images.shape[1:]) < 1:
        raise DataFormatError(f"{images_path}: images must be unsigned bytes (type 08), got {images.dtype}")
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        found = f"values {labels.min()} to {labels.max()}" if labels.dtype.kind in "iu" else labels.dtype
        raise DataFormatError(f"{labels_path}: labels must be class ids 0 to {num_classes - 1}, got {found}")
    x = (images.astype(np.float32) / 255.0)[..., None]
    return x, labels.astype(np.int64)
