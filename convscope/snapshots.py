"""How the kernels grew: the first conv layer's kernels and one fixed image's first-layer feature maps,
recorded while a model trains (`fit(..., snapshots="epoch" or N)`) and stored with the model.

A snapshot is taken before the first step, then after every epoch (`"epoch"`) or every N optimiser
steps (N). The record is bounded: at most MAX_SNAPSHOTS snapshots and MAX_VALUES numbers in all; when
one more would not fit, every other snapshot is dropped (the first is kept) and the interval doubles,
so the snapshots stay evenly spread over the run, whatever its length. The fixed image is the first
training image.

In a model file (and so in a checkpoint) the record is two members, read as safely as the weights:
`snapshots.json` (format and version, the schedule, the steps and epochs of the snapshots) and
`snapshots.safetensors` (`kernels` (S, kh, kw, C_in, C_out), `feature_maps` (S, h, w, C_out) and
`image` (H, W, C), float32). Every name, dtype and shape is checked against the architecture before
the data is read; a damaged member is a ModelFileError naming it.
"""

from dataclasses import dataclass, field

import numpy as np

from convscope.archive import ModelFileError

FORMAT = "convscope-snapshots"
VERSION = 1
JSON_NAME = "snapshots.json"
TENSORS_NAME = "snapshots.safetensors"
MAX_JSON_BYTES = 1 << 20
MAX_SNAPSHOTS = 64
MAX_VALUES = 1 << 21  # 8 MB of float32 in all


def first_conv_layer(model) -> int:
    for index, layer in enumerate(model.layers):
        if type(layer).__name__ == "Conv2D":
            return index
    raise ValueError("snapshots record the first conv layer's kernels, and this model has no conv layer")


def checked_schedule(every):
    """'epoch' or a whole number of steps >= 1; a ValueError otherwise."""
    if every == "epoch":
        return every
    if isinstance(every, (int, np.integer)) and not isinstance(every, bool) and every >= 1:
        return int(every)
    raise ValueError(f"snapshots must be 'epoch' or a whole number of steps >= 1, got {every!r}")


