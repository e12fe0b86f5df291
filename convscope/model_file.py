"""The model file: one zip archive holding `config.json` (architecture, input shape, class names,
format and convscope versions) and `weights.safetensors` (the state_dict).

Loading never runs code and checks before it allocates. The container is read by convscope.archive
(zip directory, member names and declared sizes, strict JSON, the safetensors header before its data).
The config's structure and the input size are checked; the architecture is first built layer by layer
with a random generator that refuses to draw more values than the weights file holds, and every layer's
output for one image is kept under a size limit; only then is the model built. Every tensor's name,
shape and dtype must match the architecture exactly, and every weight must be finite.

A model trained with snapshots holds two more members, snapshots.json and snapshots.safetensors
(convscope.snapshots), checked as strictly. A checkpoint (convscope.checkpoint) is a model file with two
more members, so it loads as a model too:
the weights of its last epoch.
"""

import math
import os

import numpy as np

from convscope.archive import (
    SAFETENSORS_DTYPES,
    ArchiveReader,
    ModelFileError,
    dump_json,
    save_tensors,
    short,
    write_archive,
)
from convscope.model import Sequential
from convscope.snapshots import JSON_NAME as SNAPSHOTS_NAME
from convscope.snapshots import MAX_JSON_BYTES as MAX_SNAPSHOTS_JSON_BYTES
from convscope.snapshots import TENSORS_NAME as SNAPSHOTS_TENSORS_NAME
from convscope.snapshots import read_snapshots

FORMAT_NAME = "convscope-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
TRAINING_NAME = "training.json"  # the two members a checkpoint adds
TRAINING_TENSORS_NAME = "training.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 31
MAX_TRAINING_BYTES = 1 << 24
MEMBER_LIMITS = {
    CONFIG_NAME: MAX_CONFIG_BYTES,
    WEIGHTS_NAME: MAX_WEIGHTS_BYTES,
    TRAINING_NAME: MAX_TRAINING_BYTES,
    TRAINING_TENSORS_NAME: 4 * MAX_WEIGHTS_BYTES,
    SNAPSHOTS_NAME: MAX_SNAPSHOTS_JSON_BYTES,  # how the kernels grew (convscope.snapshots), when recorded
    SNAPSHOTS_TENSORS_NAME: 1 << 26,
}
MAX_LAYERS = 1000
MAX_INPUT_VALUES = 1 << 26  # H * W * C of the model's input
TRIAL_SLACK_VALUES = 1 << 22  # a small mismatch is reported tensor by tensor, a huge one before building
MAX_LAYER_VALUES = 1 << 28  # what one layer may hold for one image: output, padded input, im2col columns

__all__ = ["ModelFileError", "is_model_file", "load_model", "read_model", "save_model"]


def _version() -> str:
    from convscope import __version__

    return __version__


def model_members(model: Sequential) -> dict:
    """{member name: bytes} of a model file: config.json and weights.safetensors (float32)."""
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "convscope_version": _version()}
    config.update(model.get_config())
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.state_dict().items()}
    members = {CONFIG_NAME: dump_json(config), WEIGHTS_NAME: save_tensors(weights)}
    snapshots = getattr(model, "snapshots", None)
    if snapshots is not None and snapshots.steps:
        members[SNAPSHOTS_NAME] = dump_json(snapshots.to_json())
        members[SNAPSHOTS_TENSORS_NAME] = save_tensors(snapshots.tensors())
    return members


def save_model(model: Sequential, path) -> None:
    """Write `model` to `path` atomically: an existing file is replaced only by a complete one."""
    write_archive(path, model_members(model))


# the config


