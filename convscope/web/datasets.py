"""What the training view can train: built-in recipes (architectures) and data sets (the bundled digits,
and the IDX or CIFAR folders found under the server's --data-dir folders)."""

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from convscope.web.errors import WebError


@dataclass(frozen=True)
class DataSource:
    name: str  # what the page shows and sends back
    kind: str  # a convscope.data.load name: digits, mnist, fashion-mnist, cifar10
    folder: str | None  # chosen by the server; None for the bundled digits
    description: str


BUNDLED = DataSource("digits", "digits", None, "scikit-learn's bundled 8x8 digits (1,437 training images)")


def _has_file(folder: str, prefix: str) -> bool:
    try:
        return any(name.startswith(prefix) for name in os.listdir(folder))
    except OSError:
        return False


def _source_in(folder: str) -> DataSource | None:
    """The data set whose training files lie directly in `folder`, or None."""
    base = os.path.basename(os.path.normpath(folder))
    if _has_file(folder, "train-images-idx3-ubyte"):
        kind = "fashion-mnist" if "fashion" in base.lower() else "mnist"
        return DataSource(base, kind, folder, f"{kind} IDX files in {base}/ (28x28 gray)")
    if _has_file(folder, "data_batch_"):
        return DataSource(base, "cifar10", folder, f"CIFAR-10 batches in {base}/ (32x32 colour)")
    return None


def discover_sources(data_dirs=()) -> dict[str, DataSource]:
    """The bundled digits, then every data set in each --data-dir folder or in its subfolders."""
    sources = {BUNDLED.name: BUNDLED}
    for data_dir in data_dirs:
        data_dir = os.path.abspath(data_dir)
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"{data_dir}: no such data folder")
        candidates = [data_dir] + sorted(
            os.path.join(data_dir, name)
            for name in os.listdir(data_dir)
            if not name.startswith(".") and os.path.isdir(os.path.join(data_dir, name))
        )
        for folder in candidates:
            source = _source_in(folder)
            if source is not None and source.name not in sources:
                sources[source.name] = source
    return sources


def _keep_present_classes(dataset, present=None):
    """Drop classes with no images (a CIFAR-10 subset such as cats and dogs), relabelled 0..k-1."""
    from convscope.data import Dataset

    present = np.unique(dataset.labels) if present is None else present
    if len(present) == len(dataset.class_names):
        return dataset, present
    relabel = np.full(len(dataset.class_names), -1, dtype=np.int64)
    relabel[present] = np.arange(len(present))
    keep = np.isin(dataset.labels, present)
    names = [dataset.class_names[i] for i in present]
    return Dataset(dataset.images[keep], relabel[dataset.labels[keep]], names), present


def load_source(source: DataSource):
    """(train, test or None): the data set's splits as convscope.data.Dataset; test is None if absent."""
    from convscope.data import load

    train, present = _keep_present_classes(load(source.kind, data_dir=source.folder, split="train"))
    try:
        test, _ = _keep_present_classes(load(source.kind, data_dir=source.folder, split="test"), present)
    except (FileNotFoundError, ValueError):
        test = None
    return train, test


@lru_cache(maxsize=16)
def source_info(source: DataSource) -> tuple[tuple, tuple]:
    """(input shape (H, W, C), class names) of a data source's training split, read once per server (the
    designer needs them for every check; loading the split is the one way to know a subset's classes)."""
    train, _ = load_source(source)
    return tuple(int(d) for d in train.images.shape[1:]), tuple(str(n) for n in train.class_names)


def _tiny_cnn(input_shape, num_classes, seed, class_names):
    from convscope.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Softmax
    from convscope.model import Sequential

    layers = [Conv2D(8, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten(), Dense(num_classes), Softmax()]
    return Sequential(layers, input_shape=input_shape, seed=seed, class_names=class_names, name="tiny_cnn")


def _seed_cnn(input_shape, num_classes, seed, class_names):
    from convscope.models import seed_cnn

    return seed_cnn(input_shape, num_classes, seed=seed, class_names=class_names)


def _small_vgg(input_shape, num_classes, seed, class_names):
    from convscope import models

    return models.small_vgg(input_shape, num_classes, seed=seed, class_names=class_names)


def _has_small_vgg() -> bool:
    from convscope import models

    return hasattr(models, "small_vgg")


RECIPES = {
    "seed_cnn": (
        _seed_cnn,
        "the article's CNN: conv 16 + ReLU + pool, conv 32 + ReLU + pool, dense 128, softmax",
    ),
    "tiny_cnn": (_tiny_cnn, "one conv layer of 8 kernels + ReLU + pool, then softmax: trains in seconds"),
}
if _has_small_vgg():
    RECIPES["small_vgg"] = (
        _small_vgg,
        "three VGG blocks [conv 3x3 + batch norm + ReLU] x 2 + pool, global average, dropout, softmax: "
        "for colour images (CIFAR), slow on a CPU",
    )


def build_recipe(name: str, input_shape, num_classes: int, seed: int, class_names):
    """A new, built model of recipe `name` for the data's input shape and classes."""
    if name not in RECIPES:
        raise WebError(422, f"there is no recipe called {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name][0](tuple(input_shape), num_classes, seed, list(class_names))
