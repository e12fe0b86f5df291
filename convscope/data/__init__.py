"""Data sets as (N, H, W, C) float32 images in [0, 1] and (N,) int64 class ids."""

from typing import NamedTuple

import numpy as np

from convscope.data.cifar import NoTestSplitError, load_cifar10
from convscope.data.digits import load_digits_split
from convscope.data.download import cache_dir
from convscope.data.folder import DEFAULT_IMAGE_SIZE, DEFAULT_VAL_FRACTION, SkippedImagesWarning, load_folder
from convscope.data.idx import DataFormatError, load_idx_pair, read_idx

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(d) for d in range(10)]
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar10:CLASS,CLASS,...", "folder:PATH")


class Dataset(NamedTuple):
    images: np.ndarray  # (N, H, W, C) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    class_names: list


def _data_dir(name, data_dir):
    """(folder, from_cache): `data_dir`, else the download cache folder if it exists, else a ValueError."""
    if data_dir is not None:
        return data_dir, False
    cached = cache_dir(name)
    if cached.is_dir():
        return cached, True
    key = name.partition(":")[0]
    raise ValueError(
        f"data set {name!r} needs data_dir: the folder holding its files; or run "
        f"`convscope data download {key}` to fetch them into {cached}"
    )


def _load_files(name, data_dir, split):
    """(images, labels, class_names) of the file-based data sets: mnist, fashion-mnist, cifar10[:...]."""
    folder, from_cache = _data_dir(name, data_dir)
    try:
        if name.startswith("cifar10"):
            classes = [c.strip() for c in name.partition(":")[2].split(",") if c.strip()] or None
            return load_cifar10(folder, split, classes)
        x, y = load_idx_pair(folder, split)
        return x, y, FASHION_MNIST_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    except FileNotFoundError as error:
        if not from_cache:
            raise
        key = name.partition(":")[0]
        raise FileNotFoundError(
            f"{error} (the download cache: run `convscope data download {key}`)"
        ) from None


def _folder_root(name, data_dir):
    """The folder of 'folder:PATH', or of 'folder' with data_dir=PATH."""
    path = name.partition(":")[2]
    if path and data_dir is not None:
        raise ValueError(f"give the folder once: {name!r} or data_dir={str(data_dir)!r}, not both")
    if not path and data_dir is None:
        raise ValueError("data set 'folder' needs its path: 'folder:PATH' (or data_dir=PATH)")
    return path or data_dir


def empty_classes(dataset: Dataset) -> list:
    """The names of `dataset`'s classes that have no images."""
    counts = np.bincount(dataset.labels, minlength=len(dataset.class_names))
    return [name for name, count in zip(dataset.class_names, counts, strict=False) if count == 0]


def check_every_class_present(dataset: Dataset, name: str, split: str) -> Dataset:
    """`dataset` if each of its classes has images, else a ValueError naming the empty ones (a model
    trained on it would claim classes it never saw, and its accuracy would count them as absent)."""
    empty = empty_classes(dataset)
    if not empty:
        return dataset
    held = [c for c in dataset.class_names if c not in empty]
    hint = ""
    if name.startswith("cifar10") and held:
        hint = f": give the classes it holds, --dataset cifar10:{','.join(held)}"
    raise ValueError(
        f"data set {name!r}: the {split} split has no images of {len(empty)} of its "
        f"{len(dataset.class_names)} classes ({', '.join(empty)}){hint}"
    )


def load(
    name: str,
    data_dir=None,
    split: str = "train",
    *,
    image_size=None,
    grayscale: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    skip_bad: bool = False,
) -> Dataset:
    """Load a data set by name.

    'digits': scikit-learn's bundled 8x8 digits (offline). 'mnist', 'fashion-mnist': IDX files (gz or
    plain) in `data_dir`. 'cifar10': CIFAR-10 binary batches in `data_dir`; 'cifar10:cat,dog' keeps
    the named classes, relabelled 0..k-1 in that order. Without `data_dir` these three are read from
    their download cache folder (`convscope data download NAME`, see data/download.py).

    'folder:PATH': one subfolder of PNG/JPEG images per class (see data/folder.py), read as RGB (or,
    with `grayscale`, 1 channel) and resized to `image_size` (H, W) (default 32x32). split 'train' or
    'test' (= 'val'): PATH's own train/ and test/ (or val/) folders if it has them, else a `val_fraction`
    of each class, drawn with `seed`, is 'test'. `skip_bad` leaves out unreadable images, reported as a
    SkippedImagesWarning, instead of raising an error naming the first.
    """
    if name == "folder" or name.startswith("folder:"):
        root = _folder_root(name, data_dir)
        size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        return Dataset(*load_folder(root, split, size, grayscale, val_fraction, seed, skip_bad))
    if image_size is not None or grayscale:
        raise ValueError(f"image_size and grayscale apply to folder:PATH data sets, not to {name!r}")
    if name == "digits":
        x, y = load_digits_split(split)
        return Dataset(x, y, DIGIT_CLASSES)
    if name in ("mnist", "fashion-mnist", "cifar10") or name.startswith("cifar10:"):
        return Dataset(*_load_files(name, data_dir, split))
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")


__all__ = [
    "DATASETS",
    "DataFormatError",
    "Dataset",
    "NoTestSplitError",
    "SkippedImagesWarning",
    "check_every_class_present",
    "empty_classes",
    "load",
    "read_idx",
]
