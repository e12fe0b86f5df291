import gzip
import struct

import numpy as np
import pytest

from convscope.data import DataFormatError, load, read_idx
from convscope.data.idx import load_idx_pair


def write_idx(path, array, compress=False, type_code=0x08):
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x", images, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), images)


def test_read_idx_multibyte_types(tmp_path):
    values = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=np.float32)
    write_idx(tmp_path / "f", values, type_code=0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), values)


def test_bad_magic_names_the_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 20)
    with pytest.raises(DataFormatError, match="bad: not an IDX file"):
        read_idx(tmp_path / "bad")


def test_truncated_file(tmp_path):
    write_idx(tmp_path / "t", np.zeros((10, 5, 5), dtype=np.uint8))
    raw = (tmp_path / "t").read_bytes()
    (tmp_path / "t").write_bytes(raw[:-7])
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(tmp_path / "t")


def test_extra_bytes(tmp_path):
    write_idx(tmp_path / "e", np.zeros((2, 2), dtype=np.uint8))
    with open(tmp_path / "e", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DataFormatError, match="extra bytes"):
        read_idx(tmp_path / "e")


def test_huge_declared_size_is_refused_before_allocating(tmp_path):
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 2**31 - 1, 60000, 60000)
    (tmp_path / "huge").write_bytes(header)
    with pytest.raises(DataFormatError, match="over the limit"):
        read_idx(tmp_path / "huge")


def test_load_idx_pair_scales_to_unit_range(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.full((3, 4, 4), 255, dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2], dtype=np.uint8), compress=True)
    x, y = load_idx_pair(tmp_path, "train")
    assert x.shape == (3, 4, 4, 1) and x.dtype == np.float32 and x.max() == 1.0
    assert y.tolist() == [0, 1, 2]


def test_mismatched_counts(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 4, 4), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="do not form a data set"):
        load_idx_pair(tmp_path, "test")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load("fashion-mnist", tmp_path)


def test_fashion_mnist_from_shared_data(shared_data):
    folder = shared_data / "fashion-mnist"
    train = load("fashion-mnist", folder, split="train")
    test = load("fashion-mnist", folder, split="test")
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.float32
    assert test.images.shape == (10000, 28, 28, 1)
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.class_names[9] == "Ankle boot"


def test_mnist_test_split_from_shared_data(shared_data):
    test = load("mnist", shared_data / "mnist", split="test")
    assert test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
