"""The `convscope` command: a thin shell over the library; no maths here."""

import argparse
import math
import os
import sys

DEMO_EPOCHS = 30
DEMO_LR = 0.05
DEMO_DIGIT_INDEX = 0
REPORT_TITLE = "Inside a convolutional neural network"
DEFAULT_PATCH_IMAGES = 2000


def _load_split(dataset, data_dir, split, args=None, input_shape=None):
    """One split of a data set. A folder:PATH data set takes --image-size, --grayscale, --val-fraction and
    --skip-bad from `args`, and the size and mode of `input_shape` (a model's) where those are not given;
    the images it skips are printed as warnings."""
    import warnings

    from convscope import data

    if dataset != "folder" and not dataset.startswith("folder:"):
        try:
            return data.load(dataset, data_dir=data_dir, split=split)
        except data.NoTestSplitError as error:
            raise data.NoTestSplitError(f"{error} ({NO_TEST_SPLIT_HINT})") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", data.SkippedImagesWarning)
        loaded = data.load(dataset, data_dir=data_dir, split=split, **_folder_options(args, input_shape))
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return loaded


def _folder_options(args, input_shape):
    from convscope.data.folder import DEFAULT_VAL_FRACTION

    image_size, grayscale = getattr(args, "image_size", None), getattr(args, "grayscale", False)
    if input_shape is not None:
        image_size, grayscale = image_size or tuple(input_shape[:2]), grayscale or input_shape[2] == 1
    val_fraction = getattr(args, "val_fraction", None)
    return {
        "image_size": image_size,
        "grayscale": grayscale,
        "val_fraction": DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction,
        "skip_bad": getattr(args, "skip_bad", False),
    }


DEFAULT_LR = {"adam": 3e-3, "sgd": 0.05}
TTA_HELP = (
    "test-time augmentation: average the class probabilities of each image and its mirror image "
    "(for models trained with --augment)"
)


def _make_optimizer(name, lr, weight_decay=0.0):
    from convscope.optim import SGD, Adam

    if name == "sgd":
        return SGD(lr=lr, momentum=0.9, weight_decay=weight_decay)
    return Adam(lr=lr, weight_decay=weight_decay)


def _make_schedule(name, lr):
    from convscope.optim import Cosine, OneCycle

    return {"onecycle": lambda: OneCycle(lr), "cosine": lambda: Cosine(lr), "none": lambda: None}[name]()


def _print_accuracy(model, dataset, split, tta=False):
    loss, accuracy = model.evaluate(dataset.images, dataset.labels, tta=tta)
    print(f"{split} loss: {loss:.4f}")
    print(f"{split} accuracy: {accuracy:.4f}{' (averaged with mirror images, --tta)' if tta else ''}")
    return accuracy


def _check_tta(args, model):
    """--tta averages each image with its mirror image: right only for models trained with flips."""
    if args.tta and not (model.augmentation or {}).get("flip"):
        raise ValueError(
            f"--tta averages each image with its mirror image, which suits only models trained with "
            f"horizontal flips (convscope train --augment); {args.model} was not"
        )


def cmd_demo(args):
    """Convolve the sample photo, train the seed CNN on scikit-learn's bundled digits, save it, and
    write the report of what it learned beside it."""
    from convscope.models import seed_cnn
    from convscope.optim import SGD

    train = _load_split("digits", None, "train")
    test = _load_split("digits", None, "test")
    print(
        f"data: bundled digits, {len(train.labels)} training and {len(test.labels)} test images "
        f"of {'x'.join(map(str, train.images.shape[1:]))}, pixels scaled to [0, 1]"
    )
    model = seed_cnn(
        train.images.shape[1:], len(train.class_names), seed=args.seed, class_names=train.class_names
    )
    model.summary()
    model.compile(SGD(lr=DEMO_LR, momentum=0.9))
    print(f"training: SGD lr={DEMO_LR} momentum=0.9, batch 32, {args.epochs} epochs, seed {args.seed}")
    history = model.fit(
        train.images,
        train.labels,
        epochs=args.epochs,
        batch_size=32,
        seed=args.seed,
        validation_data=(test.images, test.labels),
    )
    _print_accuracy(model, test, "test")
    path = os.path.join(args.out_dir, "model.convscope")
    model.save(path)
    print(f"saved model to {path}")
    if not args.no_report:
        _write_demo_report(model, history, train, test, args.out_dir)


