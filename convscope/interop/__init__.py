"""Bridges to other engines. Importing this package does not import torch or onnx; calling does.

- to_torch / from_torch: convscope Sequential <-> torch.nn.Sequential, weights included;
- to_onnx / save_onnx: an ONNX graph (opset 13) for onnxruntime and other runtimes;
- save_torch_export / load_torch_export: model.py + model.safetensors for PyTorch users;
- parity_report: convscope, torch and onnxruntime side by side on one batch.
"""


def to_torch(model):
    """convscope Sequential -> torch.nn.Sequential with the same weights (see interop.pytorch)."""
    from convscope.interop.pytorch import to_torch as convert

    return convert(model)


def from_torch(module, input_shape, class_names=None, name="from_torch", seed=0):
    """torch.nn.Sequential -> convscope Sequential on (H, W, C) = input_shape (see interop.torch_import)."""
    from convscope.interop.torch_import import from_torch as convert

    return convert(module, input_shape, class_names=class_names, name=name, seed=seed)


def to_onnx(model, layout="nhwc"):
    """convscope Sequential -> checked onnx.ModelProto (see interop.onnx_export)."""
    from convscope.interop.onnx_export import to_onnx as convert

    return convert(model, layout)


def save_onnx(model, path, layout="nhwc"):
    """Write the ONNX export of `model` to `path` (see interop.onnx_export)."""
    from convscope.interop.onnx_export import save_onnx as save

    return save(model, path, layout)


def save_torch_export(model, out_dir):
    """Write out_dir/model.py and out_dir/model.safetensors (see interop.torch_export)."""
    from convscope.interop.torch_export import save_torch_export as save

    return save(model, out_dir)


def load_torch_export(folder, device="cpu"):
    """The nn.Sequential of a folder written by save_torch_export, weights loaded (runs its model.py)."""
    from convscope.interop.torch_export import load_torch_export as load

    return load(folder, device)


def parity_report(model, net=None, onnx_bytes=None, batch_size=8, seed=0):
    """convscope vs torch (per layer) vs onnxruntime on one seeded batch (see interop.parity)."""
    from convscope.interop.parity import parity_report as report

    return report(model, net, onnx_bytes, batch_size, seed)


__all__ = [
    "from_torch",
    "load_torch_export",
    "parity_report",
    "save_onnx",
    "save_torch_export",
    "to_onnx",
    "to_torch",
]
