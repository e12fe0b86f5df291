import gzip

import numpy as np
import pytest

from convscope.data import DataFormatError, NoTestSplitError, load
from convscope.data.cifar import RECORD_BYTES, read_cifar_batch
from convscope.train import holdout_last


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


# ---------------------------------------------------------------- a folder without a test split


@pytest.fixture
def train_only_cifar(tmp_path):
    """Two gzip'd training batches of 8 and 4 images, no test_batch.bin (like ../shared/data/cifar10)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    write_batch(tmp_path / "data_batch_1.bin.gz", images[:8], labels[:8], compress=True)
    write_batch(tmp_path / "data_batch_2.bin.gz", images[8:], labels[8:], compress=True)
    return tmp_path, images, labels


def test_a_folder_without_a_test_batch_trains_and_says_it_has_no_test_split(train_only_cifar):
    folder, images, labels = train_only_cifar
    train = load("cifar10", folder, "train")
    assert train.labels.tolist() == labels.tolist()
    with pytest.raises(NoTestSplitError, match=r"has no test split: no test_batch.bin \(or .bin.gz\)"):
        load("cifar10", folder, "test")
    with pytest.raises(FileNotFoundError, match="neither test_batch.bin nor test_batch.bin.gz") as error:
        load("cifar10", folder.parent / "nothing-here", "test")  # no batches at all: the plain error
    assert not isinstance(error.value, NoTestSplitError)


def test_holdout_last_keeps_the_order_and_takes_exactly_the_last_images():
    x, y = np.arange(10.0).reshape(10, 1), np.arange(10)
    (x_train, y_train), (x_val, y_val) = holdout_last(x, y, 3)
    assert y_train.tolist() == list(range(7)) and y_val.tolist() == [7, 8, 9]
    np.testing.assert_array_equal(x_val[:, 0], [7.0, 8.0, 9.0])
    for bad in (0, 10, 2.5, True):
        with pytest.raises(ValueError, match=r"the last .* of 10 images needs a whole number from 1 to 9"):
            holdout_last(x, y, bad)


def test_cli_trains_validates_on_the_last_images_and_evaluates_them(train_only_cifar, tmp_path, capsys):
    from convscope.cli import main

    folder, _, labels = train_only_cifar
    data = ["--dataset", "cifar10", "--data-dir", str(folder)]
    out = tmp_path / "m.convscope"
    args = ["train", *data, "--epochs", "1", "--batch-size", "4", "--val-split", "last:4", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "validation: 4 of the 12 training images held out (--val-split last:4, the last ones)" in printed
    assert f"note: {folder} has no test split (no test_batch.bin): train with --val-split" in printed
    assert "val_accuracy=" in printed

    assert main(["evaluate", str(out), *data, "--split", "val", "--val-split", "last:4"]) == 0
    printed = capsys.readouterr().out
    assert (
        "validation: the 4 of the 12 training images held out (--val-split last:4, the last ones)" in printed
    )
    assert "val accuracy:" in printed

    assert main(["evaluate", str(out), *data]) == 2  # the default split is test: there is none
    err = capsys.readouterr().err
    assert "has no test split" in err and "--split val and the same --val-split" in err
    assert main(["evaluate", str(out), *data, "--split", "val"]) == 2
    assert "--split val needs the --val-split" in capsys.readouterr().err
    assert main(["evaluate", str(out), *data, "--split", "val", "--val-split", "last:12"]) == 2
    assert "the last 12 of 12 images needs a whole number from 1 to 11" in capsys.readouterr().err


def test_cli_seeded_split_is_the_same_in_train_and_evaluate(train_only_cifar, tmp_path, capsys):
    from convscope.cli import main

    folder, _, _ = train_only_cifar
    data = ["--dataset", "cifar10", "--data-dir", str(folder)]
    out = tmp_path / "m.convscope"
    train = ["train", *data, "--epochs", "1", "--val-split", "0.25", "--seed", "3", "--out", str(out)]
    assert main(train) == 0
    trained = capsys.readouterr().out
    val_accuracy = float(trained.rsplit("val_accuracy=", 1)[1].split()[0].rstrip(","))
    assert main(["evaluate", str(out), *data, "--split", "val", "--val-split", "0.25", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "held out (--val-split 0.25, seed 3)" in printed
    assert float(printed.split("val accuracy:")[1].split()[0]) == pytest.approx(val_accuracy, abs=1e-4)


def test_shared_cifar10_has_five_training_batches_and_no_test_split(shared_data):
    from convscope.data.cifar import _split_files

    folder = shared_data / "cifar10"
    if not folder.is_dir():
        pytest.skip(f"SHARED DATA MISSING: {folder}")
    files = _split_files(folder, "train")
    assert [p.rsplit("/", 1)[1] for p in files] == [f"data_batch_{i}.bin.gz" for i in range(1, 6)]
    images, labels = read_cifar_batch(files[-1])  # the last 10,000: the paper's 5,000 are its second half
    assert images.shape == (10000, 32, 32, 3) and labels.shape == (10000,)
    assert set(np.unique(labels).tolist()) == set(range(10))
    with pytest.raises(NoTestSplitError, match="has no test split"):
        load("cifar10", folder, "test")
