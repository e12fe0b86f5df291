"""What several commands share: the argument parser class, the option types (each error in the flag's
own words), the data-set options and how a data set is loaded for a command."""

import argparse
import math
import os
import sys

REPORT_TITLE = "Inside a convolutional neural network"
TTA_HELP = (
    "test-time augmentation: average the class probabilities of each image and its mirror image "
    "(for models trained with --augment)"
)


class Parser(argparse.ArgumentParser):
    """argparse, with each mistake on one line (`convscope train: error: argument --epochs: ...`).
    A command may set a `validate_arguments` default: a function run on the parsed arguments before any
    work, for what involves several flags or the file system (it calls `fail`)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def fail(self, flag: str, problem: str):
        """Stop with `argument FLAG: PROBLEM`, worded like argparse's own errors."""
        self.error(f"argument {flag}: {problem}")


def show_defaults(parser):
    """Append '(default X)' to the help of every option of `parser` and its subcommands that has a default
    and does not mention it yet (such as those other modules add: bench's, export's, serve's)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
        elif action.option_strings and action.help and "default" not in action.help:
            if action.default not in (None, False, [], argparse.SUPPRESS):
                action.help += " (default %(default)s)"


def plural(count: int, word: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def shape_text(shape) -> str:
    """(28, 28, 1) -> '28x28x1': height x width (x channels), the order of the arrays."""
    return "x".join(map(str, shape))


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


def positive_float(text):
    value = float_in(text, 0.0, math.inf, "a number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def fraction(text):
    """A number strictly between 0 and 1 (a share of the images)."""
    value = float_in(text, 0.0, 1.0, "a number between 0 and 1, like 0.1")
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, like 0.1, got {text!r}")
    return value


def whole_number(text):
    """Any whole number, negative included (a seed)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def val_split(text):
    """--val-split: FRACTION or last:N -> ('fraction', F) or ('last', N)."""
    kind, _, count = text.partition(":")
    if kind == "last":
        return ("last", positive_int(count))
    try:
        return ("fraction", fraction(text))
    except argparse.ArgumentTypeError:
        problem = f"must be a number between 0 and 1, like 0.1, or last:N, got {text!r}"
        raise argparse.ArgumentTypeError(problem) from None


VAL_SPLIT_HELP = (
    "hold out training images and validate after each epoch: FRACTION (e.g. 0.1) draws that fraction "
    "with --seed (the default kind of split); last:N holds out the last N images in the files' order "
    "(last:5000 on CIFAR-10's 50,000: the ResNet paper's 45k/5k split)"
)
NO_TEST_SPLIT_HINT = (
    "train with --val-split, e.g. --val-split last:5000 as the ResNet paper held out CIFAR-10's last "
    "5,000 training images, and evaluate on the held-out images with --split val and the same --val-split"
)


def hold_out(dataset, split, seed):
    """((train images, labels), (validation images, labels)) of a Dataset by a --val-split value, and
    how they were split, for printing."""
    from convscope.train import holdout_last, validation_split

    kind, amount = split
    if kind == "last":
        return holdout_last(
            dataset.images, dataset.labels, amount
        ), f"--val-split last:{amount}, the last ones"
    return validation_split(
        dataset.images, dataset.labels, amount, seed=seed
    ), f"--val-split {amount}, seed {seed}"


def has_no_test_split(args) -> bool:
    """True for a CIFAR-10 folder with training batches and no test batch."""
    from convscope.data.cifar import has_test_split

    return (
        args.dataset.startswith("cifar10") and args.data_dir is not None and not has_test_split(args.data_dir)
    )


def existing_file(text):
    if os.path.isfile(text):
        return text
    what = "a folder, not a file" if os.path.isdir(text) else "no such file"
    raise argparse.ArgumentTypeError(f"{text}: {what}")


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

    sub.add_argument(
        "--dataset", default=default_dataset, help=f"one of: {', '.join(DATASETS)} (default %(default)s)"
    )
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
        type=fraction,
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
        try:
            loaded = data.load(dataset, data_dir=data_dir, split=split)
        except data.NoTestSplitError as error:
            raise data.NoTestSplitError(f"{error} ({NO_TEST_SPLIT_HINT})") from None
        return data.check_every_class_present(loaded, dataset, split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", data.SkippedImagesWarning)
        loaded = data.load(dataset, data_dir=data_dir, split=split, **folder_options(args, input_shape))
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return data.check_every_class_present(loaded, dataset, split)


def check_classes_match(model, model_path, loaded, dataset):
    """A ValueError when `loaded` (a Dataset) has another number of classes than the model; a warning
    when their names differ (a Fashion-MNIST model scored on MNIST digits: the ids mean other things)."""
    if len(loaded.class_names) != model.num_classes:
        raise ValueError(
            f"{model_path} tells {model.num_classes} classes apart, data set {dataset!r} has "
            f"{len(loaded.class_names)} ({', '.join(map(str, loaded.class_names))})"
        )
    if model.class_names and list(model.class_names) != list(loaded.class_names):
        print(
            f"warning: {model_path} was trained on the classes {', '.join(map(str, model.class_names))}, "
            f"but data set {dataset!r} names its classes {', '.join(map(str, loaded.class_names))}: "
            "its scores compare class ids that may not mean the same things",
            file=sys.stderr,
        )


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
