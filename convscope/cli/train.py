"""`convscope demo` and `convscope train`: train a CNN and save it."""

import argparse
import os

from convscope.cli.options import (
    NO_TEST_SPLIT_HINT,
    REPORT_TITLE,
    VAL_SPLIT_HELP,
    add_data_arguments,
    existing_file,
    has_no_test_split,
    hold_out,
    load_split,
    non_negative_float,
    non_negative_int,
    plural,
    positive_float,
    positive_int,
    print_accuracy,
    report_lead,
    smoothing,
    val_split,
    whole_number,
)

DEMO_EPOCHS = 30
DEMO_LR = 0.05
DEMO_DIGIT_INDEX = 0
DEFAULT_LR = {"adam": 3e-3, "sgd": 0.05}


def snapshot_schedule(text):
    """--snapshots: 'epoch' or a whole number of steps >= 1."""
    import argparse

    if text == "epoch":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be 'epoch' or a whole number of steps >= 1, got {text!r}")


def _make_optimizer(name, lr, weight_decay=0.0, nesterov=False):
    from convscope.optim import SGD, Adam

    if name == "sgd":
        return SGD(lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    return Adam(lr=lr, weight_decay=weight_decay)


def _make_schedule(name, lr):
    from convscope.optim import Cosine, OneCycle, Steps

    schedules = {"onecycle": OneCycle, "cosine": Cosine, "steps": Steps, "none": lambda lr: None}
    return schedules[name](lr)


RECIPE_FLAGS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "schedule",
    "weight_decay",
    "augment",
    "crop_padding",
    "cutout",
    "label_smoothing",
    "val_split",
)


def cmd_demo(args):
    """Convolve the sample photo, train the seed CNN on scikit-learn's bundled digits, save it, and
    write the report of what it learned beside it."""
    from convscope.models import seed_cnn
    from convscope.optim import SGD

    train = load_split("digits", None, "train")
    test = load_split("digits", None, "test")
    print(
        f"data: bundled digits, {len(train.labels)} training and {len(test.labels)} test images "
        f"of {'x'.join(map(str, train.images.shape[1:]))}, pixels scaled to [0, 1]"
    )
    model = seed_cnn(
        train.images.shape[1:], len(train.class_names), seed=args.seed, class_names=train.class_names
    )
    model.summary()
    model.compile(SGD(lr=DEMO_LR, momentum=0.9))
    print(
        f"training: SGD lr={DEMO_LR} momentum=0.9, batch 32, {plural(args.epochs, 'epoch')}, seed {args.seed}"
    )
    print(
        f"after each epoch, val_loss and val_accuracy are measured on the {len(test.labels)} test images "
        "(they do not steer the training)"
    )
    history = model.fit(
        train.images,
        train.labels,
        epochs=args.epochs,
        batch_size=32,
        seed=args.seed,
        validation_data=(test.images, test.labels),
        snapshots="epoch",
    )
    print_accuracy(model, test, "test")
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
    from convscope.explain.why import add_why_sections

    index = DEMO_DIGIT_INDEX
    notes = [f"test image {index} of the bundled digits, true class {test.class_names[test.labels[index]]}"]
    sections = [photo_section(sample_photo(), "vertical_line", classic_kernel("vertical_line"))]
    sections += explain_sections(model, test.images[index], notes, patch_images=train.images)
    add_why_sections(
        sections, model, test.images[index], sample_images=test.images, sample_labels=test.labels
    )
    sections += [
        training_section(
            history,
            f"The test curves are the {len(test.labels)} test images, "
            "measured after each epoch; they do not steer the training.",
            held_out="test",
        ),
        evaluation_section(model, test.images, test.labels),
    ]
    path = write_report(sections, out_dir, REPORT_TITLE, report_lead(model))
    print(f"report: {path}")


