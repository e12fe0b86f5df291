"""`convscope bench`, `convscope export` and `convscope serve`: speed, other engines, the web explorer.
Their options live beside the code they drive (bench.py, interop/export.py, web/server.py)."""


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


def add_commands(commands):
    """The `bench`, `export` and `serve` commands."""
    from convscope.bench import add_arguments as add_bench_arguments
    from convscope.interop.export import add_arguments as add_export_arguments
    from convscope.web.server import add_arguments as add_serve_arguments

    bench = commands.add_parser("bench", help="training and inference speed beside PyTorch")
    add_bench_arguments(bench)
    bench.set_defaults(run=cmd_bench)

    export = commands.add_parser("export", help="write a model for ONNX or PyTorch; --check compares engines")
    add_export_arguments(export)
    export.set_defaults(run=cmd_export)

    serve = commands.add_parser("serve", help="the web explorer: draw, convolve and train in the browser")
    add_serve_arguments(serve)
    serve.set_defaults(run=cmd_serve)
