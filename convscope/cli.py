"""The `convscope` command: a thin shell over the library; no maths here."""

import argparse
import os
import sys

DEMO_EPOCHS = 30
DEMO_LR = 0.05


def _load_split(dataset, data_dir, split):
    from convscope import data

    return data.load(dataset, data_dir=data_dir, split=split)


def _make_optimizer(name, lr):
    from convscope.optim import SGD, Adam

    if name == "sgd":
        return SGD(lr=0.05 if lr is None else lr, momentum=0.9)
    return Adam(lr=1e-3 if lr is None else lr)


def _print_accuracy(model, dataset, split):
    loss, accuracy = model.evaluate(dataset.images, dataset.labels)
    print(f"{split} loss: {loss:.4f}")
    print(f"{split} accuracy: {accuracy:.4f}")
    return accuracy


def cmd_demo(args):
    """Train the seed CNN on scikit-learn's bundled digits and save it."""
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
    model.fit(train.images, train.labels, epochs=args.epochs, batch_size=32, seed=args.seed)
    _print_accuracy(model, test, "test")
    path = os.path.join(args.out_dir, "model.convscope")
    model.save(path)
    print(f"saved model to {path}")


def cmd_train(args):
    """Train the seed CNN on a data set and save it."""
    from convscope.models import seed_cnn

    train = _load_split(args.dataset, args.data_dir, "train")
    print(
        f"data: {args.dataset}, {len(train.labels)} training images of "
        f"{'x'.join(map(str, train.images.shape[1:]))}, {len(train.class_names)} classes"
    )
    model = seed_cnn(
        train.images.shape[1:], len(train.class_names), seed=args.seed, class_names=train.class_names
    )
    model.summary()
    model.compile(_make_optimizer(args.optimizer, args.lr))
    model.fit(train.images, train.labels, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    model.save(args.out)
    print(f"saved model to {args.out}")


def cmd_evaluate(args):
    """Print a saved model's loss and accuracy on a data set's test split."""
    from convscope import load_model

    model = load_model(args.model)
    dataset = _load_split(args.dataset, args.data_dir, args.split)
    if dataset.images.shape[1:] != model.input_shape:
        raise ValueError(
            f"{args.model} expects images of {model.input_shape}, "
            f"{args.dataset} has {dataset.images.shape[1:]}"
        )
    _print_accuracy(model, dataset, args.split)


def cmd_predict(args):
    """Classify image files with a saved model."""
    from convscope import load_model
    from convscope.data.images import read_image

    model = load_model(args.model)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    for path in args.images:
        pixels, notes = read_image(path, model.input_shape, invert=args.invert)
        probabilities = model.predict_proba(pixels[None])[0]
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


def cmd_bench(args):
    """Measure the seed CNN's speed and memory beside PyTorch."""
    from convscope.bench import main_from_args

    main_from_args(args)


def build_parser():
    from convscope import __version__
    from convscope.data import DATASETS

    parser = argparse.ArgumentParser(
        prog="convscope", description="Build, train and look inside a convolutional neural network."
    )
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train the seed CNN on the bundled digits (offline)")
    demo.add_argument("--out-dir", default="demo-output", help="where to save model.convscope")
    demo.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=cmd_demo)

    def add_data_arguments(sub, default_dataset):
        sub.add_argument("--dataset", choices=DATASETS, default=default_dataset)
        sub.add_argument("--data-dir", help="folder with the data set's files (IDX for mnist, fashion-mnist)")

    train = commands.add_parser("train", help="train the seed CNN on a data set and save it")
    add_data_arguments(train, "digits")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="adam (default lr 1e-3) or sgd with momentum 0.9 (default lr 0.05)",
    )
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="model.convscope", help="model file to write")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="print a saved model's test accuracy")
    evaluate.add_argument("model", help="a .convscope model file")
    add_data_arguments(evaluate, "digits")
    evaluate.add_argument("--split", choices=("train", "test"), default="test")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="classify image files with a saved model")
    predict.add_argument("model", help="a .convscope model file")
    predict.add_argument("images", nargs="+", help="PNG, JPEG or other image files")
    predict.add_argument("--top", type=int, default=3, help="how many classes to list per image")
    predict.add_argument("--invert", action="store_true", help="invert gray levels before predicting")
    predict.set_defaults(run=cmd_predict)

    from convscope.bench import add_arguments as add_bench_arguments

    bench = commands.add_parser("bench", help="training and inference speed beside PyTorch")
    add_bench_arguments(bench)
    bench.set_defaults(run=cmd_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        print(f"convscope: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
