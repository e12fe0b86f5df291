"""Folders of image files as data sets: one subfolder per class, like `pets/cats/` and `pets/dogs/`.

    pets/cats/001.jpg, pets/dogs/a.png, ...          one folder: a seeded fraction of each class is 'test'
    pets/train/cats/..., pets/test/cats/... (or val/)  a folder that is already split: its own split

Class names are the sorted subfolder names (of `train/` when the folder is split). Images are found
recursively below each class folder by their extension (hidden files and folders are ignored), read with
`images.read_image`, converted to RGB (or grayscale) and resized to `image_size`.
"""

import os
import warnings

import numpy as np

from convscope.data.idx import DataFormatError
from convscope.data.images import ImageFileError, read_image

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_IMAGE_SIZE = (32, 32)
DEFAULT_VAL_FRACTION = 0.2
SPLITS = ("train", "test", "val")
SHOWN_FILES = 5  # how many file names a warning or an error lists before "and N more"


class SkippedImagesWarning(UserWarning):
    """Unreadable images were skipped (skip_bad=True); the message counts them and names the first few."""


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _listing(names, shown=SHOWN_FILES) -> str:
    """'a, b, c' or 'a, b, c and 4 more'."""
    names = list(names)
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def class_folders(root) -> list:
    """Sorted names of the visible subfolders of `root`: the class names."""
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if _visible(e.name) and e.is_dir())


def image_files(class_dir) -> list:
    """Paths of the image files below `class_dir` (recursively), sorted; DataFormatError if there are none."""
    found, others = [], []
    for parent, subdirs, files in os.walk(class_dir):
        subdirs[:] = sorted(d for d in subdirs if _visible(d))
        for name in sorted(filter(_visible, files)):
            path = os.path.join(parent, name)
            (found if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS else others).append(path)
    if not found:
        seen = f"; it holds {_listing(os.path.relpath(p, class_dir) for p in others)}" if others else ""
        raise DataFormatError(
            f"{class_dir}: empty class folder, no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}){seen}"
        )
    return found


def split_folders(root):
    """(train_dir, test_dir, val_dir) if `root` holds a `train/` folder and a `test/` or `val/` folder, else
    None. test_dir or val_dir is None when that folder is absent."""
    subfolders = set(class_folders(root))
    if "train" not in subfolders or not subfolders & {"test", "val"}:
        return None
    return tuple(os.path.join(root, s) if s in subfolders else None for s in ("train", "test", "val"))


def _check_root(root) -> None:
    if not os.path.exists(root):
        raise FileNotFoundError(f"{root}: no such folder (expected one subfolder of images per class)")
    if not os.path.isdir(root):
        raise DataFormatError(f"{root}: a file, not a folder with one subfolder of images per class")


