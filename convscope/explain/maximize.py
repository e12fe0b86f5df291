"""What each kernel wants to see: activation maximisation (Erhan et al. 2009; Olah et al., "Feature
Visualization", 2017) on the engine's own backward pass.

Gradient ascent on the input, from seeded noise around the data's mean, in the model's own input space:
the image stays in raw pixels (0..1, clipped after every step) and goes through the model's
standardisation like any other input. For a kernel of a conv layer the aim is its strongest value
(before any activation) over the positions of the layer's output, the measure top patches rank the data
set by; for a class, its logit. Each kernel or class starts from `starts` noise images and keeps the
best result: ReLUs that are off at the start pass no gradient, so one start can stall on a poor local
maximum. A kernel's even starts climb its value at the centre of the output (clear of the zero
padding), its odd starts its value at whichever position is strongest at each step (which may use
the padding: near the border, zeros stand for "every channel off", which no real input may reach).

Regularisers keep the image natural-looking enough to read: random jitter (the image is shifted by up
to `jitter` pixels before each step and the gradient shifted back), an L2 pull towards the mean, and
a small Gaussian blur every `blur_every` steps; the last `polish` share of the steps climbs without
them, its step shrinking to 0, so the image ends at a local maximum of the objective within the pixel
range (what the tests compare with the data set). Each step moves by `lr` times the gradient divided
by its root mean square. Everything is seeded: the same seed gives the same image, bit for bit.

All kernels of a layer (or all classes) are optimised together, one image each, in one batch.
"""

from dataclasses import dataclass

import numpy as np

from convscope.explain.attribution import _body, one_blas_thread, run_backward, run_forward
from convscope.explain.receptive import receptive_fields