def cmd_train(args):
    """Train a CNN (--model: the seed CNN, small_vgg or a ResNet) on a data set and save it; every
    setting not given comes from the recipe (--recipe, else the model's)."""
    from convscope.models import MODEL_RECIPES, MODELS, recipe_settings

    settings = recipe_settings(
        args.model, args.recipe, **{flag: getattr(args, flag) for flag in RECIPE_FLAGS}
    )
    for flag in RECIPE_FLAGS:
        setattr(args, flag, settings[flag])
    crop_padding, cutout, smooth = settings["crop_padding"], settings["cutout"], settings["label_smoothing"]
    train = load_split(args.dataset, args.data_dir, "train", args)
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
    optimizer = _make_optimizer(args.optimizer, lr, args.weight_decay, settings["nesterov"])
    model.compile(optimizer, label_smoothing=smooth)
    augment = None
    if args.augment:
        from convscope.data.augment import Augmentation

        augment = Augmentation(flip=True, crop_padding=crop_padding, cutout=cutout)
    print(
        f"training: recipe {args.recipe or MODEL_RECIPES[args.model]}, {args.optimizer}"
        f"{' (Nesterov momentum 0.9)' if settings['nesterov'] else ''} lr {lr} ({args.schedule} schedule), "
        f"weight decay {args.weight_decay}, "
        f"label smoothing {smooth}, batch {args.batch_size}, {plural(args.epochs, 'epoch')}, "
        f"seed {args.seed}, "
        f"augmentation {_augmentation_text(crop_padding, cutout) if augment else 'off'}"
    )
    swa_lr = None
    if args.swa_epochs:
        swa_lr = lr / 10 if args.swa_lr is None else args.swa_lr
        print(
            f"then stochastic weight averaging: {plural(args.swa_epochs, 'more epoch')} at lr {swa_lr:g}, "
            "ending with the mean of the weights after each"
        )
    model.fit(
        images,
        labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        augment=augment,
        lr_schedule=_make_schedule(args.schedule, lr),
        swa_epochs=args.swa_epochs,
        swa_lr=swa_lr,
        **fit_options,
    )
    model.save(args.out)
    print(f"saved model to {args.out}")


def _augmentation_text(crop_padding: int, cutout: int) -> str:
    text = f"flip + crop shifting up to {crop_padding} pixels"
    return text + (f" + cutout {cutout}x{cutout}" if cutout else "")


def _reliability_options(args, train):
    """--val-split, --checkpoint, --resume, --keep-best, --early-stop -> the training images and labels
    (without those held out for validation) and fit's keyword arguments."""
    images, labels, options = train.images, train.labels, {}
    if args.val_split is not None:
        try:
            ((images, labels), options["validation_data"]), which = hold_out(train, args.val_split, args.seed)
        except ValueError as error:
            if not getattr(args, "recipe_split", False):
                raise
            from convscope.models import MODEL_RECIPES

            raise ValueError(
                f"{error}: the {args.recipe or MODEL_RECIPES[args.model]} recipe holds out the last "
                f"{args.val_split[1]:,} images (the ResNet paper's CIFAR-10 split); give --val-split "
                "FRACTION or last:N for this data set"
            ) from None
        held_out = len(train.labels) - len(labels)
        print(f"validation: {held_out} of the {len(train.labels)} training images held out ({which})")
    if has_no_test_split(args):
        print(f"note: {args.data_dir} has no test split (no test_batch.bin): {NO_TEST_SPLIT_HINT}")
    options.update(
        checkpoint=args.checkpoint,
        resume=args.resume,
        keep_best=args.keep_best,
        early_stop=args.early_stop,
        snapshots=args.snapshots,
    )
    return images, labels, options


def _check_output(parser, flag: str, path: str, force: bool):
    """--out and --checkpoint may replace a convscope model or checkpoint, anything else only with --force."""
    from convscope.model_file import is_model_file

    if os.path.isdir(path):
        parser.fail(flag, f"{path} is a folder; give the file to write")
    if os.path.exists(path) and not force and not is_model_file(path):
        parser.fail(flag, f"{path} exists and is not a convscope model: give --force to overwrite it")


