"""The model file: one zip archive holding `config.json` (architecture, input shape, class names,
format and convscope versions) and `weights.safetensors` (the state_dict).

Loading never runs code: JSON is parsed, tensors are read by safetensors, and both are checked
against each other before a model is returned.
"""

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from convscope.model import Sequential

FORMAT_NAME = "convscope-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 31


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and what is wrong."""


def _version() -> str:
    from convscope import __version__

    return __version__


def save_model(model: Sequential, path) -> None:
    """Write `model` to `path` atomically: an existing file is replaced only by a complete one."""
    from safetensors.numpy import save as save_tensors

    path = os.fspath(path)
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "convscope_version": _version()}
    config.update(model.get_config())
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.state_dict().items()}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".convscope", dir=folder)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(CONFIG_NAME, json.dumps(config, indent=2))
                archive.writestr(WEIGHTS_NAME, save_tensors(weights))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_member(archive: zipfile.ZipFile, name: str, limit: int, path: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{path}: not a convscope model file (no {name} inside)") from None
    if info.file_size > limit:
        raise ModelFileError(f"{path}: {name} declares {info.file_size:,} bytes, over the {limit:,} limit")
    return archive.read(name)


def _parse_config(raw: bytes, path: str) -> dict:
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: {CONFIG_NAME} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{path}: not a convscope model file ({CONFIG_NAME} has no format '{FORMAT_NAME}')"
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {version!r} is not supported "
            f"(this convscope reads version {FORMAT_VERSION})"
        )
    return config


def _model_from_config(config: dict, path: str) -> Sequential:
    try:
        return Sequential.from_config(config)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the architecture in {CONFIG_NAME} is invalid: {error}") from None


def _check_tensors(model: Sequential, tensors: dict, path: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{path}: weights do not match the architecture: missing {missing}, unexpected {extra}"
        )
    for name, param in expected.items():
        tensor = tensors[name]
        if tensor.dtype != np.float32 or tensor.shape != param.shape:
            raise ModelFileError(
                f"{path}: tensor {name!r} is {tensor.dtype} {tensor.shape}, expected float32 {param.shape}"
            )


def load_model(path) -> Sequential:
    """Read a model written by `save_model`; a ModelFileError names the file and the problem."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_tensors

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as archive:
            config = _parse_config(_read_member(archive, CONFIG_NAME, MAX_CONFIG_BYTES, path), path)
            model = _model_from_config(config, path)
            raw_weights = _read_member(archive, WEIGHTS_NAME, MAX_WEIGHTS_BYTES, path)
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{path}: not a convscope model file or damaged ({error})") from None
    except (OSError, EOFError, zlib.error, zipfile.LargeZipFile, NotImplementedError) as error:
        raise ModelFileError(f"{path}: damaged model file ({error})") from None
    try:
        tensors = load_tensors(raw_weights)
    except (SafetensorError, ValueError) as error:
        raise ModelFileError(f"{path}: {WEIGHTS_NAME} is damaged ({error})") from None
    _check_tensors(model, tensors, path)
    model.load_state_dict(tensors)
    return model
