"""The network designer's checks: a designed architecture (the model file's JSON config: a list of
{"type", "config"} layers for the data set's input shape) built layer by layer by the library's own code,
every row's output shape, parameter count and size rule, or the library's error sentence for that row.

The page never does the maths: it sends the architecture on every edit and draws what comes back; a
training job is started only from an architecture that passes the same check (never trusted from the
client). Sizes are bounded so that no page can ask for a network that exhausts the machine (LIMITS).
"""

import math
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from convscope.explain.convolve import size_rule_text
from convscope.model_file import (
    MAX_CONFIG_BYTES,
    DrawLimit,
    TooManyValues,
    config_problem,
    layer_values,
)
from convscope.web.errors import WebError

router = APIRouter(prefix="/api/designer", tags=["designer"])

MAX_LAYERS = 40  # rows in one design
MAX_PARAMS = 5_000_000  # weights and biases, all layers together (20 MB of float32)
MAX_LAYER_VALUES = 4_000_000  # one layer for one image: its output, padded input or im2col columns
MAX_IMAGE_VALUES = 8_000_000  # every layer's output for one image, summed (what training keeps)
MAX_BATCH_VALUES = 200_000_000  # batch size x MAX_IMAGE_VALUES' sum: at most 800 MB of activations
LIMITS = {
    "max_layers": MAX_LAYERS,
    "max_params": MAX_PARAMS,
    "max_layer_values": MAX_LAYER_VALUES,
    "max_image_values": MAX_IMAGE_VALUES,
    "max_batch_values": MAX_BATCH_VALUES,
}
LIMITS_TEXT = (
    f"at most {MAX_LAYERS} layers and {MAX_PARAMS:,} parameters; one layer may hold at most "
    f"{MAX_LAYER_VALUES:,} values for one image (output, padded input or im2col columns), all layers "
    f"together {MAX_IMAGE_VALUES:,}; batch size x those values at most {MAX_BATCH_VALUES:,}"
)
SIZE_RULE_LAYERS = ("Conv2D", "MaxPool2D", "AvgPool2D")
EMPTY_PRESET = "empty"


@dataclass
class DesignCheck:
    """What the check found: one row per layer, the totals, and the first problem as one sentence."""

    rows: list = field(default_factory=list)
    params: int = 0
    trainable: int = 0
    image_values: int = 0  # every layer's output for one image, summed
    output_shape: list | None = None
    error: str | None = None

    def fail(self, sentence: str):
        if self.error is None:
            self.error = sentence

    def as_dict(self) -> dict:
        return {
            "valid": self.error is None,
            "error": self.error,
            "rows": self.rows,
            "params": self.params,
            "trainable": self.trainable,
            "non_trainable": self.params - self.trainable,
            "image_values": self.image_values,
            "output_shape": self.output_shape,
            "limits": LIMITS,
        }


def _layer_names(layers: list) -> list[str]:
    """conv2d, relu, conv2d_1, ...: the names Sequential.build gives the same layers."""
    counts: dict[str, int] = {}
    names = []
    for entry in layers:
        kind = str(entry.get("type", "layer")).lower() if isinstance(entry, dict) else "layer"
        names.append(kind if kind not in counts else f"{kind}_{counts[kind]}")
        counts[kind] = counts.get(kind, 0) + 1
    return names


def _size_rules(layer) -> list[str] | None:
    """The output size rule with the layer's numbers, per axis ('height and width' when both agree)."""
    if type(layer).__name__ not in SIZE_RULE_LAYERS:
        return None
    kernel = getattr(layer, "kernel_size", None) or layer.pool_size
    dilation = getattr(layer, "dilation", (1, 1))
    rules = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        text = size_rule_text(layer.input_shape[axis], span, layer.stride[axis], layer.padding[axis])
        if getattr(layer, "ceil_mode", False):
            text = text.replace("floor", "ceil").rsplit("= ", 1)[0] + f"= {layer.output_shape[axis]}"
        rules.append(text)
    if rules[0] == rules[1]:
        return [f"height and width: {rules[0]}"]
    return [f"height: {rules[0]}", f"width: {rules[1]}"]