def check_train_arguments(parser, args):
    """What argparse cannot check flag by flag; stops at the first problem, before any data is read."""
    from convscope.models import recipe_settings

    args.recipe_split = args.val_split is None
    if args.val_split is None:  # the recipe's split counts as given (the ResNet recipes hold out 5,000)
        args.val_split = recipe_settings(args.model, args.recipe)["val_split"]
    if not recipe_settings(args.model, args.recipe, augment=args.augment)["augment"]:
        for flag, value in (("--crop-padding", args.crop_padding), ("--cutout", args.cutout)):
            if value:
                parser.fail(flag, "shapes the augmentation, which is off here: give --augment too")
    if args.keep_best in ("val_accuracy", "val_loss") and args.val_split is None:
        parser.fail("--keep-best", f"{args.keep_best} is measured on held-out images: give --val-split too")
    if args.early_stop is not None and args.keep_best is None and args.val_split is None:
        parser.fail("--early-stop", "watches val_loss: give --val-split too (or --keep-best loss)")
    if args.swa_lr is not None and not args.swa_epochs:
        parser.fail("--swa-lr", "is the learning rate of the averaged epochs: give --swa-epochs too")
    for flag, value in (("--keep-best", args.keep_best), ("--early-stop", args.early_stop)):
        if args.swa_epochs and value is not None:
            parser.fail(flag, "and --swa-epochs exclude each other: the averaged weights are the result")
    for flag, path in (("--checkpoint", args.checkpoint), ("--resume", args.resume)):
        if path is not None and os.path.abspath(path) == os.path.abspath(args.out):
            parser.fail(flag, f"must be another file than --out, got {path} for both")
    _check_output(parser, "--out", args.out, args.force)
    if args.checkpoint is not None and args.checkpoint != args.resume:
        _check_output(parser, "--checkpoint", args.checkpoint, args.force)


def add_reliability_arguments(train):
    """`train` options for long runs: validation split, checkpoints and resuming, best epoch, early stop,
    weight averaging."""
    group = train.add_argument_group("long runs")
    group.add_argument("--val-split", type=val_split, metavar="FRACTION|last:N", help=VAL_SPLIT_HELP)
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write model, optimiser, epoch, random state and history to PATH after every epoch and on "
        "Ctrl-C (atomically), so --resume PATH can continue the run",
    )
    group.add_argument(
        "--resume",
        type=existing_file,
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
        type=positive_int,
        metavar="PATIENCE",
        help="stop when --keep-best's metric (else val_loss) has not improved for PATIENCE epochs",
    )
    group.add_argument(
        "--swa-epochs",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="stochastic weight averaging: after --epochs, train N more at the constant --swa-lr and save "
        "the mean of the weights after each (batch norm statistics measured afresh); a finished run's "
        "checkpoint can be resumed with --swa-epochs added",
    )
    group.add_argument(
        "--swa-lr",
        type=positive_float,
        metavar="LR",
        help="the learning rate of the --swa-epochs (default: a tenth of --lr)",
    )