def _write_demo_report(model, history, train, test, out_dir):
    """The whole story in one report: a kernel on a photo, then a test digit through the trained model."""
    from convscope.explain.convolve import sample_photo
    from convscope.explain.kernels import classic_kernel
    from convscope.explain.report import write_report
    from convscope.explain.story import evaluation_section, explain_sections, photo_section, training_section

    index = DEMO_DIGIT_INDEX
    notes = [f"test image {index} of the bundled digits, true class {test.class_names[test.labels[index]]}"]
    sections = (
        [photo_section(sample_photo(), "vertical_line", classic_kernel("vertical_line"))]
        + explain_sections(model, test.images[index], notes, patch_images=train.images)
        + [
            training_section(
                history,
                f"The validation curves are the {len(test.labels)} test images, "
                "measured after each epoch; they do not steer the training.",
            ),
            evaluation_section(model, test.images, test.labels),
        ]
    )
    path = write_report(sections, out_dir, REPORT_TITLE, _report_lead(model))
    print(f"report: {path}")


def cmd_train(args):
    """Train a CNN (--model: the seed CNN or small_vgg) on a data set and save it."""
    from convscope.models import MODELS, recipe_settings

    recipe = recipe_settings(args.model, crop_padding=args.crop_padding, label_smoothing=args.label_smoothing)
    crop_padding, smoothing = recipe["crop_padding"], recipe["label_smoothing"]
    train = _load_split(args.dataset, args.data_dir, "train", args)
    print(
        f"data: {args.dataset}, {len(train.labels)} training images of "
        f"{'x'.join(map(str, train.images.shape[1:]))}, {len(train.class_names)} classes"
    )
    images, labels, fit_options = _reliability_options(args, train)
    model = MODELS[args.model](
        train.images.shape[1:], len(train.class_names), seed=args.seed, class_names=train.class_names
    )
    model.summary()
    if not args.no_standardize:
        model.adapt(images)
        print(f"standardising each channel with the training split's mean and std: {model.standardization}")
    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    model.compile(_make_optimizer(args.optimizer, lr, args.weight_decay), label_smoothing=smoothing)
    augment = None
    if args.augment:
        from convscope.data.augment import Augmentation

        augment = Augmentation(flip=True, crop_padding=crop_padding)
    print(
        f"training: {args.optimizer} lr {lr} ({args.schedule} schedule), weight decay {args.weight_decay}, "
        f"label smoothing {smoothing}, batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}, "
        f"augmentation {f'flip + crop shifting up to {crop_padding} pixels' if augment else 'off'}"
    )
    model.fit(
        images,
        labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        augment=augment,
        lr_schedule=_make_schedule(args.schedule, lr),
        **fit_options,
    )
    model.save(args.out)
    print(f"saved model to {args.out}")


NO_TEST_SPLIT_HINT = (
    "train with --val-split, e.g. --val-split last:5000 as the ResNet paper held out CIFAR-10's last "
    "5,000 training images, and evaluate on the held-out images with --split val and the same --val-split"
)
VAL_SPLIT_HELP = (
    "hold out training images and validate after each epoch: FRACTION (e.g. 0.1) draws that fraction "
    "with --seed (the default kind of split); last:N holds out the last N images in the files' order "
    "(last:5000 on CIFAR-10's 50,000: the ResNet paper's 45k/5k split)"
)


