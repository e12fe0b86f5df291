"""IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain.

Layout: 2 zero bytes, a type code, the number of dimensions d, then d big-endian uint32 sizes,
then the values in row-major order (big-endian for multi-byte types).
"""

import gzip
import os

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


class DataFormatError(ValueError):
    """A data file that cannot be read as the format it claims; the message names the file."""


def open_maybe_gzip(path):
    """A binary file object, decompressing on the fly if the file starts with the gzip magic."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _read_exact(stream, n: int, path, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise DataFormatError(f"{path}: truncated IDX file: {what} needs {n} bytes, found {len(data)}")
    return data


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gz or plain) into an array of its declared shape, native byte order."""
    path = os.fspath(path)
    try:
        with open_maybe_gzip(path) as stream:
            header = _read_exact(stream, 4, path, "the header")
            if header[:2] != b"\x00\x00" or header[2] not in IDX_TYPES or header[3] == 0:
                raise DataFormatError(
                    f"{path}: not an IDX file (magic bytes {header.hex()}, expected 0000 then a "
                    "type code 08/09/0b/0c/0d/0e and a dimension count)"
                )
            dtype, ndim = IDX_TYPES[header[2]], header[3]
            dims = np.frombuffer(_read_exact(stream, 4 * ndim, path, "the dimensions"), dtype=">u4")
            shape = tuple(int(d) for d in dims)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if nbytes > MAX_IDX_BYTES:
                raise DataFormatError(
                    f"{path}: declared shape {shape} needs {nbytes:,} bytes, over the limit"
                )
            data = _read_exact(stream, nbytes, path, f"shape {shape}")
            if stream.read(1):
                raise DataFormatError(f"{path}: extra bytes after the {shape} values declared in the header")
    except (OSError, EOFError, gzip.BadGzipFile) as error:
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


def load_idx_pair(folder, split: str):
    """MNIST-style images (N, 28, 28, 1) float32 in [0, 1] and labels (N,) int64 from a folder.

    split 'train' reads train-images-idx3-ubyte / train-labels-idx1-ubyte, 'test' reads t10k-*.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = read_idx(find_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not form a data set "
            "(expected (N, H, W) images and (N,) labels)"
        )
    x = (images.astype(np.float32) / 255.0)[..., None]
    return x, labels.astype(np.int64)