def _class_names(root) -> list:
    """The sorted class folders of `root`; DataFormatError unless there are at least two."""
    names = class_folders(root)
    if len(names) < 2:
        loose = [n for n in sorted(os.listdir(root)) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        found = f"found only {names[0]!r}" if names else "found none"
        hint = (
            f" ({len(loose)} images lie directly in it: move them into a folder per class)" if loose else ""
        )
        raise DataFormatError(
            f"{root}: a folder data set needs at least 2 class subfolders (like cats/ and dogs/), "
            f"{found}{hint}"
        )
    return names


def fraction_split(paths, split: str, val_fraction: float, seed: int, class_index: int) -> list:
    """The part of one class's sorted `paths` that falls in `split`.

    round(val_fraction * n) files of the class (at least 1 and at most n - 1 when n >= 2 and the fraction
    is above 0) are 'test' (= 'val'), the rest 'train'. The choice depends only on (seed, class_index) and
    the file names, so train and test are disjoint and the same on every run.
    """
    n = len(paths)
    n_test = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    order = np.random.default_rng([seed, class_index]).permutation(n)
    chosen = np.sort(order[:n_test] if split in ("test", "val") else order[n_test:])
    return [paths[i] for i in chosen]


def folder_files(root, split: str = "train", val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0):
    """The files of one split: (class_names, paths, labels (N,) int64), nothing read yet.

    A folder holding `train/` and `test/` (or `val/`) gives those; any other folder is split by
    `fraction_split`.
    """
    root = os.fspath(root)
    _check_root(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be at least 0 and below 1, got {val_fraction!r}")
    presplit = split_folders(root)
    if presplit is not None:
        return _presplit_files(presplit, split)
    if split != "train" and val_fraction == 0:
        raise ValueError(f"{root}: val_fraction=0 keeps every image for training, no {split} split is left")
    names = _class_names(root)
    paths, labels = [], []
    for index, name in enumerate(names):
        chosen = fraction_split(image_files(os.path.join(root, name)), split, val_fraction, seed, index)
        paths += chosen
        labels += [index] * len(chosen)
    return names, paths, np.asarray(labels, dtype=np.int64)


def _presplit_files(presplit, split: str):
    """(class_names, paths, labels) of the split folder chosen by `split`; classes come from train/."""
    train_dir, test_dir, val_dir = presplit
    names = _class_names(train_dir)
    folder = {"train": train_dir, "test": test_dir or val_dir, "val": val_dir or test_dir}[split]
    unknown = sorted(set(class_folders(folder)) - set(names))
    if unknown:
        raise DataFormatError(
            f"{folder}: class folder(s) {', '.join(unknown)} have no counterpart in {train_dir} "
            f"(its classes: {', '.join(names)})"
        )
    paths, labels = [], []
    for index, name in enumerate(names):
        if os.path.isdir(os.path.join(folder, name)):
            found = image_files(os.path.join(folder, name))
            paths += found
            labels += [index] * len(found)
    return names, paths, np.asarray(labels, dtype=np.int64)


def read_images(paths, input_shape, skip_bad: bool = False):
    """Read image files as (N, H, W, C) float32 in [0, 1]; returns (images, kept, skipped).

    kept: a (N,) bool mask over `paths`; skipped: (path, reason) pairs of the unreadable files, which
    raise ImageFileError (naming the file) unless `skip_bad`.
    """
    images = np.empty((len(paths), *input_shape), dtype=np.float32)
    kept = np.ones(len(paths), dtype=bool)
    skipped = []
    for i, path in enumerate(paths):
        try:
            images[i], _ = read_image(path, input_shape)
        except ImageFileError as error:
            if not skip_bad:
                raise ImageFileError(f"{error}; skip_bad=True (--skip-bad) skips unreadable images") from None
            kept[i] = False
            skipped.append((path, str(error).removeprefix(f"{path}: ")))
    return images[kept], kept, skipped


def _input_shape(image_size, grayscale: bool) -> tuple:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise ValueError(f"image_size must be (height, width) in whole pixels >= 1, got {image_size!r}")
    return (int(size[0]), int(size[1]), 1 if grayscale else 3)


def _warn_skipped(root, split: str, skipped) -> None:
    shown = [f"{os.path.relpath(path, root)} ({reason})" for path, reason in skipped]
    warnings.warn(
        f"{root}: skipped {len(skipped)} unreadable image(s) of the {split} split: {_listing(shown)}",
        SkippedImagesWarning,
        stacklevel=3,
    )


def load_folder(
    root,
    split: str = "train",
    image_size=DEFAULT_IMAGE_SIZE,
    grayscale: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    skip_bad: bool = False,
):
    """A folder of class subfolders -> images (N, H, W, C) float32 in [0, 1], labels (N,) int64, class names.

    image_size: (H, W) or one int for square images; grayscale: C=1 instead of RGB's 3. split: 'train',
    'test' or 'val' (the same images as 'test' unless the folder has both test/ and val/). With skip_bad,
    unreadable images are left out and reported as one SkippedImagesWarning; otherwise the first one
    raises ImageFileError naming it.
    """
    input_shape = _input_shape(image_size, grayscale)
    names, paths, labels = folder_files(root, split, val_fraction, seed)
    images, kept, skipped = read_images(paths, input_shape, skip_bad)
    if skipped:
        _check_classes_kept(names, labels, kept, paths, split)
        _warn_skipped(os.fspath(root), split, skipped)
        labels = labels[kept]
    return images, labels, names


def _check_classes_kept(names, labels, kept, paths, split: str) -> None:
    """DataFormatError naming the first class whose every image of `split` was unreadable."""
    for index, name in enumerate(names):
        in_class = labels == index
        if in_class.any() and not kept[in_class].any():
            folder = os.path.dirname(paths[int(np.argmax(in_class))])
            raise DataFormatError(
                f"{folder}: none of the {int(in_class.sum())} images of class {name!r} in the {split} "
                "split could be read"
            )
