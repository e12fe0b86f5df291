"""Do the engines agree? convscope, its PyTorch conversion and its ONNX export on one seeded batch.

For torch, every convscope layer's output is compared with the output of the torch module at the
matching position (see `torch_positions`), in convscope's layout: 4D maps are transposed from
(N, C, H, W) to (N, H, W, C), and a flattened block is put back from torch's (c, h, w) order into
convscope's (h, w, c) order until the Dense layer whose permuted weight absorbs the difference.
For onnxruntime, the graph's outputs (logits, probabilities) are compared with convscope's.

Errors: max abs = max |theirs - ours|; max rel = max abs / max |ours| (relative to the tensor's
scale, not per element, which would blow up near zero).
"""

import numpy as np

from convscope import layers as L
from convscope.interop.pytorch import images_to_torch, torch_positions


def random_batch(input_shape, n: int = 8, seed: int = 0) -> np.ndarray:
    """(n, H, W, C) float32 images uniform in [0, 1), the range of convscope's data loaders."""
    return np.random.default_rng(seed).uniform(0, 1, (n, *input_shape)).astype(np.float32)


def errors(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |ours|) of two arrays of the same shape."""
    if ours.shape != theirs.shape:
        raise ValueError(f"parity: shapes differ, convscope {ours.shape} vs {theirs.shape}")
    max_abs = float(np.abs(ours.astype(np.float64) - theirs).max(initial=0.0))
    return max_abs, max_abs / max(float(np.abs(ours).max(initial=0.0)), 1e-30)


def _torch_outputs(net, x: np.ndarray) -> list[np.ndarray]:
    """Every module's output for (N, H, W, C) images, in torch's layout."""
    import torch

    net.eval()
    outputs, t = [], images_to_torch(x)
    with torch.no_grad():
        for module in net:
            t = module(t)
            outputs.append(t.detach().cpu().numpy())
    return outputs


def _in_convscope_layout(theirs: np.ndarray, flattened_from):
    """A torch output in convscope's layout, and a note saying what was reordered."""
    if theirs.ndim == 4:
        return theirs.transpose(0, 2, 3, 1), "NCHW -> NHWC"
    if flattened_from is not None:
        h, w, c = flattened_from
        flat = theirs.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(theirs.shape[0], -1)
        return flat, "(c,h,w) -> (h,w,c) order"
    return theirs, ""


def _row(index, layer: str, ours: np.ndarray, position: int, module, theirs: np.ndarray, note: str) -> dict:
    max_abs, max_rel = errors(ours, theirs)
    return {
        "index": index,
        "layer": layer,
        "shape": tuple(ours.shape),
        "torch": f"{position} {type(module).__name__}",
        "max_abs": max_abs,
        "max_rel": max_rel,
        "note": note,
    }


def torch_layer_parity(model, net, x: np.ndarray) -> list[dict]:
    """One row per convscope layer: its output beside the torch module's at the matching position;
    first, for a model with an input standardisation, a row for it (index '-', torch module 0)."""
    ours = model.feature_maps(x)
    theirs = _torch_outputs(net, x)
    rows, flattened_from = [], None
    if model.standardization is not None:
        standardized = model.standardize(x)
        other, note = _in_convscope_layout(theirs[0], None)
        rows.append(_row("-", "standardization", standardized, 0, net[0], other, note))
    for index, (layer, position) in enumerate(zip(model.layers, torch_positions(model), strict=True)):
        if isinstance(layer, L.Flatten):
            if len(layer.input_shape) == 3:  # a Flatten of a flat input keeps the pending order
                flattened_from = layer.input_shape
        elif isinstance(layer, L.Dense):
            flattened_from = None
        other, note = _in_convscope_layout(theirs[position], flattened_from)
        name = f"{layer.name} ({type(layer).__name__})"
        rows.append(_row(index, name, ours[index], position, net[position], other, note))
    return rows


def onnx_parity(model, onnx_bytes: bytes, x: np.ndarray) -> list[dict]:
    """One row per graph output: onnxruntime beside convscope's logits or probabilities."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    layout = session.get_modelmeta().custom_metadata_map.get("input_layout", "NHWC")
    feed = x if layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    names = [output.name for output in session.get_outputs()]
    logits = model.forward_logits(model.standardize(x))
    expected = {"logits": logits, "probabilities": model(x)}
    rows = []
    for name, value in zip(names, session.run(names, {session.get_inputs()[0].name: feed}), strict=True):
        max_abs, max_rel = errors(expected[name], value)
        same = int((value.argmax(axis=1) == logits.argmax(axis=1)).sum())
        rows.append({"output": name, "max_abs": max_abs, "max_rel": max_rel, "same_class": same})
    return rows


def parity_report(model, net=None, onnx_bytes=None, batch_size: int = 8, seed: int = 0) -> dict:
    """Run convscope, torch (`net`, default to_torch(model)) and onnxruntime (`onnx_bytes`, default
    the NHWC export) on one random batch; returns the rows of both comparisons."""
    from convscope.interop.onnx_export import to_onnx
    from convscope.interop.pytorch import to_torch

    if batch_size < 1:
        raise ValueError(f"parity: the batch needs at least 1 image, got {batch_size}")
    x = random_batch(model.input_shape, batch_size, seed)
    net = to_torch(model) if net is None else net
    onnx_bytes = to_onnx(model).SerializeToString() if onnx_bytes is None else onnx_bytes
    return {
        "batch": batch_size,
        "seed": seed,
        "torch": torch_layer_parity(model, net, x),
        "onnx": onnx_parity(model, onnx_bytes, x),
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def format_parity(report: dict) -> str:
    """The report as two plain-text tables."""
    torch_rows = [
        [
            f"{row['index']} {row['layer']}",
            str(row["shape"]),
            row["torch"],
            f"{row['max_abs']:.2e}",
            f"{row['max_rel']:.2e}",
            row["note"],
        ]
        for row in report["torch"]
    ]
    onnx_rows = [
        [
            row["output"],
            f"{row['max_abs']:.2e}",
            f"{row['max_rel']:.2e}",
            f"{row['same_class']}/{report['batch']}",
        ]
        for row in report["onnx"]
    ]
    return "\n".join(
        [f"parity on {report['batch']} random images (seed {report['seed']}), errors against convscope", ""]
        + _table(
            ["convscope layer", "output shape", "torch module", "max abs", "max rel", "compared as"],
            torch_rows,
        )
        + [""]
        + _table(["onnxruntime output", "max abs", "max rel", "same class"], onnx_rows)
    )


def worst_error(report: dict) -> float:
    """The largest max-abs error in the report (torch layers and onnx outputs)."""
    return max(row["max_abs"] for row in report["torch"] + report["onnx"])


__all__ = [
    "format_parity",
    "onnx_parity",
    "parity_report",
    "random_batch",
    "torch_layer_parity",
    "worst_error",
]