def _val_split(text):
    """--val-split: FRACTION or last:N -> ('fraction', F) or ('last', N); the numbers are checked
    against the data set where the split is made."""
    kind, _, count = text.partition(":")
    try:
        return ("last", int(count)) if kind == "last" else ("fraction", float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1 or last:N, got {text!r}") from None


def _hold_out(dataset, val_split, seed):
    """((train images, labels), (validation images, labels)) and how they were split, for printing."""
    from convscope.train import holdout_last, validation_split

    kind, amount = val_split
    if kind == "last":
        return holdout_last(
            dataset.images, dataset.labels, amount
        ), f"--val-split last:{amount}, the last ones"
    return validation_split(
        dataset.images, dataset.labels, amount, seed=seed
    ), f"--val-split {amount}, seed {seed}"


def _has_no_test_split(args) -> bool:
    """True for a CIFAR-10 folder with training batches and no test batch."""
    from convscope.data.cifar import has_test_split

    return (
        args.dataset.startswith("cifar10") and args.data_dir is not None and not has_test_split(args.data_dir)
    )


def _reliability_options(args, train):
    """--val-split, --checkpoint, --resume, --keep-best, --early-stop -> the training images and labels
    (without those held out for validation) and fit's keyword arguments."""
    images, labels, options = train.images, train.labels, {}
    if args.val_split is not None:
        ((images, labels), options["validation_data"]), which = _hold_out(train, args.val_split, args.seed)
        held_out = len(train.labels) - len(labels)
        print(f"validation: {held_out} of the {len(train.labels)} training images held out ({which})")
    if _has_no_test_split(args):
        print(f"note: {args.data_dir} has no test split (no test_batch.bin): {NO_TEST_SPLIT_HINT}")
    for option in ("checkpoint", "resume"):
        path = getattr(args, option)
        if path is not None and os.path.abspath(path) == os.path.abspath(args.out):
            raise ValueError(f"--{option} and --out must be different files, got {path} for both")
    options.update(
        checkpoint=args.checkpoint, resume=args.resume, keep_best=args.keep_best, early_stop=args.early_stop
    )
    return images, labels, options


def add_reliability_arguments(train):
    """`train` options for long runs: validation split, checkpoints and resuming, best epoch, early stop."""
    group = train.add_argument_group("long runs")
    group.add_argument("--val-split", type=_val_split, metavar="FRACTION|last:N", help=VAL_SPLIT_HELP)
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write model, optimiser, epoch, random state and history to PATH after every epoch and on "
        "Ctrl-C (atomically), so --resume PATH can continue the run",
    )
    group.add_argument(
        "--resume",
        metavar="PATH",
        help="continue the run saved in checkpoint PATH (and keep writing it unless --checkpoint is given); "
        "give the same data and options: the result is bit-identical to a run that never stopped",
    )
    group.add_argument(
        "--keep-best",
        choices=("val_accuracy", "val_loss", "accuracy", "loss"),
        metavar="METRIC",
        help="save the weights of the epoch with the best METRIC (val_accuracy, val_loss need --val-split)",
    )
    group.add_argument(
        "--early-stop",
        type=_positive_int,
        metavar="PATIENCE",
        help="stop when --keep-best's metric (else val_loss) has not improved for PATIENCE epochs",
    )


def cmd_evaluate(args):
    """Print a saved model's loss and accuracy on a data set's test split."""
    from convscope import load_model

    model = load_model(args.model)
    _check_tta(args, model)
    if args.split == "val":
        if args.val_split is None:
            raise ValueError("--split val needs the --val-split (and --seed) the model was trained with")
        train = _load_split(args.dataset, args.data_dir, "train", args, model.input_shape)
        (_, (images, labels)), which = _hold_out(train, args.val_split, args.seed)
        print(f"validation: the {len(labels)} of the {len(train.labels)} training images held out ({which})")
        dataset = train._replace(images=images, labels=labels)
    else:
        dataset = _load_split(args.dataset, args.data_dir, args.split, args, model.input_shape)
    if dataset.images.shape[1:] != model.input_shape:
        raise ValueError(
            f"{args.model} expects images of {model.input_shape}, "
            f"{args.dataset} has {dataset.images.shape[1:]}"
        )
    _print_accuracy(model, dataset, args.split, tta=args.tta)
    if args.report:
        from convscope.explain.report import picture_file_names, write_report
        from convscope.explain.story import evaluation_section

        section = evaluation_section(model, dataset.images, dataset.labels, args.split)
        path = write_report([section], args.report, f"Evaluation of {args.model}", _report_lead(model))
        for name in picture_file_names([section])[0]:
            print(f"wrote {os.path.join(args.report, name)}")
        print(f"report: {path}")


