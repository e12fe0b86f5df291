"""Data sets as (N, H, W, C) float32 images in [0, 1] and (N,) int64 class ids."""

from typing import NamedTuple

import numpy as np

from convscope.data.cifar import load_cifar10
from convscope.data.digits import load_digits_split
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
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar10:CLASS,CLASS,...")


class Dataset(NamedTuple):
    images: np.ndarray  # (N, H, W, C) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    class_names: list


def _need_dir(name, data_dir):
    if data_dir is None:
        raise ValueError(f"data set {name!r} needs data_dir: the folder holding its files")


def load(name: str, data_dir=None, split: str = "train") -> Dataset:
    """Load a data set by name.

    'digits': scikit-learn's bundled 8x8 digits (offline). 'mnist', 'fashion-mnist': IDX files (gz or
    plain) in `data_dir`. 'cifar10': CIFAR-10 binary batches in `data_dir`; 'cifar10:cat,dog' keeps
    the named classes, relabelled 0..k-1 in that order.
    """
    if name == "cifar10" or name.startswith("cifar10:"):
        _need_dir(name, data_dir)
        classes = [c.strip() for c in name.partition(":")[2].split(",") if c.strip()] or None
        return Dataset(*load_cifar10(data_dir, split, classes))
    if name == "digits":
        x, y = load_digits_split(split)
        return Dataset(x, y, DIGIT_CLASSES)
    if name in ("mnist", "fashion-mnist"):
        _need_dir(name, data_dir)
        x, y = load_idx_pair(data_dir, split)
        return Dataset(x, y, FASHION_MNIST_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "DataFormatError", "Dataset", "load", "read_idx"]
