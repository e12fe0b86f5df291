"""convscope -> files PyTorch users load without convscope: `model.safetensors` (the state_dict in
torch layout) and `model.py` (generated source defining the matching nn.Sequential and a loader).

    import importlib.util  # or copy model.py into your project and `from model import load_model`
    net = load_model()     # nn.Sequential on (N, C, H, W) float32 images, in eval mode

The architecture comes from `to_torch(model)`, so the exported files and to_torch agree by
construction; the state_dict is saved with safetensors (no pickle).
"""

import importlib.util
import json
import os

import numpy as np

from convscope.interop.pytorch import modules_per_layer, pads_before, to_torch

STANDARDIZATION_NOTE = "input standardisation (x - mean) / std; keep in eval mode"
SOURCE_FILE = "model.py"
WEIGHTS_FILE = "model.safetensors"

SOURCE_TEMPLATE = '''"""{name}: a convscope model exported for PyTorch by convscope {version}.

build_model() makes the network; load_model() also loads the trained weights from {weights}
beside this file (safetensors, no pickle). Inputs are (N, C, H, W) = (N, {c}, {h}, {w}) float32
images in [0, 1]; convscope's (N, H, W, C) arrays become that with
torch.from_numpy(x).permute(0, 3, 1, 2). The output is {output} (N, {k}).
"""

from pathlib import Path

{torch_import}from torch import nn

INPUT_SHAPE = ({c}, {h}, {w})  # (C, H, W)
CLASS_NAMES = {class_names}
WEIGHTS = Path(__file__).with_name("{weights}")
{blocks}

def build_model() -> nn.Sequential:
    """The architecture, with PyTorch's default initialisation."""
    return nn.Sequential(
{modules}
    )


def load_model(weights=WEIGHTS, device="cpu") -> nn.Sequential:
    """build_model() with the exported weights, in eval mode."""
    from safetensors.torch import load_file

    model = build_model()
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval()
'''


def _residual_source(module, indent: str) -> str:
    """A torch_blocks.Residual's constructor call, its body's and shortcut's modules one a line."""

    def sequential(modules) -> str:
        inner = indent + "        "
        lines = [f"{inner}{module_source(m, inner)},  # {i}" for i, m in enumerate(modules)]
        return "nn.Sequential(\n" + "\n".join(lines) + f"\n{indent}    )"

    shortcut = "None" if type(module.shortcut).__name__ == "Identity" else sequential(module.shortcut)
    return (
        f"Residual(\n{indent}    {sequential(module.body)},\n{indent}    {shortcut},\n"
        f"{indent}    relu={module.relu},\n{indent})"
    )


def blocks_source() -> str:
    """The source of the residual block modules (convscope.interop.torch_blocks), for model.py."""
    import inspect

    from convscope.interop import torch_blocks

    classes = (torch_blocks.Residual, torch_blocks.SubsampleZeroPad)
    return "\n\n" + "\n\n".join(inspect.getsource(cls) for cls in classes)


def module_source(module, indent: str = "        ") -> str:
    """The constructor call that rebuilds one of to_torch's modules, e.g. 'nn.ReLU()'."""
    kind = type(module).__name__
    if kind == "Residual":
        return _residual_source(module, indent)
    if kind == "SubsampleZeroPad":
        return f"SubsampleZeroPad({module.channels}, stride={module.stride})"
    if kind == "Conv2d":
        sizes = f"kernel_size={tuple(module.kernel_size)}, stride={tuple(module.stride)}"
        padding = f"padding={module.padding!r}, bias={module.bias is not None}"
        extras = "" if tuple(module.dilation) == (1, 1) else f", dilation={tuple(module.dilation)}"
        extras += "" if module.groups == 1 else f", groups={module.groups}"
        return f"nn.Conv2d({module.in_channels}, {module.out_channels}, {sizes}, {padding}{extras})"
    if kind == "Linear":
        return f"nn.Linear({module.in_features}, {module.out_features}, bias={module.bias is not None})"
    if kind in ("MaxPool2d", "AvgPool2d"):
        settings = f"kernel_size={module.kernel_size!r}, stride={module.stride!r}"
        if module.padding not in (0, (0, 0)) or module.ceil_mode:
            settings += f", padding={module.padding!r}, ceil_mode={module.ceil_mode}"
        if kind == "AvgPool2d":
            settings += f", count_include_pad={module.count_include_pad}"
        return f"nn.{kind}({settings})"
    if kind == "ZeroPad2d":
        return f"nn.ZeroPad2d({tuple(module.padding)!r})"
    if kind == "Softmax":
        return f"nn.Softmax(dim={module.dim})"
    if kind == "Dropout":
        return f"nn.Dropout(p={module.p!r})"
    if kind == "BatchNorm2d":
        settings = f"eps={module.eps!r}, momentum={module.momentum!r}, affine={module.affine}"
        return f"nn.BatchNorm2d({module.num_features}, {settings})"
    if kind == "AdaptiveAvgPool2d":
        return f"nn.AdaptiveAvgPool2d({module.output_size!r})"
    if kind in ("ReLU", "Flatten"):
        return f"nn.{kind}()"
    raise ValueError(f"torch export: no source for module type {kind}")