def cmd_predict(args):
    """Classify image files with a saved model."""
    from convscope import load_model
    from convscope.data.images import read_image

    model = load_model(args.model)
    _check_tta(args, model)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    for path in args.images:
        pixels, notes = read_image(path, model.input_shape, invert=args.invert)
        probabilities = model.predict_proba(pixels[None], tta=args.tta)[0]
        best = probabilities.argsort()[::-1][: args.top]
        ranked = ", ".join(f"{names[i]} {probabilities[i]:.3f}" for i in best)
        print(f"{path}: {names[best[0]]} ({probabilities[best[0]]:.3f})   top {len(best)}: {ranked}")
        for note in notes:
            print(f"  {note}")
        if model.input_shape[2] == 1 and not args.invert and pixels.mean() > 0.5:
            print(
                "  note: mostly light image; models trained on MNIST-style data expect light ink on "
                "a dark background: try --invert"
            )


def _report_lead(model) -> str:
    layers = " → ".join(layer.name for layer in model.layers)
    return (
        f"{model.name}: input {'×'.join(map(str, model.input_shape))} → {layers}. Read top to bottom, "
        "like the network: each section is one step."
    )


def _padding(text):
    """--padding: 'same', 'valid' or a number of zero rows and columns added on every side."""
    if text in ("same", "valid"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"must be 'same', 'valid' or a whole number >= 0, got {text!r}")


def _positive_int(text):
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")


def _non_negative_int(text):
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")


def _float_in(text, low, high, what):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value < high:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _non_negative_float(text):
    return _float_in(text, 0.0, math.inf, "a number >= 0")


def _smoothing(text):
    return _float_in(text, 0.0, 1.0, "a number from 0 up to (not including) 1")


def cmd_convolve(args):
    """Slide one kernel over one image with the engine's conv op and draw input, kernel, feature map."""
    from convscope.explain.convolve import convolution_figure, convolve_image, read_photo, sample_photo
    from convscope.explain.figures import figure_png, save_png
    from convscope.explain.kernels import get_kernel

    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must name a .png file, got {args.out!r}")
    label, kernel = get_kernel(args.kernel)
    if args.image is None:
        image, notes = sample_photo(), ["scikit-learn's sample photo china.jpg"]
        if args.gray:
            image = image.mean(axis=2, keepdims=True)
    else:
        image, notes = read_photo(args.image, max_side=args.max_side, gray=args.gray)
    feature_map = convolve_image(image, kernel, args.padding, args.stride, per_channel=args.per_channel)
    fig = convolution_figure(image, kernel, feature_map, args.padding, args.stride, label)
    save_png(figure_png(fig), args.out)
    for note in notes:
        print(f"  {note}")
    print(
        f"{'x'.join(map(str, image.shape))} -> {'x'.join(map(str, feature_map.shape))} "
        f"(kernel {label}, padding {args.padding}, stride {args.stride})"
    )
    print(f"wrote {args.out}")


def _explain_image(args, model, dataset):
    """The image to explain, (H, W, C), and notes on where it came from: a file or a data-set index."""
    from convscope.data.images import read_image

    if args.image is not None:
        if args.index is not None:
            raise ValueError("give an IMAGE file or --index, not both")
        return read_image(args.image, model.input_shape, invert=args.invert)
    if dataset is None:
        raise ValueError(
            f"give an IMAGE file, or --dataset (and --data-dir) with --index: no data set is bundled for "
            f"{'x'.join(map(str, model.input_shape))} inputs"
        )
    split = _load_split(dataset, args.data_dir, args.split, args, model.input_shape)
    _check_dataset_fits(model, split, dataset)
    index = 0 if args.index is None else args.index
    if not 0 <= index < len(split.labels):
        raise ValueError(
            f"--index {index} is out of range: the {args.split} split of {dataset} "
            f"has {len(split.labels)} images"
        )
    notes = [f"{args.split} image {index} of {dataset}, true class {split.class_names[split.labels[index]]}"]
    return split.images[index], notes


