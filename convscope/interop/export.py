"""`convscope export`: write a saved model for ONNX or PyTorch, and check that the engines agree.

convscope export fm.convscope --format onnx --out fm.onnx           # NHWC input, as convscope
convscope export fm.convscope --format onnx --layout nchw --out fm.onnx
convscope export fm.convscope --format torch --out fm-torch/        # model.py + model.safetensors
convscope export fm.convscope --check                               # per-layer parity table
"""

import argparse
import importlib.util

FORMATS = ("onnx", "torch")
DEFAULT_TOLERANCE = 1e-4
FOREIGN_SUFFIXES = (".onnx", ".pt", ".pth", ".safetensors", ".h5", ".keras")


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", help="a .convscope model file")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="what to write (default onnx)")
    parser.add_argument(
        "--out",
        help="the .onnx file to write, or for --format torch a folder for model.py and model.safetensors",
    )
    parser.add_argument(
        "--layout",
        choices=("nhwc", "nchw"),
        help="ONNX input layout: nhwc (default, as convscope) or nchw (as PyTorch)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run convscope, torch and onnxruntime on one random batch and print the per-layer errors",
    )
    parser.add_argument("--check-batch", type=int, default=8, help="images in the --check batch (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --check batch")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"--check fails above this max rel error (default {DEFAULT_TOLERANCE:g})",
    )


def require(package: str, extra: str, what: str):
    """A ValueError with the install command when `package` is missing."""
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"{what} needs the {package} package: pip install 'convscope[{extra}]'")


def load_convscope_model(path):
    """convscope.load_model, with a hint when the file is another engine's model."""
    from convscope.model_file import ModelFileError, load_model

    try:
        return load_model(path)
    except ModelFileError as error:
        if str(path).lower().endswith(FOREIGN_SUFFIXES):
            raise ModelFileError(
                f"{error}; export reads .convscope files (to bring a torch.nn.Sequential in, use "
                "convscope.interop.from_torch)"
            ) from None
        raise


def _layout(args) -> str:
    if args.format == "torch" and args.layout == "nhwc":
        raise ValueError(
            "--format torch writes a model on (N, C, H, W) inputs; --layout applies to --format onnx"
        )
    return args.layout or "nhwc"


def _write(model, args, layout):
    """Write the export; returns what --check should run: (torch module or None, onnx bytes or None)."""
    if args.format == "onnx":
        require("onnx", "onnx", "--format onnx")
        from convscope.interop.onnx_export import OPSET, save_onnx

        proto = save_onnx(model, args.out, layout)
        outputs = ", ".join(output.name for output in proto.graph.output)
        print(
            f"wrote {args.out}: ONNX opset {OPSET}, input images {layout.upper()} "
            f"{tuple(d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim)}, "
            f"outputs {outputs}, {len(proto.graph.node)} nodes"
        )
        return None, proto.SerializeToString()
    require("torch", "torch", "--format torch")
    from convscope.interop.torch_export import load_torch_export, save_torch_export

    source, weights = save_torch_export(model, args.out)
    h, w, c = model.input_shape
    print(
        f"wrote {source} and {weights}: torch.nn.Sequential on (N, {c}, {h}, {w}) inputs "
        "(load_model() in model.py loads it)"
    )
    return (load_torch_export(args.out) if args.check else None), None


def _check(model, args, layout, net, onnx_bytes):
    for package, extra in (("torch", "torch"), ("onnx", "onnx"), ("onnxruntime", "onnx")):
        require(package, extra, "--check")
    from convscope.interop.onnx_export import to_onnx
    from convscope.interop.parity import format_parity, parity_report

    if onnx_bytes is None:
        onnx_bytes = to_onnx(model, layout).SerializeToString()
    report = parity_report(model, net, onnx_bytes, args.check_batch, args.seed)
    print(format_parity(report))
    worst = max(row["max_rel"] for row in report["torch"] + report["onnx"])
    if worst > args.tolerance:
        raise ValueError(
            f"parity check failed: max rel error {worst:.2e} is above --tolerance {args.tolerance:g}"
        )
    print(f"parity ok: every max rel error <= {args.tolerance:g} (worst {worst:.2e})")
    return report


def main_from_args(args):
    if args.out is None and not args.check:
        raise ValueError("give --out PATH to write the export, --check to compare the engines, or both")
    if args.check_batch < 1:
        raise ValueError(f"--check-batch must be >= 1, got {args.check_batch}")
    layout = _layout(args)
    model = load_convscope_model(args.model)
    net, onnx_bytes = _write(model, args, layout) if args.out else (None, None)
    if args.check:
        _check(model, args, layout, net, onnx_bytes)
