"""Network view API for "why": attribution maps over the input, and what a feature map's kernel wants
to see (activation maximisation). The same library calls as `convscope explain --why`."""

import json
import threading
import time
from collections import OrderedDict
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from convscope.explain import attribution, maximize
from convscope.web.encoding import encode_image, encode_scaled
from convscope.web.errors import WebError
from convscope.web.network import _registry, _source_conv, _thread_replica
from convscope.web.uploads import decode_image, read_upload, to_model_input

router = APIRouter(prefix="/api/models", tags=["why"])
MAXIMIZE_SETTINGS = maximize.Settings(steps=96, starts=2)
MAXIMIZED_CACHE_SIZE = 256


class _MaximizedCache:
    """Optimised inputs by (model, conv layer, channel), the oldest dropped beyond a bound; a model
    reloaded from a changed file is a new object, so its entries are never reused."""

    def __init__(self, size: int = MAXIMIZED_CACHE_SIZE):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key, value):
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


_maximized = _MaximizedCache()


@router.get("/{name}/attribution", summary="What the attribution overlay can show for this model")
def attribution_options(name: str, request: Request) -> dict:
    """The methods, the classes, the layers Grad-CAM can look at and its default layer. Asked when a model
    is chosen, it also runs one gradient pass, so the first overlay does not wait for the compiled
    kernels to load."""
    model = _registry(request).load(name)
    attribution.input_gradients(_thread_replica(model), np.zeros((1, *model.input_shape), np.float32), 0)
    layers = [model.layers[i].name for i in attribution.spatial_layers(model)]
    return {
        "methods": list(attribution.METHODS),
        "class_names": attribution.class_names(model),
        "layers": layers,
        "default_layer": model.layers[attribution.default_gradcam_layer(model)].name if layers else None,
        "scales": attribution.SCALES,
    }


@router.post("/{name}/attribution", summary="An attribution map of one image, at the input's resolution")
async def attribution_map(
    name: str,
    request: Request,
    image: Annotated[UploadFile, File(description="an image file (PNG, JPEG, ...) or the canvas as PNG")],
    method: Annotated[str, Form(description="gradient, smoothgrad, gradcam or occlusion")] = "gradient",
    target: Annotated[str, Form(description="the class, by name or index; empty: the predicted one")] = "",
    layer: Annotated[str, Form(description="Grad-CAM's layer by name; empty: the default")] = "",
    invert: Annotated[bool, Form(description="invert gray levels (dark ink on light paper)")] = False,
    drawing: Annotated[bool, Form(description="frame a light-on-dark drawing around its ink first")] = False,
) -> Response:
    """The map of `method` for class `target` (default: the predicted class), on its stated colour scale:
    magma from 0 for gradient, SmoothGrad and Grad-CAM, RdBu_r around 0 for occlusion."""
    data = await read_upload(image)
    answer = await run_in_threadpool(
        _attribution_json, _registry(request), name, data, method, target, layer, invert, drawing
    )
    return Response(answer, media_type="application/json")


def _attribution_json(registry, name, data, method, target, layer, invert, drawing) -> bytes:
    started = time.perf_counter()
    model = registry.load(name)
    image = decode_image(data)
    pixels, _ = to_model_input(data, image, model.input_shape, invert=invert, drawing=drawing)
    try:
        result = attribution.attribute(
            _thread_replica(model), pixels, method, target=target or None, layer=layer or None, samples=16
        )
    except ValueError as error:
        raise WebError(422, str(error)) from None
    values = result.values[:, :, None]
    if result.signed:
        bound = float(abs(values).max()) or 1.0
        encoded = encode_scaled(values, -bound, bound, "RdBu_r")
    else:
        encoded = encode_scaled(values, 0.0, float(values.max()) or 1.0, "magma")
    answer = {
        "model": name,
        "method": result.method,
        "target": result.target,
        "class_name": result.class_name,
        "predicted": result.predicted,
        "probability": result.probability,
        "layer": result.layer,
        "settings": result.settings,
        "map": encoded,
        "scale": result.scale,
        "peak": list(result.peak()),
        "method_ms": round(result.seconds * 1000, 1),
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return json.dumps(answer, separators=(",", ":")).encode()


@router.get("/{name}/layers/{index}/maximized", summary="The input the kernel behind a feature map wants")
def maximized_input(name: str, index: int, channel: int, request: Request) -> dict:
    """Activation maximisation for kernel `channel` of the conv layer behind layer `index` (through the
    ReLU, pooling and other channel-keeping layers after it): the optimised input in 0..1, seeded, the
    value it reaches and the receptive field of that value's position. Cached per model and kernel."""
    model = _registry(request).load(name)
    if not 0 <= index < len(model.layers):
        raise WebError(404, f"model {name!r} has layers 0 to {len(model.layers) - 1}, not {index}")
    conv_index, _ = _source_conv(model, index)
    filters = model.layers[conv_index].filters
    if not 0 <= channel < filters:
        raise WebError(422, f"layer {index} ({model.layers[index].name}) has channels 0 to {filters - 1}")
    key = (id(model), conv_index, channel)
    cached = _maximized.get(key)
    if cached is not None and cached[0] is model:
        return dict(cached[1], cached=True)
    started = time.perf_counter()
    result = maximize.maximize_kernels(_thread_replica(model), conv_index, [channel], MAXIMIZE_SETTINGS)
    row, column = (int(v) for v in result.positions[0])
    rows, columns = result.field.window(row, column)
    answer = {
        "layer": index,
        "conv_layer": conv_index,
        "conv_name": model.layers[conv_index].name,
        "channel": channel,
        "image": encode_image(result.images[0]),
        "value": float(result.values[0]),
        "position": [row, column],
        "field": {"top": rows.start, "left": columns.start, "size": list(result.field.size)},
        "steps": MAXIMIZE_SETTINGS.steps,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "cached": False,
    }
    _maximized.put(key, (model, answer))
    return answer