def _check_dataset_fits(model, split, dataset):
    if tuple(split.images.shape[1:]) != tuple(model.input_shape):
        raise ValueError(
            f"the model takes {'x'.join(map(str, model.input_shape))} images but {dataset} images are "
            f"{'x'.join(map(str, split.images.shape[1:]))}"
        )


def cmd_explain(args):
    """Write report.html (and one PNG per figure) showing one image going through a saved model."""
    from convscope import load_model
    from convscope.explain.report import write_report
    from convscope.explain.story import explain_sections

    model = load_model(args.model)
    dataset = args.dataset or ("digits" if tuple(model.input_shape) == (8, 8, 1) else None)
    image, notes = _explain_image(args, model, dataset)
    patch_images = None
    if dataset is not None and args.patch_images > 0:
        source = _load_split(dataset, args.data_dir, "train", args, model.input_shape)
        _check_dataset_fits(model, source, dataset)
        patch_images = source.images[: args.patch_images]
        print(f"top patches: searching the first {len(patch_images)} training images of {dataset}")
    else:
        print("top patches: skipped (give --dataset and --data-dir to search a data set)")
    for note in notes:
        print(f"  {note}")
    sections = explain_sections(model, image, notes, patch_images)
    path = write_report(sections, args.out, REPORT_TITLE, _report_lead(model))
    print(f"report: {path}")


def cmd_bench(args):
    """Measure the seed CNN's speed and memory beside PyTorch."""
    from convscope.bench import main_from_args

    main_from_args(args)


def cmd_export(args):
    """Write a saved model for ONNX or PyTorch, and/or check that the engines agree."""
    from convscope.interop.export import main_from_args

    main_from_args(args)


def cmd_serve(args):
    """Serve the local web explorer (network view, convolution playground, training) until Ctrl+C."""
    from convscope.web.server import main_from_args

    main_from_args(args)


