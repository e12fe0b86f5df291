"""Network view API: the models, one image through a model layer by layer, the kernel behind a map."""

import json
import threading
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from convscope.layers import Softmax
from convscope.ops import softmax
from convscope.web.encoding import encode_block, encode_image, encode_vector, rounded
from convscope.web.errors import WebError
from convscope.web.uploads import decode_image, read_upload, to_model_input

router = APIRouter(prefix="/api/models", tags=["network"])
_replicas = threading.local()  # each worker thread's replicas of the models, by id of the shared model


def _thread_replica(model):
    """This thread's replica of `model`: it shares the parameters but has its own layer caches, so
    concurrent predictions need no lock (one shared model would make every request wait for the last)."""
    cache = getattr(_replicas, "models", None)
    if cache is None:
        cache = _replicas.models = {}
    entry = cache.get(id(model))
    if entry is None or entry[0] is not model:
        entry = cache[id(model)] = (model, model.replica())
    return entry[1]


def _registry(request: Request):
    return request.app.state.registry


def model_summary(entry, model) -> dict:
    """What the model picker shows: name, file, input shape, classes, parameter count."""
    return {
        "name": entry.name,
        "file": entry.path.rsplit("/", 1)[-1],
        "source": entry.source,
        "input_shape": list(model.input_shape),
        "num_classes": int(model.num_classes),
        "class_names": _class_names(model),
        "params": int(model.count_params()),
        "standardized": model.standardization is not None,
        "drawable": model.input_shape[2] == 1,
        "error": None,
    }


def _class_names(model) -> list[str]:
    return [str(name) for name in (model.class_names or range(model.num_classes))]


def _layer_info(index: int, layer) -> dict:
    """A layer's entry in the model detail; a residual block's layers are listed in its `inside`."""
    info = {
        "index": index,
        "name": layer.name,
        "type": type(layer).__name__,
        "output_shape": list(layer.output_shape),
        "params": int(layer.count_params()),
        "config": layer.get_config(),
    }
    if hasattr(layer, "named_layers"):
        info["inside"] = [
            {
                "path": path,
                "name": inner.name,
                "type": type(inner).__name__,
                "output_shape": list(inner.output_shape),
                "params": int(inner.count_params()),
            }
            for path, inner in layer.named_layers()
        ]
    return info


@router.get("", summary="List the models the server may open")
def list_models(request: Request) -> dict:
    """Every configured model by name; a model whose file cannot be loaded carries an `error` sentence."""
    registry = _registry(request)
    models = []
    for entry in registry.entries().values():
        try:
            models.append(model_summary(entry, registry.load(entry.name)))
        except WebError as error:
            models.append({"name": entry.name, "file": entry.path.rsplit("/", 1)[-1], "error": error.message})
    return {"models": models, "models_dir": registry.models_dir}


@router.get("/{name}", summary="One model: its layers and shapes")
def model_detail(name: str, request: Request) -> dict:
    registry = _registry(request)
    model = registry.load(name)
    detail = model_summary(registry.entry(name), model)
    detail["layers"] = [_layer_info(i, layer) for i, layer in enumerate(model.layers)]
    return detail


def _inside_outputs(block, block_input) -> list[dict]:
    """The output of every layer inside a residual block for one image (its body's, then its
    shortcut's), from the block's input (1, H, W, C)."""
    body, shortcut = block.branch_outputs(block_input)
    return [
        {"path": path, "name": inner.name, "type": type(inner).__name__, "block": encode_block(output[0])}
        for (path, inner), output in zip(block.named_layers(), [*body, *shortcut], strict=True)
    ]


def _layer_outputs(model, outputs, standardized) -> list[dict]:
    """Every layer's output for one image (`outputs`: model.feature_maps of a batch of one): blocks
    (H, W, C) as maps, flat outputs as vectors; a residual block's also the maps inside it."""
    layers = []
    inputs = [standardized, *outputs[:-1]]
    for index, (layer, output) in enumerate(zip(model.layers, outputs, strict=True)):
        entry = {
            "index": index,
            "name": layer.name,
            "type": type(layer).__name__,
            "shape": list(output.shape[1:]),
        }
        if output.ndim == 4:
            entry["block"] = encode_block(output[0])
        else:
            entry["vector"] = encode_vector(output[0])
        if hasattr(layer, "named_layers"):
            entry["inside"] = _inside_outputs(layer, inputs[index])
        layers.append(entry)
    return layers


@router.post("/{name}/predict", summary="Send one image through the model: every layer's output")
async def predict(
    name: str,
    request: Request,
    image: Annotated[UploadFile, File(description="an image file (PNG, JPEG, ...) or the canvas as PNG")],
    invert: Annotated[bool, Form(description="invert gray levels (dark ink on light paper)")] = False,
    drawing: Annotated[bool, Form(description="frame a light-on-dark drawing around its ink first")] = False,
) -> dict:
    """The input as the model sees it, every layer's output and the class probabilities.

    Limits: 8 MB per upload, 16 megapixels per image; errors are JSON sentences (413, 415, 422).
    """
    data = await read_upload(image)
    body = await run_in_threadpool(_predict_json, _registry(request), name, data, invert, drawing)
    return Response(body, media_type="application/json")  # already JSON: nothing left for the event loop