def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def config_problem(config: dict):
    """What is structurally wrong with a parsed config (format already checked), or None."""
    shape = config.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(d, 1) for d in shape)):
        return f"input_shape must be [H, W, C] with positive whole sizes, got {short(repr(shape), 80)}"
    if math.prod(shape) > MAX_INPUT_VALUES:
        values = math.prod(shape)
        return f"input_shape {shape} has {values:,} values per image, over the {MAX_INPUT_VALUES:,} limit"
    layers = config.get("layers")
    if not (isinstance(layers, list) and 1 <= len(layers) <= MAX_LAYERS):
        return f"layers must be a list of 1 to {MAX_LAYERS} layers, got {short(repr(layers), 80)}"
    for index, entry in enumerate(layers):
        if not (isinstance(entry, dict) and isinstance(entry.get("type"), str)):
            return f"layer {index} must be an object with a 'type', got {short(repr(entry), 80)}"
        if not isinstance(entry.get("config", {}), dict):
            return f"layer {index} ({short(entry['type'], 40)}): its config must be an object"
    names = config.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return f"class_names must be a list of strings, got {short(repr(names), 80)}"
    if not isinstance(config.get("name", ""), str) or not _is_int(config.get("seed", 0)):
        return "name must be a string and seed a whole number >= 0"
    return None


def _checked_config(archive: ArchiveReader) -> dict:
    config = archive.read_json(CONFIG_NAME)
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise archive.fail(f"not a convscope model file ({CONFIG_NAME} has no format '{FORMAT_NAME}')")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise archive.fail(
            f"format version {short(repr(version), 40)} is not supported "
            f"(this convscope reads version {FORMAT_VERSION})"
        )
    problem = config_problem(config)
    if problem:
        raise archive.fail(f"the architecture in {CONFIG_NAME} is invalid: {problem}")
    return config


# a trial build that cannot allocate more than the weights file holds


class TooManyValues(Exception):
    pass


def _draw_count(method: str, args, kwargs) -> int:
    """How many values a Generator method call draws (its `size`), 1 when no size is given."""
    size = kwargs.get("size")
    if size is None:
        size = next((a for a in args if isinstance(a, (tuple, list))), None)
    if size is None:
        position = {"random": 0, "standard_normal": 0, "uniform": 2, "normal": 2, "integers": 2}.get(method)
        size = args[position] if position is not None and len(args) > position else 1
    if isinstance(size, (tuple, list)):
        return math.prod(int(s) for s in size)
    return int(size)


class DrawLimit:
    """Stands in for a numpy Generator in a trial build: draws as one does, but raises TooManyValues
    before drawing more than `left` values in all."""

    def __init__(self, left: int):
        self._rng = np.random.default_rng(0)
        self.left = left

    def __getattr__(self, name):
        attribute = getattr(self._rng, name)
        if not callable(attribute):
            return attribute

        def draw(*args, **kwargs):
            count = _draw_count(name, args, kwargs)
            if count > self.left:
                raise TooManyValues(count)
            self.left -= count
            return attribute(*args, **kwargs)

        return draw


def layer_values(layer) -> int:
    """The most values `layer` holds for one image: its output, its padded input, its im2col columns
    (for a residual block: the most any of its layers holds)."""
    largest = math.prod(layer.output_shape)
    for _, inner in getattr(layer, "named_layers", list)():
        largest = max(largest, layer_values(inner))
    padding, shape = getattr(layer, "padding", None), layer.input_shape
    if isinstance(padding, tuple) and len(padding) == 2 and shape is not None and len(shape) == 3:
        (top, bottom), (left, right) = padding
        height, width, channels = shape
        largest = max(largest, (height + top + bottom) * (width + left + right) * channels)
        kernel = getattr(layer, "kernel_size", None)
        if isinstance(kernel, tuple) and len(layer.output_shape) == 3:
            out_h, out_w, _ = layer.output_shape
            largest = max(largest, out_h * out_w * kernel[0] * kernel[1] * channels)
    return largest