def torch_source(model, net=None) -> str:
    """The text of model.py for `model` (net: its to_torch conversion, if already made)."""
    from convscope import __version__

    net = to_torch(model) if net is None else net
    h, w, c = model.input_shape
    ends_in_softmax = type(net[-1]).__name__ == "Softmax"
    has_blocks = any(type(module).__name__ in ("Residual", "SubsampleZeroPad") for module in net.modules())
    origins = [] if model.standardization is None else [STANDARDIZATION_NOTE]
    for layer in model.layers:
        if pads_before(layer):
            origins.append(f"{layer.name}'s padding (left, right, top, bottom)")
        origins.append(layer.name)
        if getattr(layer, "activation", None):
            origins.append(f"{layer.name}'s {layer.activation}")
        elif modules_per_layer(layer) - pads_before(layer) == 2:
            origins.append(f"{layer.name}'s flatten")
    lines = [
        f"        {module_source(module)},  # {index}: {origin}"
        for index, (module, origin) in enumerate(zip(net, origins, strict=True))
    ]
    return SOURCE_TEMPLATE.format(
        name=model.name,
        version=__version__,
        weights=WEIGHTS_FILE,
        c=c,
        h=h,
        w=w,
        k=model.num_classes,
        output="class probabilities" if ends_in_softmax else "logits",
        class_names="None" if model.class_names is None else json.dumps(model.class_names),
        modules="\n".join(lines),
        torch_import="import torch\n" if has_blocks else "",
        blocks=blocks_source() if has_blocks else "",
    )


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_torch_export(model, out_dir) -> tuple[str, str]:
    """Write `out_dir`/model.py and `out_dir`/model.safetensors; returns their paths."""
    from safetensors.numpy import save_file

    from convscope import __version__

    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(
            f"torch export: --out must be a folder (for {SOURCE_FILE} and {WEIGHTS_FILE}), "
            f"got the file {out_dir}"
        )
    os.makedirs(out_dir, exist_ok=True)
    net = to_torch(model)
    state = {k: np.ascontiguousarray(v.detach().numpy()) for k, v in net.state_dict().items()}
    metadata = {
        "format": "convscope-torch-export",
        "convscope_version": __version__,
        "class_names": json.dumps(model.class_names),
        "input_shape_nchw": json.dumps([model.input_shape[2], *model.input_shape[:2]]),
    }
    weights_path = os.path.join(out_dir, WEIGHTS_FILE)
    source_path = os.path.join(out_dir, SOURCE_FILE)
    save_file(state, weights_path, metadata=metadata)
    os.chmod(weights_path, 0o666 & ~_umask())  # safetensors creates it 0600; give it an ordinary file's mode
    with open(source_path, "w", encoding="utf-8") as f:
        f.write(torch_source(model, net))
    return source_path, weights_path


def import_torch_export(folder):
    """Run `folder`/model.py (written by save_torch_export) and return it as a Python module, with
    INPUT_SHAPE (C, H, W), CLASS_NAMES, build_model() and load_model(weights, device).

    This executes the Python file: use it on folders you wrote or trust, as with any import.
    """
    source_path = os.path.join(os.fspath(folder), SOURCE_FILE)
    if not os.path.isfile(source_path):
        raise FileNotFoundError(f"{folder}: no {SOURCE_FILE} here (not a convscope torch export)")
    spec = importlib.util.spec_from_file_location(f"convscope_export_{abs(hash(source_path))}", source_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_torch_export(folder, device="cpu"):
    """The nn.Sequential of a folder written by save_torch_export, weights loaded, in eval mode
    (runs its model.py: see import_torch_export)."""
    return import_torch_export(folder).load_model(device=device)