@dataclass
class Snapshots:
    """The record of one training run (see the module docstring)."""

    every: object  # "epoch" or a number of steps
    layer: int  # index of the first conv layer
    image: np.ndarray  # (H, W, C) the fixed image, raw pixels
    stride: int = 1  # multiples of `every` between snapshots (doubles when the record is thinned)
    steps: list = field(default_factory=list)  # optimiser steps done at each snapshot
    epochs: list = field(default_factory=list)  # epochs done at each snapshot (fractions between epochs)
    kernels: list = field(default_factory=list)  # (kh, kw, C_in, C_out) each
    feature_maps: list = field(default_factory=list)  # (h, w, C_out) each

    @classmethod
    def start(cls, model, every, image) -> "Snapshots":
        return cls(checked_schedule(every), first_conv_layer(model), np.array(image, dtype=np.float32))

    def capacity(self, model) -> int:
        """How many snapshots fit in the bounds for this model's first conv layer."""
        layer = model.layers[self.layer]
        per = layer.params["weight"].size + int(np.prod(layer.output_shape))
        return max(2, min(MAX_SNAPSHOTS, MAX_VALUES // per))

    def due(self, step: int, epoch: int, epoch_done: bool) -> bool:
        """Whether a snapshot is due after step `step`, or (epoch_done) at the end of epoch `epoch`."""
        if self.every == "epoch":
            return epoch_done and epoch % self.stride == 0
        return not epoch_done and step % (self.every * self.stride) == 0

    def take(self, model, step: int, epochs: float, epoch_done: bool = False) -> None:
        """Record a snapshot if one is due (always the first, before any step), thinning the record
        first when it is full: the model's first-layer kernels and the fixed image's first-layer maps."""
        from convscope.explain.patches import layer_output

        if self.steps and not self.due(step, round(epochs), epoch_done):
            return
        if len(self.steps) >= self.capacity(model):
            self._thin()
            if not self.due(step, round(epochs), epoch_done):
                return
        self.steps.append(int(step))
        self.epochs.append(float(epochs))
        self.kernels.append(model.layers[self.layer].params["weight"].astype(np.float32, copy=True))
        self.feature_maps.append(np.array(layer_output(model, self.image[None], self.layer)[0], np.float32))

    def _thin(self) -> None:
        keep = slice(0, None, 2)
        for name in ("steps", "epochs", "kernels", "feature_maps"):
            setattr(self, name, getattr(self, name)[keep])
        self.stride *= 2

    # the model file's members

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": VERSION,
            "every": self.every,
            "layer": self.layer,
            "stride": self.stride,
            "steps": self.steps,
            "epochs": self.epochs,
        }

    def tensors(self) -> dict:
        return {
            "kernels": np.stack(self.kernels).astype(np.float32),
            "feature_maps": np.stack(self.feature_maps).astype(np.float32),
            "image": self.image.astype(np.float32),
        }


def _is_count(value, low=0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _checked_record(record, model) -> tuple:
    """(every, layer, stride, steps, epochs) of a parsed snapshots.json, or a ValueError."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"it has no format '{FORMAT}'")
    if record.get("format_version") != VERSION:
        raise ValueError(
            f"format version {str(record.get('format_version'))[:40]} is not supported (this convscope "
            f"reads version {VERSION})"
        )
    every = checked_schedule(record.get("every"))
    layer, stride = record.get("layer"), record.get("stride")
    if layer != first_conv_layer(model):
        raise ValueError(f"layer {str(layer)[:40]} is not the model's first conv layer")
    if not _is_count(stride, 1) or stride > 1 << 40:
        raise ValueError(f"stride must be a whole number >= 1, got {str(stride)[:40]}")
    steps, epochs = record.get("steps"), record.get("epochs")
    ok = isinstance(steps, list) and isinstance(epochs, list) and 1 <= len(steps) == len(epochs)
    ok = ok and len(steps) <= MAX_SNAPSHOTS and all(_is_count(s) for s in steps)
    ok = ok and all(isinstance(e, (int, float)) and not isinstance(e, bool) and e >= 0 for e in epochs)
    if not ok or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(
            f"steps and epochs must be two lists of 1 to {MAX_SNAPSHOTS} numbers, the steps increasing"
        )
    return every, layer, stride, steps, [float(e) for e in epochs]


def expected_tensors(model, count: int) -> dict:
    """{name: shape} of snapshots.safetensors for `count` snapshots of this model, all float32."""
    layer = model.layers[first_conv_layer(model)]
    return {
        "kernels": (count, *layer.params["weight"].shape),
        "feature_maps": (count, *layer.output_shape),
        "image": tuple(model.input_shape),
    }


def read_snapshots(archive, model) -> Snapshots | None:
    """The snapshots in an open model file (convscope.archive.ArchiveReader), checked, or None if it
    has none; ModelFileError naming the member when one is missing or damaged."""
    if not archive.has(JSON_NAME) and not archive.has(TENSORS_NAME):
        return None
    try:
        every, layer, stride, steps, epochs = _checked_record(archive.read_json(JSON_NAME), model)
    except ModelFileError:
        raise
    except ValueError as error:
        raise archive.fail(f"{JSON_NAME} is damaged: {error}") from None
    header = archive.tensor_header(TENSORS_NAME)
    expected = expected_tensors(model, len(steps))
    found = {name: (info.dtype, info.shape) for name, info in header.items()}
    wanted = {name: ("F32", shape) for name, shape in expected.items()}
    if found != wanted:
        raise archive.fail(
            f"{TENSORS_NAME} is damaged or does not fit the model: it holds "
            f"{str(found)[:200]}, expected {str(wanted)[:200]}"
        )
    tensors = archive.read_tensors(TENSORS_NAME)
    for name, tensor in tensors.items():
        if not np.isfinite(tensor).all():
            raise archive.fail(f"{TENSORS_NAME}: tensor {name!r} holds NaN or infinite values")
    return Snapshots(
        every=every,
        layer=layer,
        image=tensors["image"],
        stride=stride,
        steps=steps,
        epochs=epochs,
        kernels=list(tensors["kernels"]),
        feature_maps=list(tensors["feature_maps"]),
    )
