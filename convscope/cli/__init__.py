"""The `convscope` command: a thin shell over the library; no maths here.

One module per command group (train: demo, train; evaluate: evaluate, predict; explain: convolve,
explain; data: data download, data list; serve: bench, export, serve); the option types and the data-set
options they share are in options.py.
"""

import sys

from convscope.cli import data, evaluate, explain, serve, train
from convscope.cli.options import Parser, show_defaults


def build_parser():
    from convscope import __version__

    parser = Parser(
        prog="convscope", description="Build, train and look inside a convolutional neural network."
    )
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (train, evaluate, explain, data, serve):
        group.add_commands(commands)
    show_defaults(parser)
    return parser


def main(argv=None) -> int:
    from convscope.train import TrainingDiverged

    args = build_parser().parse_args(argv)
    if getattr(args, "validate_arguments", None) is not None:
        args.validate_arguments(args)  # several flags at once, or files: still before any work
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
