"""Fuzz the data-file parsers: IDX (read_idx, load_idx_pair) and CIFAR-10 binary (read_cifar_batch),
plain and gzip: only DataFormatError may come out, quickly, without a huge allocation."""

import struct

import numpy as np
import pytest
from fuzz_helpers import fuzz_settings, mutations_of, run_case, secondary_settings
from hypothesis import given
from hypothesis import strategies as st

from convscope.data import DataFormatError, read_idx
from convscope.data.cifar import RECORD_BYTES, read_cifar_batch
from convscope.data.idx import load_idx_pair


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


IDX_SEEDS = [
    idx_bytes(np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5), 0x08),
    idx_bytes(np.array([0, 1, 2, 9], dtype=np.uint8), 0x08),
    idx_bytes(np.arange(-3, 4, dtype=np.int16), 0x0B),
    idx_bytes(np.array([[1.5, -2.0], [3.0, 0.25]], dtype=np.float32), 0x0D),
    idx_bytes(np.array([1e300], dtype=np.float64), 0x0E),
]
CIFAR_SEEDS = [
    bytes([3]) + bytes(range(256)) * 12,
    (bytes([9]) + bytes(RECORD_BYTES - 1)) * 2,
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-data")


@fuzz_settings
@given(data=mutations_of(IDX_SEEDS, gzip_too=True))
def test_read_idx(folder, data):
    path = folder / "case-idx"
    path.write_bytes(data)
    array = run_case("idx", lambda: read_idx(path), (DataFormatError,))
    if array is not None:
        assert array.dtype.isnative and array.nbytes <= len(data) * 1100


@secondary_settings
@given(images=mutations_of(IDX_SEEDS[:1], gzip_too=True), labels=mutations_of(IDX_SEEDS[1:2]))
def test_load_idx_pair(folder, images, labels):
    pair = folder / "pair"
    pair.mkdir(exist_ok=True)
    (pair / "train-images-idx3-ubyte").write_bytes(images)
    (pair / "train-labels-idx1-ubyte").write_bytes(labels)
    result = run_case("idx pair", lambda: load_idx_pair(pair, "train"), (DataFormatError,))
    if result is not None:
        x, y = result
        assert x.dtype == np.float32 and x.ndim == 4 and 0 <= y.min() and y.max() < 10


@fuzz_settings
@given(
    data=st.one_of(
        mutations_of(CIFAR_SEEDS, gzip_too=True),
        st.lists(st.integers(0, 255), min_size=1, max_size=3).map(
            lambda labels: b"".join(bytes([label]) + bytes(RECORD_BYTES - 1) for label in labels)
        ),
    )
)
def test_read_cifar_batch(folder, data):
    path = folder / "case-cifar"
    path.write_bytes(data)
    result = run_case("cifar", lambda: read_cifar_batch(path), (DataFormatError,))
    if result is not None:
        images, labels = result
        assert images.shape == (len(labels), 32, 32, 3) and labels.max() <= 9