@dataclass(frozen=True)
class Settings:
    steps: int = 128
    lr: float = 0.05
    jitter: int | None = None  # None: about a sixteenth of the image's side
    l2: float = 0.01
    blur_every: int = 4
    blur: float = 0.5  # the Gaussian's standard deviation, in pixels
    noise: float = 0.2  # the starting noise's standard deviation around the mean
    polish: float = 0.25  # the last quarter of the steps climb without regularisers
    starts: int = 2  # noise images per kernel or class; the best result is kept
    seed: int = 0

    def checked(self) -> "Settings":
        for name in ("steps", "blur_every", "starts"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name == "blur_every" else 1)
            ):
                raise ValueError(f"activation maximisation: {name} must be a whole number, got {value!r}")
        for name in ("lr", "l2", "blur", "noise", "polish"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise ValueError(f"activation maximisation: {name} must be a number >= 0, got {value!r}")
        return self


DEFAULT_SETTINGS = Settings()


@dataclass
class Maximized:
    """The optimised inputs of one layer's kernels or of the classes."""

    images: np.ndarray  # (K, H, W, C) raw pixels in 0..1
    values: np.ndarray  # (K,) the objective reached: the kernel's strongest value or the class's logit
    what: str  # "kernels of conv2d_1" or "classes"
    layer_index: int | None = None  # the conv layer, for kernels
    positions: np.ndarray | None = None  # (K, 2) each kernel's strongest output position, for kernels
    field: object = None  # its receptive field (ReceptiveField), for kernels


def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur of (N, H, W, C) images, edges repeated."""
    if sigma <= 0:
        return images
    taps = _gaussian_taps(sigma)
    radius = len(taps) // 2
    out = images
    for axis in (1, 2):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(4)], mode="edge")
        size = out.shape[axis]
        out = sum(tap * np.take(padded, range(k, k + size), axis=axis) for k, tap in enumerate(taps))
    return out.astype(np.float32)


def _mean_pixel(model) -> np.ndarray:
    if model.standardization is not None:
        return np.asarray(model.standardization["mean"], dtype=np.float32)
    return np.full(model.input_shape[2], 0.5, dtype=np.float32)


def ascend(model, stages, count: int, seed_gradient, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ascent of `count` images through `stages` (run from the standardised input);
    seed_gradient(output) -> (objective values (count,), d objective / d output). Returns the images
    (count, H, W, C) and their objective values without jitter."""
    settings = settings.checked()
    rng = np.random.default_rng(settings.seed)
    height, width, _ = model.input_shape
    mean = _mean_pixel(model)
    jitter = max(0, round(min(height, width) / 16)) if settings.jitter is None else int(settings.jitter)
    std = 1.0 if model.standardization is None else np.asarray(model.standardization["std"], np.float32)
    noise = rng.normal(0.0, settings.noise, size=(count, *model.input_shape)).astype(np.float32)
    x = np.clip(mean + noise, 0.0, 1.0)
    with one_blas_thread():
        free_from = settings.steps - int(round(min(settings.polish, 1.0) * settings.steps))
        for step in range(settings.steps):
            regularised = step < free_from
            move = jitter if regularised else 0
            shift = tuple(int(s) for s in rng.integers(-move, move + 1, size=2)) if move else (0, 0)
            shifted = np.roll(x, shift, axis=(1, 2))
            output = run_forward(stages, model.standardize(shifted), record=True)
            _, d_output = seed_gradient(output)
            gradient = np.roll(run_backward(stages, d_output) / std, (-shift[0], -shift[1]), axis=(1, 2))
            if regularised:
                gradient -= settings.l2 * (x - mean)
            rms = np.sqrt((gradient.astype(np.float64) ** 2).mean(axis=(1, 2, 3), keepdims=True)) + 1e-12
            lr = (
                settings.lr
                if regularised
                else settings.lr * (settings.steps - step) / (settings.steps - free_from)
            )
            x = x + (lr * gradient / rms).astype(np.float32)
            if regularised and settings.blur_every and (step + 1) % settings.blur_every == 0:
                x = blur(x, settings.blur)
            x = np.clip(x, 0.0, 1.0)
        values, _ = seed_gradient(run_forward(stages, model.standardize(x), record=True))
    return x, values


def _best_start(images, values, starts: int):
    """Of each target's `starts` consecutive results, the one that reached the highest value."""
    values = values.reshape(-1, starts)
    best = values.argmax(axis=1) + np.arange(len(values)) * starts
    return images[best], values.max(axis=1)


def conv_layers(model) -> list[int]:
    return [i for i, layer in enumerate(model.layers) if type(layer).__name__ == "Conv2D"]


def kernel_stages(model, layer_index: int) -> list:
    """The plan of the layers before conv layer `layer_index`, then that layer without its activation."""
    from convscope.kernels import backend
    from convscope.kernels.plan import ReferenceStage, build_plan

    layer = model.layers[layer_index]
    if type(layer).__name__ != "Conv2D":
        raise ValueError(f"layer {layer_index} ({layer.name}) is not a conv layer: it has no kernels")
    if layer.activation is None:  # the plan ends with this conv alone (a fast stage when there is one)
        return build_plan(model.layers[: layer_index + 1], backend())
    return build_plan(model.layers[:layer_index], backend()) + [ReferenceStage(layer, activate=False)]


def maximize_kernels(
    model, layer_index: int, channels=None, settings: Settings = DEFAULT_SETTINGS
) -> Maximized:
    """The input that excites each kernel (`channels`, default all) of conv layer `layer_index` most, as
    its strongest value over the positions of the layer's output; `positions` says where."""
    stages = kernel_stages(model, layer_index)
    layer = model.layers[layer_index]
    chosen = np.arange(layer.filters) if channels is None else np.asarray(channels, dtype=np.int64)
    if chosen.ndim != 1 or len(chosen) == 0 or chosen.min() < 0 or chosen.max() >= layer.filters:
        raise ValueError(f"{layer.name} has kernels 0 to {layer.filters - 1}, got {channels!r}")
    out_h, out_w, _ = layer.output_shape
    targets = np.repeat(chosen, settings.starts)  # each kernel from `starts` noise images
    count = len(targets)
    at_centre = np.arange(count) % 2 == 0  # even starts: the centre position; odd: the strongest one

    def seed_gradient(output):
        maps = output[np.arange(count), :, :, targets]  # (count, h, w): each image's own kernel
        rows, columns = np.unravel_index(maps.reshape(count, -1).argmax(axis=1), maps.shape[1:])
        strongest = maps[np.arange(count), rows, columns]
        rows, columns = np.where(at_centre, out_h // 2, rows), np.where(at_centre, out_w // 2, columns)
        d_output = np.zeros_like(output)
        d_output[np.arange(count), rows, columns, targets] = 1.0
        return strongest, d_output

    images, values = _best_start(*ascend(model, stages, count, seed_gradient, settings), settings.starts)
    maps = run_forward(stages, model.standardize(images))[np.arange(len(chosen)), :, :, chosen]
    positions = np.stack(np.unravel_index(maps.reshape(len(chosen), -1).argmax(axis=1), maps.shape[1:]), 1)
    field = receptive_fields(model)[layer_index]
    return Maximized(images, values, f"kernels of {layer.name}", layer_index, positions, field)


def maximize_classes(model, classes=None, settings: Settings = DEFAULT_SETTINGS) -> Maximized:
    """The input that gives each class (`classes`, default all) the highest logit."""
    from convscope.kernels import backend
    from convscope.kernels.plan import build_plan

    body, logits_only = _body(model)
    stages = build_plan(body, backend(), logits_only=logits_only)
    chosen = np.arange(model.num_classes) if classes is None else np.asarray(classes, dtype=np.int64)
    targets = np.repeat(chosen, settings.starts)
    count = len(targets)

    def seed_gradient(logits):
        d_logits = np.zeros_like(logits)
        d_logits[np.arange(count), targets] = 1.0
        return logits[np.arange(count), targets], d_logits

    images, values = _best_start(*ascend(model, stages, count, seed_gradient, settings), settings.starts)
    return Maximized(images, values, "classes")


def kernel_responses(model, images, layer_index: int) -> np.ndarray:
    """Each kernel's strongest value (before any activation) over the positions of conv layer
    `layer_index`'s output, for each image: (N, kernels)."""
    output = run_forward(kernel_stages(model, layer_index), model.standardize(np.asarray(images, np.float32)))
    return output.max(axis=(1, 2))
