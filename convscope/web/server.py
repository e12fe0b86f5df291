"""`convscope serve`: build the app and run it under uvicorn, on 127.0.0.1 unless told otherwise."""

import socket

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_MODELS_DIR = "convscope-models"


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port) (port 0: any free one), or an OSError with a clear sentence."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        message = f"cannot listen on {host}:{port} ({error.strerror}): choose another --port"
        raise OSError(message) from None
    return sock


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _closing_server(server_class):
    """uvicorn's Server class, made to set the app's `closing` event at Ctrl+C (or SIGTERM), so that open
    event streams end at once instead of holding the shutdown until their training job ends."""

    class ClosingServer(server_class):
        def __init__(self, config, closing):
            super().__init__(config)
            self.closing = closing

        def handle_exit(self, sig, frame):
            self.closing.set()
            super().handle_exit(sig, frame)

    return ClosingServer


def serve(model_files=(), models_dir=DEFAULT_MODELS_DIR, data_dirs=(), host="127.0.0.1", port=8000):
    """Serve the explorer until Ctrl+C. Prints the URL, the models and where trained models are saved."""
    import uvicorn

    from convscope.web.app import create_app

    app = create_app(model_files, models_dir, data_dirs)
    sock = listen(host, port)
    registry = app.state.registry
    names = ", ".join(registry.entries()) or "none yet (train one in the training view)"
    print(f"models: {names}")
    print(f"trained models are saved in {registry.models_dir}")
    print(f"data sets for training: {', '.join(app.state.trainer.sources)}")
    if host not in LOOPBACK:
        print(f"warning: listening on {host}: anyone who can reach this machine can use the explorer")
    print(f"convscope explorer: {url_for(host, sock.getsockname()[1])}   (Ctrl+C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = _closing_server(uvicorn.Server)(config, app.state.closing)
    with sock:
        server.run(sockets=[sock])


def port_number(text: str) -> int:
    """--port: a TCP port, 0 to 65535 (0: any free one)."""
    if text.isdigit() and int(text) <= 65535:
        return int(text)
    import argparse

    raise argparse.ArgumentTypeError(
        f"must be a port number from 0 to 65535 (0: any free port), got {text!r}"
    )


def add_arguments(parser) -> None:
    """The options of `convscope serve`."""
    parser.add_argument(
        "--model", action="append", default=[], metavar="FILE", help="a .convscope model file (repeatable)"
    )
    parser.add_argument(
        "--models-dir",
        default=DEFAULT_MODELS_DIR,
        metavar="DIR",
        help=f"folder of .convscope files, listed by name; trained models are saved here (default: "
        f"{DEFAULT_MODELS_DIR}, created on the first save)",
    )
    parser.add_argument(
        "--data-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder holding a data set's IDX or CIFAR files, or holding such folders (e.g. "
        "fashion-mnist/, cifar10-catdog/): offered for training beside the bundled digits (repeatable)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: only this machine)"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=8000,
        help="port to listen on (default %(default)s; 0: any free port)",
    )


def main_from_args(args) -> None:
    serve(args.model, args.models_dir, args.data_dir, args.host, args.port)