def add_commands(commands):
    """The `demo` and `train` commands."""
    demo = commands.add_parser(
        "demo", help="convolve a photo, train the seed CNN on the bundled digits, write the report (offline)"
    )
    demo.add_argument(
        "--out-dir",
        default="demo-output",
        help="where to write model.convscope, report.html (default %(default)s)",
    )
    demo.add_argument(
        "--epochs", type=positive_int, default=DEMO_EPOCHS, help="passes over the data (default %(default)s)"
    )
    demo.add_argument(
        "--seed", type=whole_number, default=0, help="seeds the weights and the batches (default %(default)s)"
    )
    demo.add_argument("--no-report", action="store_true", help="only train and save the model")
    demo.set_defaults(run=cmd_demo)

    from convscope.models import MODELS, NAMED_RECIPES

    train = commands.add_parser(
        "train", help="train the seed CNN (or small-vgg, a ResNet) on a data set and save it"
    )
    add_data_arguments(train, "digits")
    train.add_argument(
        "--model",
        choices=tuple(MODELS),
        default="seed",
        help="seed (default): the article's CNN, conv 16 + conv 32 + dense 128, fast; small-vgg: three "
        "blocks of [conv 3x3 + batch norm + ReLU] x 2 + max pool (32, 64, 128 kernels), global average "
        "pooling, dropout 0.3 (289k parameters, about 400 images/s on 32x32x3 with 2 cores). The model "
        "sets the defaults of --crop-padding and --label-smoothing; every other default is the same for "
        "both, and --augment stays off unless given. The README's cats-vs-dogs figures add --augment "
        "--epochs 15 (seed) or --augment --epochs 60 and evaluate --tta (small-vgg). resnet20, resnet32, "
        "resnet44, resnet56: He et al. (2016)'s CIFAR ResNets (option-A shortcuts; resnet20 has 269,722 "
        "parameters), trained by the 'paper' recipe unless --recipe says otherwise",
    )
    train.add_argument(
        "--recipe",
        choices=NAMED_RECIPES,
        help="a named set of training defaults (flags still override each): paper, the ResNet paper's "
        "(SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 50%% and 75%% of 182 "
        "epochs, flips and 4-pixel crops, --val-split last:5000; the default for the ResNets); budget, "
        "for 2 CPU cores (40 epochs of one-cycle SGD with Nesterov momentum up to lr 0.2, weight decay "
        "5e-4, label smoothing 0.1, the same augmentation and split; evaluate with --tta). "
        "Default: the model's (seed and small-vgg: their own, see --model)",
    )
    train.add_argument(
        "--epochs", type=positive_int, help="passes over the data (default: the recipe's; else 10)"
    )
    train.add_argument(
        "--batch-size", type=positive_int, help="images per optimiser step (default: the recipe's; else 64)"
    )
    train.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        help="adam (lr 3e-3) or sgd with momentum 0.9 (lr 0.05) (default: the recipe's; else adam)",
    )
    train.add_argument(
        "--lr", type=positive_float, help="learning rate, the peak of the schedule (default: the optimizer's)"
    )
    train.add_argument(
        "--schedule",
        choices=("onecycle", "cosine", "steps", "none"),
        help="learning-rate schedule: one-cycle (the default unless the recipe says otherwise: warm up to "
        "--lr over 30%% of the steps, then anneal), cosine decay from --lr, steps (--lr divided by 10 at "
        "50%% and 75%% of the steps), or a constant --lr",
    )
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="random horizontal flips and shifts (random padded crops); off by default except in the "
        "ResNet recipes (flips suit photos, not digits)",
    )
    train.add_argument(
        "--crop-padding",
        type=non_negative_int,
        metavar="PIXELS",
        help="with --augment, crop from the image padded by this many zero pixels, i.e. shift it by up to "
        "PIXELS (default: the model's recipe, 2 for seed, 4 for small-vgg; 0: flips only)",
    )
    train.add_argument(
        "--cutout",
        type=non_negative_int,
        metavar="PIXELS",
        help="with --augment, also set a PIXELS x PIXELS square of each image, at a random place, to zero "
        "(Cutout; default 0: off)",
    )
    train.add_argument(
        "--label-smoothing",
        type=smoothing,
        metavar="E",
        help="train towards (1 - E) on the true class and E / classes on every class "
        "(default: the model's recipe, 0 for seed, 0.1 for small-vgg)",
    )
    train.add_argument(
        "--weight-decay",
        type=non_negative_float,
        metavar="W",
        help="L2 penalty added to the gradients by the optimiser (default: the recipe's; else 0)",
    )
    train.add_argument(
        "--no-standardize",
        action="store_true",
        help="feed [0, 1] pixels as they are (default: standardise each channel, stats kept in the model)",
    )
    train.add_argument(
        "--seed",
        type=whole_number,
        default=0,
        help="seeds the weights, the batches, augmentation, dropout and --val-split (default %(default)s)",
    )
    train.add_argument(
        "--snapshots",
        type=snapshot_schedule,
        nargs="?",
        const="epoch",
        metavar="N",
        help="record the first conv layer's kernels and the first training image's first-layer feature maps "
        "before training and after every epoch (no N) or every N steps, stored with the model (bounded: "
        "thinned evenly beyond 64); `convscope explain --why` shows them as strips",
    )
    train.add_argument("--out", default="model.convscope", help="model file to write (default %(default)s)")
    train.add_argument(
        "--force",
        action="store_true",
        help="let --out and --checkpoint replace a file that is not a convscope model",
    )
    add_reliability_arguments(train)
    train.set_defaults(run=cmd_train, validate_arguments=lambda args: check_train_arguments(train, args))
