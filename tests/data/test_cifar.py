import gzip

import numpy as np
import pytest

from convscope.data import DataFormatError, load
from convscope.data.cifar import RECORD_BYTES, read_cifar_batch


def write_batch(path, images, labels, compress=False):
    """images (N, 32, 32, 3) uint8 -> the CIFAR binary records (label, R plane, G plane, B plane)."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    raw = np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


@pytest.fixture
def tiny_cifar(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = np.array([3, 5, 0, 3, 9, 5], dtype=np.uint8)
    write_batch(tmp_path / "data_batch_1.bin", images[:4], labels[:4])
    write_batch(tmp_path / "data_batch_2.bin.gz", images[4:], labels[4:], compress=True)
    write_batch(tmp_path / "test_batch.bin", images[:2], labels[:2])
    return tmp_path, images, labels


def test_channels_become_last_and_batches_concatenate(tiny_cifar):
    folder, images, labels = tiny_cifar
    data = load("cifar10", folder, "train")
    assert data.images.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(data.images * 255, images, atol=1e-4)
    assert data.labels.tolist() == labels.tolist() and data.class_names[3] == "cat"


def test_class_subset_is_relabelled_in_the_given_order(tiny_cifar):
    folder, images, _ = tiny_cifar
    data = load("cifar10:dog,cat", folder, "train")
    assert data.class_names == ["dog", "cat"] and data.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(data.images[1] * 255, images[1], atol=1e-4)
    with pytest.raises(ValueError, match="unknown CIFAR-10 class"):
        load("cifar10:cat,unicorn", folder, "train")


def test_truncated_and_bad_labels(tmp_path):
    (tmp_path / "b.bin").write_bytes(b"\x00" * (RECORD_BYTES + 5))
    with pytest.raises(DataFormatError, match="b.bin: .* not a whole number"):
        read_cifar_batch(tmp_path / "b.bin")
    (tmp_path / "c.bin").write_bytes(b"\x0c" + b"\x00" * (RECORD_BYTES - 1))
    with pytest.raises(DataFormatError, match="c.bin: record 0 has label 12"):
        read_cifar_batch(tmp_path / "c.bin")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data_batch"):
        load("cifar10", tmp_path, "train")


def test_shared_cat_dog_subset(shared_data):
    train = load("cifar10:cat,dog", shared_data / "cifar10-catdog", "train")
    test = load("cifar10:cat,dog", shared_data / "cifar10-catdog", "test")
    assert train.images.shape == (10000, 32, 32, 3) and test.images.shape == (2000, 32, 32, 3)
    assert np.bincount(train.labels).tolist() == [5000, 5000] and train.class_names == ["cat", "dog"]
