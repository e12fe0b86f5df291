"""CIFAR-10 in its official binary format, gzip-compressed or plain.

Each file is a sequence of 3,073-byte records: one label byte (0-9), then 1,024 red, 1,024 green and
1,024 blue bytes, each a 32x32 image stored row by row. `batches.meta.txt` names the classes, one per
line. Training files are `data_batch_1.bin` ... `data_batch_5.bin`; the test file is `test_batch.bin`.
A folder may hold the training batches only (no test split): asking it for split 'test' raises
NoTestSplitError, which says so; hold out part of the training images instead.
"""

import glob
import os

import numpy as np

from convscope.data.idx import (
    GZIP_ERRORS,
    MAX_GZIP_RATIO,
    MAX_IDX_BYTES,
    DataFormatError,
    find_file,
    is_gzip,
    open_maybe_gzip,
    read_at_most,
)

RECORD_BYTES = 1 + 3 * 32 * 32
MAX_META_BYTES = 1 << 16
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def _read_records(path) -> bytearray:
    """The bytes of a CIFAR file, refusing (before reading) a plain file of the wrong size and (while
    reading) more than MAX_IDX_BYTES or MAX_GZIP_RATIO times a gzip file's size."""
    size = os.path.getsize(path)
    if not is_gzip(path) and (size > MAX_IDX_BYTES or size == 0 or size % RECORD_BYTES):
        raise DataFormatError(
            f"{path}: {size:,} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR records "
            f"(truncated, over the {MAX_IDX_BYTES:,}-byte limit, or not a CIFAR-10 binary file)"
        )
    limit = min(MAX_IDX_BYTES, MAX_GZIP_RATIO * size)
    with open_maybe_gzip(path) as stream:
        raw = read_at_most(stream, limit + 1)
    if len(raw) > limit:
        raise DataFormatError(f"{path}: decompresses to more than {limit:,} bytes, not a CIFAR batch")
    return raw


def read_cifar_batch(path):
    """One CIFAR binary file -> images (N, 32, 32, 3) uint8 and labels (N,) uint8."""
    path = os.fspath(path)
    try:
        raw = _read_records(path)
    except GZIP_ERRORS as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DataFormatError(f"{path}: cannot read: {error}") from None
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise DataFormatError(
            f"{path}: {len(raw):,} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR records "
            "(truncated or not a CIFAR-10 binary file)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise DataFormatError(f"{path}: record {bad} has label {labels[bad]}, CIFAR-10 labels are 0-9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.copy()


def cifar_class_names(folder) -> list:
    """The names in batches.meta.txt (one per line), or the official ten if the file is absent."""
    path = os.path.join(folder, "batches.meta.txt")
    if not os.path.isfile(path):
        return list(CIFAR10_CLASSES)
    with open(path, "rb") as f:
        raw = f.read(MAX_META_BYTES + 1)
    if len(raw) > MAX_META_BYTES:
        raise DataFormatError(
            f"{path}: over {MAX_META_BYTES:,} bytes, not a list of {len(CIFAR10_CLASSES)} names"
        )
    names = [line.strip() for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if len(names) != len(CIFAR10_CLASSES) or len(set(names)) != len(names):
        raise DataFormatError(
            f"{path}: expected {len(CIFAR10_CLASSES)} different class names, found {len(names)}"
            + (" with repeats" if len(set(names)) != len(names) else "")
        )
    return names


class NoTestSplitError(FileNotFoundError):
    """A CIFAR folder with training batches but no test_batch.bin[.gz]."""


def has_test_split(folder) -> bool:
    """False for a folder of CIFAR training batches without test_batch.bin[.gz], else True."""
    try:
        _split_files(folder, "test")
    except NoTestSplitError:
        return False
    except FileNotFoundError:
        pass
    return True


def _split_files(folder, split: str) -> list:
    if split == "test":
        try:
            return [find_file(folder, "test_batch.bin")]
        except FileNotFoundError:
            if not glob.glob(os.path.join(folder, "data_batch_*.bin*")):
                raise
            raise NoTestSplitError(
                f"{folder} has no test split: no test_batch.bin (or .bin.gz), only training batches "
                "(data_batch_*.bin); hold out part of them for validation instead"
            ) from None
    if split != "train":
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    found = sorted(
        {p[:-3] if p.endswith(".gz") else p for p in glob.glob(os.path.join(folder, "data_batch_*.bin*"))}
    )
    if not found:
        raise FileNotFoundError(f"no data_batch_*.bin (or .bin.gz) files found in {folder}")
    return [find_file(folder, os.path.basename(p)) for p in found]


def load_cifar10(folder, split: str, classes=None):
    """Images (N, 32, 32, 3) float32 in [0, 1], labels (N,) int64 and class names.

    `classes` (a list of names) keeps only those classes, relabelled 0..k-1 in the given order.
    """
    batches = [read_cifar_batch(path) for path in _split_files(folder, split)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches]).astype(np.int64)
    names = cifar_class_names(folder)
    if classes:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"unknown CIFAR-10 class(es) {unknown}; known: {', '.join(names)}")
        wanted = [names.index(c) for c in classes]
        keep = np.isin(labels, wanted)
        relabel = np.full(len(names), -1, dtype=np.int64)
        relabel[wanted] = np.arange(len(wanted))
        empty = [c for c, index in zip(classes, wanted, strict=True) if not np.any(labels == index)]
        if empty:
            held = [names[i] for i in np.unique(labels)]
            raise ValueError(
                f"{folder}: the {split} split has no images of {', '.join(empty)} (its images are of "
                f"{', '.join(held)})"
            )
        images, labels, names = images[keep], relabel[labels[keep]], list(classes)
    return images.astype(np.float32) / 255.0, labels, names
