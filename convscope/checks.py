"""The checks every entry point runs on what it is given: image batches, labels, and the input
standardisation and augmentation a model file records. They depend on NumPy alone, so the model, the
fit loop and the model file can all use them without importing one another."""

import numpy as np


def check_images(x, input_shape=None, what="x") -> np.ndarray:
    """A finite float32 (N, H, W, C) batch matching `input_shape` (H, W, C), or a ValueError saying
    what was expected and what was given."""
    try:
        x = np.asarray(x)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be an (N, H, W, C) array, got {type(x).__name__} ({error})") from None
    if x.dtype == object or np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{what} must be a real numeric array, got dtype {x.dtype}")
    expected = "(N, H, W, C)" if input_shape is None else f"(N, {', '.join(map(str, input_shape))})"
    if x.ndim != 4:
        hint = " (add a channel axis: x[..., None])" if x.ndim == 3 else ""
        raise ValueError(f"{what} must have shape {expected}, got shape {x.shape}{hint}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        hint = ""
        if tuple(x.shape[1:3]) == tuple(input_shape[:2]):
            hint = f" (the model takes {input_shape[2]}-channel images, these have {x.shape[3]})"
        raise ValueError(f"{what} must have shape {expected}, got shape {x.shape}{hint}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        first = int(np.argmin(finite.reshape(len(x), -1).all(axis=1)))
        raise ValueError(
            f"{what} contains NaN or infinite values (or values too big for float32), first in image {first}"
        )
    return x


def check_labels(y, n: int, num_classes: int, what="y") -> np.ndarray:
    """Integer class ids of shape (n,) in [0, num_classes), or a ValueError."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},) (one class id per image), got {y.shape}")
    whole = np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and np.all(np.mod(y, 1) == 0)
    if not (np.issubdtype(y.dtype, np.integer) or whole):
        raise ValueError(f"{what} must hold integer class ids, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{what} must hold class ids in [0, {num_classes}), got values from {y.min()} to {y.max()}"
        )
    return y.astype(np.int64, copy=False)


def checked_standardization(value, input_shape):
    """A saved {"mean": [C floats], "std": [C positive floats]} or None; else a ValueError."""
    if value is None:
        return None
    channels = input_shape[-1]
    ok = isinstance(value, dict) and set(value) == {"mean", "std"}
    ok = ok and all(isinstance(value[k], list) and len(value[k]) == channels for k in ("mean", "std"))
    ok = ok and all(isinstance(v, (int, float)) and np.isfinite(v) for v in value["mean"] + value["std"])
    if not ok or min(value["std"]) <= 0:
        raise ValueError(
            f"standardization must hold {channels} finite means and positive stds, got {value!r}"
        )
    return value


def checked_augmentation(value):
    """A saved {"flip": bool, "crop_padding": int >= 0[, "cutout": int > 0]} (the training augmentation)
    or None; else a ValueError."""
    if value is None:
        return None
    ok = isinstance(value, dict) and set(value) - {"cutout"} == {"flip", "crop_padding"}
    ok = ok and isinstance(value["flip"], bool)
    ok = ok and type(value["crop_padding"]) is int and value["crop_padding"] >= 0
    ok = ok and type(value.get("cutout", 1)) is int and value.get("cutout", 1) > 0
    if not ok:
        raise ValueError(
            "augmentation must be {'flip': bool, 'crop_padding': int >= 0[, 'cutout': int > 0]}, "
            f"got {value!r}"
        )
    return value
