"""`convscope evaluate` and `convscope predict`: use a saved model."""

import os

from convscope.cli.options import (
    TTA_HELP,
    VAL_SPLIT_HELP,
    add_data_arguments,
    check_classes_match,
    hold_out,
    load_split,
    positive_int,
    print_accuracy,
    report_lead,
    val_split,
    whole_number,
)


def _check_tta(args, model):
    """--tta averages each image with its mirror image: right only for models trained with flips."""
    if args.tta and not (model.augmentation or {}).get("flip"):
        raise ValueError(
            f"--tta averages each image with its mirror image, which suits only models trained with "
            f"horizontal flips (convscope train --augment); {args.model} was not"
        )


def cmd_evaluate(args):
    """Print a saved model's loss and accuracy on a data set's test split."""
    from convscope import load_model

    model = load_model(args.model)
    _check_tta(args, model)
    if args.split == "val":
        if args.val_split is None:
            raise ValueError("--split val needs the --val-split (and --seed) the model was trained with")
        train = load_split(args.dataset, args.data_dir, "train", args, model.input_shape)
        (_, (images, labels)), which = hold_out(train, args.val_split, args.seed)
        print(f"validation: the {len(labels)} of the {len(train.labels)} training images held out ({which})")
        dataset = train._replace(images=images, labels=labels)
    else:
        dataset = load_split(args.dataset, args.data_dir, args.split, args, model.input_shape)
    if dataset.images.shape[1:] != model.input_shape:
        raise ValueError(
            f"{args.model} expects images of {model.input_shape}, "
            f"{args.dataset} has {dataset.images.shape[1:]}"
        )
    check_classes_match(model, args.model, dataset, args.dataset)
    print_accuracy(model, dataset, args.split, tta=args.tta)
    if args.report:
        from convscope.explain.report import picture_file_names, write_report
        from convscope.explain.story import evaluation_section

        section = evaluation_section(model, dataset.images, dataset.labels, args.split)
        path = write_report([section], args.report, f"Evaluation of {args.model}", report_lead(model))
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


def add_commands(commands):
    """The `evaluate` and `predict` commands."""
    evaluate = commands.add_parser("evaluate", help="print a saved model's test accuracy")
    evaluate.add_argument("model", help="a .convscope model file")
    add_data_arguments(evaluate, "digits")
    evaluate.add_argument(
        "--split",
        choices=("train", "test", "val"),
        default="test",
        help="which split to score (default %(default)s); val: the images --val-split held out of the "
        "training split",
    )
    evaluate.add_argument("--val-split", type=val_split, metavar="FRACTION|last:N", help=VAL_SPLIT_HELP)
    evaluate.add_argument(
        "--seed",
        type=whole_number,
        default=0,
        help="the --seed of a FRACTION --val-split (default %(default)s)",
    )
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
    predict.add_argument(
        "--top", type=positive_int, default=3, help="how many classes to list per image (default %(default)s)"
    )
    predict.add_argument("--invert", action="store_true", help="invert gray levels before predicting")
    predict.add_argument(
        "--tta",
        action="store_true",
        help=TTA_HELP,
    )
    predict.set_defaults(run=cmd_predict)