def build_parser():
    from convscope import __version__
    from convscope.data import DATASETS

    parser = argparse.ArgumentParser(
        prog="convscope", description="Build, train and look inside a convolutional neural network."
    )
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="convolve a photo, train the seed CNN on the bundled digits, write the report (offline)"
    )
    demo.add_argument("--out-dir", default="demo-output", help="where to write model.convscope, report.html")
    demo.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-report", action="store_true", help="only train and save the model")
    demo.set_defaults(run=cmd_demo)

    def add_data_arguments(sub, default_dataset):
        sub.add_argument("--dataset", default=default_dataset, help=f"one of: {', '.join(DATASETS)}")
        sub.add_argument(
            "--data-dir", help="folder with the data set's files (IDX for mnist, fashion-mnist; CIFAR binary)"
        )
        add_folder_arguments(sub)

    train = commands.add_parser("train", help="train the seed CNN on a data set and save it")
    add_data_arguments(train, "digits")
    train.add_argument(
        "--model",
        choices=("seed", "small-vgg"),
        default="seed",
        help="seed (default): the article's CNN, conv 16 + conv 32 + dense 128, fast; its recipe: "
        "--augment (2-pixel shifts) --epochs 15; small-vgg: three blocks of [conv 3x3 + batch norm + ReLU] "
        "x 2 + max pool (32, 64, 128 kernels), global average pooling, dropout 0.3 (289k parameters, "
        "about 400 images/s on 32x32x3 with 2 cores); its recipe: --augment (4-pixel shifts) --epochs 60, "
        "label smoothing 0.1, then evaluate --tta; both with the adam / onecycle / batch 64 defaults",
    )
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="adam (default lr 3e-3) or sgd with momentum 0.9 (default lr 0.05)",
    )
    train.add_argument("--lr", type=float, help="learning rate (the peak of the schedule)")
    train.add_argument(
        "--schedule",
        choices=("onecycle", "cosine", "none"),
        default="onecycle",
        help="learning-rate schedule: one-cycle (warm up to --lr over 30%% of the steps, then anneal), "
        "cosine decay from --lr, or a constant --lr",
    )
    train.add_argument(
        "--augment", action="store_true", help="random horizontal flips and shifts (random padded crops)"
    )
    train.add_argument(
        "--crop-padding",
        type=_non_negative_int,
        metavar="PIXELS",
        help="with --augment, crop from the image padded by this many zero pixels, i.e. shift it by up to "
        "PIXELS (default: the model's recipe, 2 for seed, 4 for small-vgg; 0: flips only)",
    )
    train.add_argument(
        "--label-smoothing",
        type=_smoothing,
        metavar="E",
        help="train towards (1 - E) on the true class and E / classes on every class "
        "(default: the model's recipe, 0 for seed, 0.1 for small-vgg)",
    )
    train.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=0.0,
        metavar="W",
        help="L2 penalty added to the gradients by the optimiser (default 0)",
    )
    train.add_argument(
        "--no-standardize",
        action="store_true",
        help="feed [0, 1] pixels as they are (default: standardise each channel, stats kept in the model)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="model.convscope", help="model file to write")
    add_reliability_arguments(train)
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="print a saved model's test accuracy")
    evaluate.add_argument("model", help="a .convscope model file")
    add_data_arguments(evaluate, "digits")
    evaluate.add_argument(
        "--split",
        choices=("train", "test", "val"),
        default="test",
        help="test (default), train, or val: the images --val-split held out of the training split",
    )
    evaluate.add_argument("--val-split", type=_val_split, metavar="FRACTION|last:N", help=VAL_SPLIT_HELP)
    evaluate.add_argument("--seed", type=int, default=0, help="the --seed of a FRACTION --val-split")
    evaluate.add_argument(
        "--report", metavar="DIR", help="also write a confusion matrix and the most confident mistakes here"
    )
    evaluate.add_argument(
        "--tta",
        action="store_true",
        help=TTA_HELP,
    )
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="classify image files with a saved model")
    predict.add_argument("model", help="a .convscope model file")
    predict.add_argument("images", nargs="+", help="PNG, JPEG or other image files")
    predict.add_argument("--top", type=int, default=3, help="how many classes to list per image")
    predict.add_argument("--invert", action="store_true", help="invert gray levels before predicting")
    predict.add_argument(
        "--tta",
        action="store_true",
        help=TTA_HELP,
    )
    predict.set_defaults(run=cmd_predict)

    add_explain_commands(commands)
    add_data_commands(commands)

    from convscope.bench import add_arguments as add_bench_arguments

    bench = commands.add_parser("bench", help="training and inference speed beside PyTorch")
    add_bench_arguments(bench)
    bench.set_defaults(run=cmd_bench)

    from convscope.interop.export import add_arguments as add_export_arguments

    export = commands.add_parser("export", help="write a model for ONNX or PyTorch; --check compares engines")
    add_export_arguments(export)
    export.set_defaults(run=cmd_export)

    from convscope.web.server import add_arguments as add_serve_arguments

    serve = commands.add_parser("serve", help="the web explorer: draw, convolve and train in the browser")
    add_serve_arguments(serve)
    serve.set_defaults(run=cmd_serve)
    return parser


def add_explain_commands(commands):
    """The `convolve` and `explain` commands."""
    from convscope.data import DATASETS

    convolve = commands.add_parser("convolve", help="slide a kernel over an image: input, kernel, output")
    convolve.add_argument("image", nargs="?", help="an image file (default: scikit-learn's sample photo)")
    convolve.add_argument(
        "--kernel",
        default="vertical_line",
        help="a classic kernel (vertical_line, horizontal_line, sobel_x, sobel_y, laplacian, sharpen, "
        "box_blur, gaussian_blur, gaussian_blur_5x5, emboss, identity) or rows like '0 1 0; 0 1 0; 0 1 0'",
    )
    convolve.add_argument("--padding", type=_padding, default="valid", help="same, valid or N")
    convolve.add_argument("--stride", type=_positive_int, default=1)
    convolve.add_argument(
        "--per-channel", action="store_true", help="one map per colour channel instead of their sum"
    )
    convolve.add_argument("--gray", action="store_true", help="convert the image to grayscale first")
    convolve.add_argument(
        "--max-side", type=_positive_int, default=800, help="shrink bigger images to this side"
    )
    convolve.add_argument("--out", default="convolve.png", help="the figure to write (.png)")
    convolve.set_defaults(run=cmd_convolve)

    explain = commands.add_parser(
        "explain", help="report.html: one image through a model, feature maps, kernels, top patches"
    )
    explain.add_argument("model", help="a .convscope model file")
    explain.add_argument("image", nargs="?", help="an image file (or use --index)")
    explain.add_argument(
        "--dataset",
        metavar="NAME",
        help=f"data set for --index and for each kernel's top patches: {', '.join(DATASETS)} "
        "(default: the bundled digits when the model takes 8x8x1 images, else none)",
    )
    explain.add_argument("--data-dir", help="folder with the data set's files (IDX for mnist, fashion-mnist)")
    explain.add_argument("--index", type=int, help="explain this image of the data set's --split instead")
    explain.add_argument("--split", choices=("train", "test"), default="test")
    explain.add_argument(
        "--patch-images",
        type=int,
        default=DEFAULT_PATCH_IMAGES,
        help="how many training images of --dataset to search for each kernel's top patches (0: none)",
    )
    explain.add_argument("--invert", action="store_true", help="invert the image's gray levels first")
    explain.add_argument("--out", default="explain-output", help="folder for report.html and the PNGs")
    explain.set_defaults(run=cmd_explain)