def _trial_build(config: dict, budget: int, archive: ArchiveReader) -> None:
    """Build every layer once with a DrawLimit of `budget` values and check its sizes: a config that
    asks for more parameters than the weights file holds, or for huge activations, fails here, cheaply."""
    from convscope.layers import layer_from_config

    rng = DrawLimit(budget)
    shape = tuple(config["input_shape"])
    for index, entry in enumerate(config["layers"]):
        try:
            layer = layer_from_config(entry)
            shape = layer.build(shape, rng)
            values = layer_values(layer)
        except TooManyValues:
            raise archive.fail(
                f"the architecture in {CONFIG_NAME} needs far more parameters (from layer {index} on) than "
                f"the {budget - TRIAL_SLACK_VALUES:,} values in {WEIGHTS_NAME}"
            ) from None
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError) as error:
            raise archive.fail(
                f"the architecture in {CONFIG_NAME} is invalid: layer {index}: {short(error)}"
            ) from None
        if values > MAX_LAYER_VALUES:
            raise archive.fail(
                f"the architecture in {CONFIG_NAME} is invalid: layer {index} would hold {values:,} "
                f"values for one image, over the {MAX_LAYER_VALUES:,} limit"
            )


# the model


def _model_from_config(config: dict, archive: ArchiveReader) -> Sequential:
    try:
        model = Sequential.from_config(config)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError) as error:
        raise archive.fail(f"the architecture in {CONFIG_NAME} is invalid: {short(error)}") from None
    names = model.class_names
    if names is not None and len(names) != model.num_classes:
        raise archive.fail(
            f"{CONFIG_NAME} names {len(names)} classes, but the model has {model.num_classes} outputs"
        )
    return model


def _dtype_name(code: str) -> str:
    return SAFETENSORS_DTYPES[code].newbyteorder("=").name


def _check_tensor_header(model: Sequential, header: dict, archive: ArchiveReader) -> None:
    """Names, shapes and dtypes in the weights header against the architecture, before any data is read."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise archive.fail(
            "weights do not match the architecture: "
            f"missing {short(missing, 120)}, unexpected {short(extra, 120)}"
        )
    for name, param in expected.items():
        info = header[name]
        if info.dtype != "F32" or info.shape != param.shape:
            raise archive.fail(
                f"tensor {name!r} is {_dtype_name(info.dtype)} {info.shape}, expected float32 {param.shape}"
            )


def check_finite(tensors: dict, archive: ArchiveReader, member: str) -> None:
    """A ModelFileError naming the first tensor of `member` holding NaN or infinite values."""
    for name, tensor in tensors.items():
        if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
            raise archive.fail(f"tensor {short(repr(name), 80)} in {member} holds NaN or infinite values")


def read_model(archive: ArchiveReader) -> Sequential:
    """The model in an open model file or checkpoint, every check passed."""
    config = _checked_config(archive)
    header = archive.tensor_header(WEIGHTS_NAME)
    declared = sum(math.prod(info.shape) for info in header.values())
    _trial_build(config, declared + TRIAL_SLACK_VALUES, archive)
    model = _model_from_config(config, archive)
    _check_tensor_header(model, header, archive)
    tensors = archive.read_tensors(WEIGHTS_NAME)
    check_finite(tensors, archive, WEIGHTS_NAME)
    model.load_state_dict(tensors)
    model.snapshots = read_snapshots(archive, model)
    return model


def is_model_file(path) -> bool:
    """Whether `path` is a convscope model file or checkpoint (a zip whose config.json says so); reads
    only the zip directory and config.json, with the usual checks."""
    try:
        with ArchiveReader(path, MEMBER_LIMITS, required=(CONFIG_NAME,)) as archive:
            config = archive.read_json(CONFIG_NAME)
    except (ValueError, OSError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT_NAME


def load_model(path) -> Sequential:
    """Read a model written by `save_model` (or the last epoch of a checkpoint); a ModelFileError names
    the file and the problem, a FileNotFoundError a missing file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such model file")
    with ArchiveReader(path, MEMBER_LIMITS, required=(CONFIG_NAME, WEIGHTS_NAME)) as archive:
        return read_model(archive)