def _predict_json(registry, name: str, data: bytes, invert: bool, drawing: bool) -> bytes:
    """_predict's answer as JSON bytes, encoded in the worker thread."""
    return json.dumps(_predict(registry, name, data, invert, drawing), separators=(",", ":")).encode()


def _probabilities(model, last_output: np.ndarray) -> np.ndarray:
    """The class probabilities from the last layer's output: itself when the model ends in a softmax."""
    last = model.layers[-1]
    if isinstance(last, Softmax) or getattr(last, "activation", None) == "softmax":
        return last_output
    return softmax(last_output[None])[0]


def _predict(registry, name: str, data: bytes, invert: bool, drawing: bool) -> dict:
    """The work of /predict, off the event loop: decode, convert, one forward pass, encode."""
    started = time.perf_counter()
    model = registry.load(name)
    image = decode_image(data)
    pixels, notes = to_model_input(data, image, model.input_shape, invert=invert, drawing=drawing)
    replica = _thread_replica(model)
    outputs = replica.feature_maps(pixels[None])
    layers = _layer_outputs(replica, outputs, replica.standardize(pixels[None]))
    probabilities = _probabilities(model, outputs[-1][0])
    names = _class_names(model)
    best = int(probabilities.argmax())
    return {
        "model": name,
        "input": {"image": encode_image(pixels), "notes": notes, "standardization": model.standardization},
        "layers": layers,
        "probabilities": rounded(probabilities),
        "class_names": names,
        "prediction": {"index": best, "name": names[best], "probability": float(probabilities[best])},
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _keeps_channels(layer) -> bool:
    """True for a layer that maps channel c to channel c (ReLU, pooling, batch norm, dropout); not for a
    residual block, whose maps are sums of two branches."""
    shapes = (layer.input_shape, layer.output_shape)
    return (
        type(layer).__name__ not in ("Conv2D", "Residual")
        and all(len(s) == 3 for s in shapes)
        and shapes[0][2] == shapes[1][2]
    )


def _source_conv(model, index: int) -> tuple[int, list[str]]:
    """The conv layer whose kernels made channel c of layer `index` (through ReLU, pooling and the other
    layers that keep the channels), and the names of the layers in between; a WebError if there is none."""
    layer = model.layers[index]
    through = []
    position = index
    while position >= 0 and _keeps_channels(model.layers[position]):
        through.insert(0, model.layers[position].name)
        position -= 1
    if position >= 0 and type(model.layers[position]).__name__ == "Residual":
        raise WebError(
            422,
            f"layer {index} ({layer.name}) comes from residual block {model.layers[position].name}: each of "
            "its maps is the sum of its body's output and its shortcut's (then ReLU), not one kernel's",
        )
    if position < 0 or type(model.layers[position]).__name__ != "Conv2D":
        raise WebError(
            422,
            f"layer {index} ({layer.name}) was not made by kernels: only conv layers (and the ReLU, "
            "pooling and other channel-keeping layers after them) have a kernel per feature map",
        )
    return position, through


@router.get("/{name}/layers/{index}/kernel", summary="The kernel that made one feature map")
def feature_map_kernel(name: str, index: int, channel: int, request: Request) -> dict:
    """Kernel `channel` of the conv layer behind layer `index`: weights (kh, kw, C_in) and its bias,
    listed C_in-major (one kh x kw slice per input channel), on the layer's symmetric scale."""
    model = _registry(request).load(name)
    if not 0 <= index < len(model.layers):
        raise WebError(404, f"model {name!r} has layers 0 to {len(model.layers) - 1}, not {index}")
    conv_index, through = _source_conv(model, index)
    conv = model.layers[conv_index]
    weights = conv.params["weight"]
    if not 0 <= channel < weights.shape[3]:
        raise WebError(
            422,
            f"layer {index} ({model.layers[index].name}) has channels 0 to {weights.shape[3] - 1}, "
            f"not {channel}",
        )
    kernel = weights[:, :, :, channel]
    bias = conv.params.get("bias")
    bound = float(np.abs(weights).max()) or 1.0
    return {
        "layer": index,
        "channel": channel,
        "conv_layer": conv_index,
        "conv_name": conv.name,
        "through": through,
        "shape": list(kernel.shape),
        "values": rounded(kernel.transpose(2, 0, 1)),
        "bias": None if bias is None else float(bias[channel]),
        "bound": bound,
        "stride": conv.get_config()["stride"],  # an int, or [sh, sw] when they differ
        "padding": conv.padding_arg,
    }
