"""What several commands share: the argument parser class, the option types (each error in the flag's
own words), the data-set options and how a data set is loaded for a command."""

import argparse
import math
import sys

REPORT_TITLE = "Inside a convolutional neural network"
TTA_HELP = (
    "test-time augmentation: average the class probabilities of each image and its mirror image "
    "(for models trained with --augment)"
)


# option types: each turns the text of one flag into its value, or says what fits


def padding(text):
    """--padding: 'same', 'valid' or a number of zero rows and columns added on every side."""
    if text in ("same", "valid"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"must be 'same', 'valid' or a whole number >= 0, got {text!r}")


def positive_int(text):
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")


def non_negative_int(text):
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")


def float_in(text, low, high, what):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value < high:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def non_negative_float(text):
    return float_in(text, 0.0, math.inf, "a number >= 0")


def smoothing(text):
    return float_in(text, 0.0, 1.0, "a number from 0 up to (not including) 1")


def image_size(text):
    """--image-size: N (square) or HEIGHTxWIDTH, in pixels."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.isdigit() and int(p) > 0 for p in parts):
        return (int(parts[0]), int(parts[-1]))
    raise argparse.ArgumentTypeError(f"must be N or HEIGHTxWIDTH in pixels, like 32 or 24x32, got {text!r}")


# data sets


def add_data_arguments(sub, default_dataset):
    """--dataset, --data-dir and the folder:PATH options."""
    from convscope.data import DATASETS

    sub.add_argument("--dataset", default=default_dataset, help=f"one of: {', '.join(DATASETS)}")
    sub.add_argument(
        "--data-dir", help="folder with the data set's files (IDX for mnist, fashion-mnist; CIFAR binary)"
    )
    add_folder_arguments(sub)


def add_folder_arguments(sub):
    """Options of folder:PATH data sets (one subfolder of images per class)."""
    group = sub.add_argument_group("folder:PATH data sets (one subfolder of PNG/JPEG images per class)")
    group.add_argument(
        "--image-size",
        type=image_size,
        metavar="N|HxW",
        help="resize every image to this (default 32x32 for train; a model's own size for evaluate)",
    )
    group.add_argument("--grayscale", action="store_true", help="read the images as 1-channel grayscale")
    group.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="share of each class held out as the test split, drawn with seed 0 (default 0.2; a folder "
        "with train/ and test/ subfolders uses those); give evaluate the same value as train",
    )
    group.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable images (counted, named) instead of failing"
    )


def load_split(dataset, data_dir, split, args=None, input_shape=None):
    """One split of a data set. A folder:PATH data set takes --image-size, --grayscale, --val-fraction and
    --skip-bad from `args`, and the size and mode of `input_shape` (a model's) where those are not given;
    the images it skips are printed as warnings."""
    import warnings

    from convscope import data

    if dataset != "folder" and not dataset.startswith("folder:"):
        return data.load(dataset, data_dir=data_dir, split=split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", data.SkippedImagesWarning)
        loaded = data.load(dataset, data_dir=data_dir, split=split, **folder_options(args, input_shape))
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return loaded


def folder_options(args, input_shape):
    from convscope.data.folder import DEFAULT_VAL_FRACTION

    size, grayscale = getattr(args, "image_size", None), getattr(args, "grayscale", False)
    if input_shape is not None:
        size, grayscale = size or tuple(input_shape[:2]), grayscale or input_shape[2] == 1
    val_fraction = getattr(args, "val_fraction", None)
    return {
        "image_size": size,
        "grayscale": grayscale,
        "val_fraction": DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction,
        "skip_bad": getattr(args, "skip_bad", False),
    }


def check_dataset_fits(model, split, dataset):
    if tuple(split.images.shape[1:]) != tuple(model.input_shape):
        raise ValueError(
            f"the model takes {'x'.join(map(str, model.input_shape))} images but {dataset} images are "
            f"{'x'.join(map(str, split.images.shape[1:]))}"
        )


def print_accuracy(model, dataset, split, tta=False):
    loss, accuracy = model.evaluate(dataset.images, dataset.labels, tta=tta)
    print(f"{split} loss: {loss:.4f}")
    print(f"{split} accuracy: {accuracy:.4f}{' (averaged with mirror images, --tta)' if tta else ''}")
    return accuracy


def report_lead(model) -> str:
    layers = " → ".join(layer.name for layer in model.layers)
    return (
        f"{model.name}: input {'×'.join(map(str, model.input_shape))} → {layers}. Read top to bottom, "
        "like the network: each section is one step."
    )