def _row(index: int, name: str, entry) -> dict:
    kind = entry.get("type") if isinstance(entry, dict) else None
    return {
        "index": index,
        "name": name,
        "type": kind,
        "output_shape": None,
        "params": None,
        "rule": None,
        "error": None,
    }


def check_design(layers, input_shape, num_classes: int) -> DesignCheck:
    """Build `layers` (the model file's list of {"type", "config"}) on images of `input_shape` (H, W, C)
    layer by layer, as a model file's trial build does, for a data set of `num_classes` classes.

    A row whose layer cannot be made or built carries the library's sentence; rows after one that failed
    to build have no shape (their input is unknown) but their settings are still checked."""
    from convscope.layers import layer_from_config

    check = DesignCheck()
    problem = config_problem({"input_shape": list(input_shape), "layers": layers})
    if isinstance(layers, list) and not layers:
        check.fail("the network has no layers: add some, or start from a preset")
        return check
    if problem is None and len(layers) > MAX_LAYERS:
        problem = f"the designer takes at most {MAX_LAYERS} layers, got {len(layers)}"
    if problem is not None:
        check.fail(f"the architecture is invalid: {problem}")
        return check
    rng = DrawLimit(MAX_PARAMS)
    shape = tuple(input_shape)
    names = _layer_names(layers)
    for index, entry in enumerate(layers):
        row = _row(index, names[index], entry)
        check.rows.append(row)
        try:
            layer = layer_from_config(entry)
        except (TypeError, ValueError) as error:
            row["error"] = str(error)
            check.fail(f"layer {index} ({names[index]}): {error}")
            shape = None
            continue
        if shape is None:
            continue  # the input of this layer is unknown: an earlier row failed
        try:
            shape = layer.build(shape, rng)
        except TooManyValues:
            row["error"] = (
                f"{type(layer).__name__} brings the network over {MAX_PARAMS:,} parameters, the designer's "
                "limit: use fewer filters or units, or shrink the block before it"
            )
        except (TypeError, ValueError, OverflowError) as error:
            row["error"] = str(error)
        else:
            _fill_row(check, row, layer)
        if row["error"] is not None:
            check.fail(f"layer {index} ({names[index]}): {row['error']}")
            shape = None
    if shape is not None:
        check.output_shape = list(shape)
        _check_output(check, shape, num_classes)
    return check


def _fill_row(check: DesignCheck, row: dict, layer) -> None:
    """A built layer's shape, parameters and size rule into its row; a row error over a size limit."""
    row["output_shape"] = list(layer.output_shape)
    row["params"] = layer.count_params()
    row["rule"] = _size_rules(layer)
    check.params += row["params"]
    check.trainable += layer.count_params(trainable=True)
    check.image_values += math.prod(layer.output_shape)
    values = layer_values(layer)
    if values > MAX_LAYER_VALUES:
        row["error"] = (
            f"this layer would hold {values:,} values for one image, over the designer's limit of "
            f"{MAX_LAYER_VALUES:,}: use fewer filters, a larger stride or pool first"
        )
    elif check.image_values > MAX_IMAGE_VALUES:
        row["error"] = (
            f"the layers up to here hold {check.image_values:,} values for one image, over the designer's "
            f"limit of {MAX_IMAGE_VALUES:,}: pool or stride earlier, or use fewer filters"
        )


def _check_output(check: DesignCheck, shape, num_classes: int) -> None:
    """The last layer must give one value per class."""
    if len(shape) != 1:
        check.fail(
            f"the model must end with a flat (num_classes,) output, got {tuple(shape)}: "
            f"end with Flatten (or GlobalAvgPool2D) and Dense({num_classes})"
        )
    elif shape[0] != num_classes:
        check.fail(
            f"the last layer gives {shape[0]} values, but the data set has {num_classes} classes: "
            f"end with Dense({num_classes})"
        )