def _image_size(text):
    """--image-size: N (square) or HEIGHTxWIDTH, in pixels."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.isdigit() and int(p) > 0 for p in parts):
        return (int(parts[0]), int(parts[-1]))
    raise argparse.ArgumentTypeError(f"must be N or HEIGHTxWIDTH in pixels, like 32 or 24x32, got {text!r}")


def add_folder_arguments(sub):
    """Options of folder:PATH data sets (one subfolder of images per class)."""
    group = sub.add_argument_group("folder:PATH data sets (one subfolder of PNG/JPEG images per class)")
    group.add_argument(
        "--image-size",
        type=_image_size,
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


def cmd_data_download(args):
    """Fetch a data set's official files, checked against their published MD5s, into its cache folder."""
    from convscope.data.download import dataset_key, download

    folder = download(args.name, args.dir, base_url=args.mirror)
    name = dataset_key(args.name)
    data_dir = f" --data-dir {folder}" if args.dir else ""
    print(f"{name}: ready in {folder}")
    print(f"use it with: convscope train --dataset {name}{data_dir}")


def cmd_data_list(args):
    """The data sets by name, and where the downloadable ones are cached."""
    from convscope.data.download import CHECKSUMS, cache_dir, cache_root, is_downloaded

    print(f"{'digits':15} bundled with scikit-learn (offline)")
    for name in CHECKSUMS:
        state = "downloaded" if is_downloaded(name) else "not downloaded"
        print(f"{name:15} {state:15} {cache_dir(name)}")
    print(f"{'folder:PATH':15} your images: PATH/CLASS/*.png|jpg, one subfolder per class")
    print(f"cache folder: {cache_root()} (set CONVSCOPE_DATA to move it)")


def add_data_commands(commands):
    """`convscope data download NAME` and `convscope data list`."""
    from convscope.data.download import CHECKSUMS

    data = commands.add_parser("data", help="download MNIST, Fashion-MNIST or CIFAR-10; list the data sets")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    download = actions.add_parser(
        "download",
        help="fetch a data set's official files, check their MD5s, cache them",
        description="Fetch the official files (resuming and retrying), check them against their published "
        "MD5s and put them in the cache folder ($CONVSCOPE_DATA/NAME, else ~/.cache/convscope/NAME), "
        "where --dataset NAME finds them without --data-dir.",
    )
    download.add_argument("name", metavar="NAME", help=f"one of: {', '.join(CHECKSUMS)}")
    download.add_argument("--dir", help="put the files here instead of the cache folder")
    download.add_argument("--mirror", metavar="URL", help="fetch the files from this base URL instead")
    download.set_defaults(run=cmd_data_download)
    listing = actions.add_parser("list", help="the data sets and where the downloadable ones are cached")
    listing.set_defaults(run=cmd_data_list)


def main(argv=None) -> int:
    from convscope.train import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, TrainingDiverged) as error:
        print(f"convscope: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