def check_batch(check: DesignCheck, batch_size: int) -> None:
    """A WebError when a training batch of this design would hold too many values."""
    if batch_size * check.image_values > MAX_BATCH_VALUES:
        largest = max(1, MAX_BATCH_VALUES // max(check.image_values, 1))
        raise WebError(
            422,
            f"a batch of {batch_size} images holds {batch_size * check.image_values:,} values in this "
            f"network's layers, over the limit of {MAX_BATCH_VALUES:,}: use a batch of at most {largest}",
        )


def checked_architecture(architecture, input_shape, num_classes: int) -> tuple[dict, DesignCheck]:
    """The architecture a training request sent, checked: ({"name", "layers"}, the check), or a 422
    WebError with the first problem's sentence."""
    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list):
        raise WebError(422, 'the architecture must be an object {"name": ..., "layers": [...]}')
    name = architecture.get("name", "designed")
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise WebError(422, f"the architecture's name must be 1 to 64 characters, got {name!r}")
    given = architecture.get("input_shape")
    if given is not None and list(given) != list(input_shape):
        raise WebError(
            422,
            f"the architecture takes {given} images, but the data set's are {list(input_shape)}: "
            "design for the data set you train on",
        )
    check = check_design(architecture["layers"], input_shape, num_classes)
    if check.error is not None:
        raise WebError(422, check.error)
    return {"name": name, "layers": architecture["layers"]}, check


# presets: the library's own architectures, as the model file writes their layers


def _model_layers(model) -> list[dict]:
    return [{"type": type(layer).__name__, "config": layer.get_config()} for layer in model.layers]


def presets(num_classes: int) -> list[dict]:
    """Every ready-made architecture of convscope.models (the names `convscope train --model` takes, so
    one added there appears here), then the empty design; layers for `num_classes` classes."""
    from convscope import models

    found = []
    for name, build in models.MODELS.items():
        try:
            model = build(input_shape=None, num_classes=num_classes)
        except (TypeError, ValueError):
            continue  # a builder that cannot make its layers without an input shape is not offered
        description = " ".join((build.__doc__ or name).strip().split("\n\n")[0].split())
        found.append({"name": name, "description": description, "layers": _model_layers(model)})
    found.append({"name": EMPTY_PRESET, "description": "no layers: add them one by one", "layers": []})
    return found


# the API


ARCHITECTURE_ROUTES = ("/api/designer/check", "/api/training")


class ArchitectureBodyLimit:
    """ASGI middleware: a 413 for a body over MAX_CONFIG_BYTES (1 MiB, a model file's config.json limit)
    sent to the routes that take an architecture, told by its Content-Length before anything is read; a
    body sent without one (chunked) is refused too. Plain ASGI, so event streams pass untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in ARCHITECTURE_ROUTES:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length", b"").decode("latin-1")
            if not length.isdigit() or int(length) > MAX_CONFIG_BYTES:
                from convscope.web.errors import error_response

                sentence = (
                    f"the request body must state its length and be at most {MAX_CONFIG_BYTES:,} bytes, "
                    "the limit for an architecture and its training settings"
                )
                await error_response(413, sentence)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CheckRequest(BaseModel):
    dataset: str = Field("digits", description="a data set name from GET /api/training/options")
    architecture: dict = Field(..., description='{"name": ..., "layers": [{"type": ..., "config": {...}}]}')


def _dataset(request: Request, name: str):
    """(input shape, class names) of data set `name`, or a 422 WebError."""
    from convscope.web.datasets import source_info

    sources = request.app.state.trainer.sources
    if name not in sources:
        raise WebError(422, f"there is no data set called {name!r}; choose one of: {', '.join(sources)}")
    return source_info(sources[name])


@router.get("/presets", summary="Ready-made architectures for a data set, and the designer's limits")
def list_presets(request: Request, dataset: str = "digits") -> dict:
    input_shape, class_names = _dataset(request, dataset)
    return {
        "dataset": dataset,
        "input_shape": list(input_shape),
        "class_names": list(class_names),
        "presets": presets(len(class_names)),
        "limits": LIMITS,
        "limits_text": LIMITS_TEXT,
    }


@router.post("/check", summary="Every layer's output shape, parameters and size rule, or its error")
def check(body: CheckRequest, request: Request) -> dict:
    """The designed architecture built by the library for the data set's images: always 200, with
    `valid`, the first problem as `error`, and a row per layer (its `error` the library's sentence)."""
    input_shape, class_names = _dataset(request, body.dataset)
    layers = body.architecture.get("layers")
    result = check_design(layers if layers is not None else "missing", input_shape, len(class_names))
    return {"input_shape": list(input_shape), "num_classes": len(class_names), **result.as_dict()}
