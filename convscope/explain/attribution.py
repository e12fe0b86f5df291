"""Which pixels decided: attribution maps for one image and one class, on the engine's own backward pass.

Four methods, each a map (H, W) at the input's resolution:

- `gradient` (Simonyan et al. 2014): |d score / d pixel|, the largest over the colour channels. The
  score is the class's logit (before softmax); the pixel is the raw input pixel (0..1), so a model's
  standardisation (x - mean) / std is differentiated too.
- `smoothgrad` (Smilkov et al. 2017): the mean of that map over `samples` copies of the image with
  Gaussian noise of `noise` (in pixel units, the input range being 0..1) added, seeded.
- `gradcam` (Selvaraju et al. 2017): on a layer with a spatial output A (h, w, K), each channel's weight
  is the mean of d score / dA over its positions; the map is ReLU(sum_k weight_k A_k), interpolated
  to the input's pixels from the centres of the layer's receptive fields. Default layer: the last one
  with feature maps before the final pooling (the last conv layer's rectified output).
- `occlusion` (Zeiler & Fergus 2014): a `size` x `size` patch of the data set's mean slides over the
  image with `stride`; each pixel gets the mean drop of the class's probability over the patches
  that covered it (negative where hiding it made the class more likely).

The gradients run through the model's plan (convscope.kernels.plan): the compiled kernels by default,
the reference ops with CONVSCOPE_KERNELS=numpy. The plan is cut at the layer Grad-CAM looks at: the
part before runs forward, the part after forward with `record=True` (inference numbers, caches kept)
and then backward from the logits' gradient.
"""

import time
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from convscope.checks import check_images
from convscope.explain.receptive import receptive_fields

METHODS = ("gradient", "smoothgrad", "gradcam", "occlusion")
SMOOTHGRAD_SAMPLES = 50
SMOOTHGRAD_NOISE = 0.15  # 15% of the 0..1 input range, within the paper's 10-20%
MAX_OCCLUSION_POSITIONS = 4096
POOLING = ("MaxPool2D", "AvgPool2D")

SCALES = {
    "gradient": "magma, 0 to the largest |d score / d pixel| of the map",
    "smoothgrad": "magma, 0 to the largest mean |d score / d pixel| of the map",
    "gradcam": "magma, 0 to the map's largest value (ReLU of the weighted channels, interpolated)",
    "occlusion": "RdBu_r around 0: red where hiding the pixels lowers the class's probability, blue where "
    "it raises it; ± the largest |change|",
}


@dataclass
class Attribution:
    """One attribution map of one image for one class."""

    method: str
    values: np.ndarray  # (H, W) at the input's resolution
    target: int  # the class explained
    class_name: str
    predicted: int  # the model's predicted class for the image
    probability: float  # the model's probability of `target`
    seconds: float  # how long the method took
    layer: str | None = None  # Grad-CAM's layer
    settings: dict = field(default_factory=dict)

    @property
    def signed(self) -> bool:
        return self.method == "occlusion"

    @property
    def scale(self) -> str:
        return SCALES[self.method]

    def peak(self) -> tuple[int, int]:
        """(row, column) of the map's largest value."""
        return tuple(int(i) for i in np.unravel_index(np.argmax(self.values), self.values.shape))


# targets and layers


def class_names(model) -> list[str]:
    return [str(name) for name in (model.class_names or range(model.num_classes))]


def resolve_target(model, target) -> int | None:
    """A class given as an index, a name or None (the predicted class) -> its index, or None."""
    if target is None:
        return None
    names = class_names(model)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if 0 <= target < model.num_classes:
            return int(target)
    elif isinstance(target, str):
        if target in names:
            return names.index(target)
        if target.isdigit() and int(target) < model.num_classes:
            return int(target)
    raise ValueError(f"class {target!r} is not one of the model's classes: {', '.join(names)}")


def spatial_layers(model) -> list[int]:
    """Indices of the layers whose output is a block (H, W, C): those Grad-CAM can look at."""
    return [i for i, layer in enumerate(model.layers) if len(layer.output_shape) == 3]


def default_gradcam_layer(model) -> int:
    """The last layer with feature maps, stepping back over the pooling that ends the feature part: the
    last conv layer's rectified output (after its batch norm and ReLU) in the seed CNN and small_vgg,
    the last block's output in a network of blocks."""
    spatial = spatial_layers(model)
    if not spatial:
        raise ValueError("Grad-CAM needs a layer with a spatial output; this model has none")
    index = spatial[-1]
    while type(model.layers[index]).__name__ in POOLING and index - 1 in spatial:
        index -= 1
    return index


def resolve_layer(model, layer) -> int:
    """A layer given as a name, an index or None (default_gradcam_layer) -> its index, checked spatial."""
    if layer is None:
        return default_gradcam_layer(model)
    names = [item.name for item in model.layers]
    if isinstance(layer, str) and layer in names:
        index = names.index(layer)
    elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and 0 <= layer < len(names):
        index = int(layer)
    elif isinstance(layer, str) and layer.isdigit() and int(layer) < len(names):
        index = int(layer)
    else:
        raise ValueError(f"layer {layer!r} is not in the model; its layers: {', '.join(names)}")
    if index not in spatial_layers(model):
        usable = ", ".join(model.layers[i].name for i in spatial_layers(model))
        raise ValueError(
            f"layer {model.layers[index].name} has a flat output {tuple(model.layers[index].output_shape)}: "
            f"Grad-CAM needs feature maps; layers with them: {usable}"
        )
    return index


# the engine's forward and backward, cut at a layer


def _body(model):
    """The layers that compute the logits (all but a final Softmax layer) and whether the last one's own
    softmax activation must be skipped."""
    head = model._softmax_head()
    body = model.layers[:-1] if head == "layer" else model.layers
    return body, head == "activation"


def split_plan(model, boundary: int):
    """(before, after): plans (lists of stages) of the layers up to and including `boundary` and of
    those after it up to the logits; boundary -1 cuts at the input (before is empty)."""
    from convscope.kernels import backend
    from convscope.kernels.plan import build_plan

    model._require_built()
    body, logits_only = _body(model)
    name = backend()
    before = build_plan(body[: boundary + 1], name) if boundary >= 0 else []
    after = (
        build_plan(body[boundary + 1 :], name, logits_only=logits_only) if boundary + 1 < len(body) else []
    )
    return before, after


@cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context holding BLAS to one thread: the matrices of one image's passes are small, and on a busy
    machine BLAS's threads waiting for cores cost ten times the work (measured on 2 shared cores)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def run_forward(stages, x, record: bool = False) -> np.ndarray:
    """x through the stages in inference mode; record keeps what run_backward needs. Returns a copy
    (the fast path's stages write into reused arrays)."""
    for stage in stages:
        x = stage.forward(x, record=record) if record else stage.forward(x)
    return np.array(x)


def run_backward(stages, dy) -> np.ndarray:
    """The gradient at the stages' input, from `dy` at their output, after run_forward(record=True)."""
    for stage in reversed(stages):
        dy = stage.backward(dy, need_dx=True)
    return np.array(dy)


def _one_hot(count: int, classes: int, targets) -> np.ndarray:
    seed = np.zeros((count, classes), dtype=np.float32)
    seed[np.arange(count), np.broadcast_to(np.asarray(targets), (count,))] = 1.0
    return seed


def _standard_deviation(model) -> np.ndarray | float:
    if model.standardization is None:
        return 1.0
    return np.asarray(model.standardization["std"], dtype=np.float32)


def input_gradients(model, images, targets) -> tuple[np.ndarray, np.ndarray]:
    """d logit[target] / d pixel for every image (N, H, W, C) in raw input units, and the logits (N, K).

    targets: one class id, or one per image. Computed in inference mode (batch norm with its running
    statistics, no dropout), images independent of one another."""
    x = check_images(images, model.input_shape, what="images")
    _, after = split_plan(model, -1)
    with one_blas_thread():
        logits = run_forward(after, model.standardize(x), record=True)
        gradient = run_backward(after, _one_hot(len(x), logits.shape[1], targets))
    return (gradient / _standard_deviation(model)).astype(np.float32), logits


def layer_gradients(model, images, targets, layer_index: int):
    """(A, dA, logits): layer `layer_index`'s output for the images (N, h, w, K), the gradient of
    logit[target] with respect to it, and the logits (N, classes)."""
    x = check_images(images, model.input_shape, what="images")
    before, after = split_plan(model, layer_index)
    with one_blas_thread():
        activations = run_forward(before, model.standardize(x))
        logits = run_forward(after, activations, record=True)
        gradient = run_backward(after, _one_hot(len(x), logits.shape[1], targets))
    return activations, gradient, logits


# the maps


def saliency(gradients: np.ndarray) -> np.ndarray:
    """(N, H, W, C) gradients -> (N, H, W): the largest |gradient| over the channels."""
    return np.abs(gradients).max(axis=-1)


def gradient_maps(model, images, targets) -> np.ndarray:
    """Vanilla gradient maps (N, H, W) of the images (N, H, W, C) for their targets."""
    return saliency(input_gradients(model, images, targets)[0])


def smoothgrad_map(model, image, target: int, samples=SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE, seed=0):
    """The mean gradient map (H, W) of `samples` noisy copies of one image (H, W, C), seeded."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"smoothgrad: samples must be a whole number >= 1, got {samples!r}")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise <= 1:
        raise ValueError(
            f"smoothgrad: noise must be a number from 0 to 1 (of the input range), got {noise!r}"
        )
    rng = np.random.default_rng(seed)
    noisy = image[None] + rng.normal(0.0, noise, size=(samples, *image.shape)).astype(np.float32)
    return gradient_maps(model, noisy, target).mean(axis=0)


def _interpolation_matrix(centres: np.ndarray, size: int) -> np.ndarray:
    """(size, len(centres)): linear interpolation from values at `centres` (increasing) to the pixel
    coordinates 0..size-1, held constant beyond the first and last centre."""
    matrix = np.zeros((size, len(centres)), dtype=np.float64)
    for pixel in range(size):
        if len(centres) == 1 or pixel <= centres[0]:
            matrix[pixel, 0] = 1.0
        elif pixel >= centres[-1]:
            matrix[pixel, -1] = 1.0
        else:
            right = int(np.searchsorted(centres, pixel, side="right"))
            t = (pixel - centres[right - 1]) / (centres[right] - centres[right - 1])
            matrix[pixel, right - 1], matrix[pixel, right] = 1.0 - t, t
    return matrix


def upsample(maps: np.ndarray, field, input_shape) -> np.ndarray:
    """Layer maps (N, h, w) -> (N, H, W) at the input's pixels, each value placed at the centre of its
    receptive field (convscope.explain.receptive) and interpolated linearly in between."""
    matrices = []
    for axis in range(2):
        count = maps.shape[1 + axis]
        centres = field.start[axis] + np.arange(count) * field.jump[axis] + (field.size[axis] - 1) / 2
        matrices.append(_interpolation_matrix(centres, input_shape[axis]))
    rows, columns = matrices
    return np.einsum("ih,nhw,jw->nij", rows, maps.astype(np.float64), columns).astype(np.float32)


def gradcam_maps(model, images, targets, layer=None) -> tuple[np.ndarray, int]:
    """Grad-CAM maps (N, H, W) of the images for their targets on `layer` (name, index or None for the
    default), and the layer's index."""
    index = resolve_layer(model, layer)
    activations, gradient, _ = layer_gradients(model, images, targets, index)
    weights = gradient.mean(axis=(1, 2))  # (N, K): the global-average-pooled gradient
    cams = np.maximum((activations * weights[:, None, None, :]).sum(axis=-1), 0.0)
    return upsample(cams, receptive_fields(model)[index], model.input_shape), index


def occlusion_positions(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the patches: every `stride` pixels, plus a last row and column of patches
    flush with the image's edge so that every pixel is covered."""

    def starts(extent):
        values = list(range(0, max(extent - size, 0) + 1, stride))
        if values[-1] + size < extent:
            values.append(extent - size)
        return values

    return [(top, left) for top in starts(height) for left in starts(width)]


def default_occlusion(input_shape) -> tuple[int, int]:
    """(size, stride) of the occluding patch: about an eighth of the image, half-overlapping."""
    size = max(2, round(min(input_shape[:2]) / 8))
    return size, max(1, size // 2)


def occlusion_fill(model, images=None) -> np.ndarray:
    """The patch's colour (C,): the data set's mean (the model's standardisation mean, else the mean of
    `images`, else 0)."""
    channels = model.input_shape[2]
    if model.standardization is not None:
        return np.asarray(model.standardization["mean"], dtype=np.float32)
    if images is not None and len(images):
        return np.asarray(images, dtype=np.float32).mean(axis=(0, 1, 2))
    return np.zeros(channels, dtype=np.float32)


def occlusion_map(model, image, target: int, size=None, stride=None, fill=None) -> np.ndarray:
    """Occlusion sensitivity (H, W) of one image (H, W, C) for class `target` (see the module docstring)."""
    height, width, channels = model.input_shape
    default_size, default_stride = default_occlusion(model.input_shape)
    size = default_size if size is None else size
    stride = default_stride if stride is None else stride
    for name, value, top in (("size", size, min(height, width)), ("stride", stride, None)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"occlusion: {name} must be a whole number >= 1, got {value!r}")
        if top is not None and value > top:
            raise ValueError(f"occlusion: size {value} is larger than the {height}x{width} image")
    fill = (
        occlusion_fill(model) if fill is None else np.broadcast_to(np.asarray(fill, np.float32), (channels,))
    )
    positions = occlusion_positions(height, width, size, stride)
    if len(positions) > MAX_OCCLUSION_POSITIONS:
        raise ValueError(
            f"occlusion: {len(positions)} patch positions, over the {MAX_OCCLUSION_POSITIONS} limit: "
            "use a larger stride"
        )
    occluded = np.repeat(np.asarray(image, np.float32)[None], len(positions), axis=0)
    for k, (top, left) in enumerate(positions):
        occluded[k, top : top + size, left : left + size] = fill
    original = model.predict_proba(np.asarray(image, np.float32)[None])[0, target]
    drops = original - model.predict_proba(occluded)[:, target]
    total = np.zeros((height, width), dtype=np.float64)
    counts = np.zeros((height, width), dtype=np.int64)
    for drop, (top, left) in zip(drops, positions, strict=True):
        total[top : top + size, left : left + size] += drop
        counts[top : top + size, left : left + size] += 1
    return (total / np.maximum(counts, 1)).astype(np.float32)


# one call for the CLI, the report and the web app


def attribute(model, image, method: str, target=None, layer=None, **options) -> Attribution:
    """One method's map for one image (H, W, C) and class `target` (index, name or None: the predicted
    class). options: samples, noise, seed (smoothgrad); size, stride, fill (occlusion)."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; methods: {', '.join(METHODS)}")
    image = check_images(np.asarray(image)[None], model.input_shape, what="image")[0]
    started = time.perf_counter()
    probabilities = model.predict_proba(image[None])[0]
    predicted = int(probabilities.argmax())
    chosen = resolve_target(model, target)
    chosen = predicted if chosen is None else chosen
    layer_name, settings = None, {}
    if method == "gradient":
        values = gradient_maps(model, image[None], chosen)[0]
    elif method == "smoothgrad":
        settings = {
            "samples": options.get("samples", SMOOTHGRAD_SAMPLES),
            "noise": options.get("noise", SMOOTHGRAD_NOISE),
            "seed": options.get("seed", 0),
        }
        values = smoothgrad_map(model, image, chosen, **settings)
    elif method == "gradcam":
        maps, index = gradcam_maps(model, image[None], chosen, layer)
        values, layer_name = maps[0], model.layers[index].name
        settings = {"layer": layer_name}
    else:
        size, stride = default_occlusion(model.input_shape)
        settings = {"size": options.get("size") or size, "stride": options.get("stride") or stride}
        fill = options.get("fill")
        values = occlusion_map(model, image, chosen, fill=fill, **settings)
        settings["fill"] = [round(float(v), 4) for v in (occlusion_fill(model) if fill is None else fill)]
    return Attribution(
        method=method,
        values=np.asarray(values, dtype=np.float32),
        target=chosen,
        class_name=class_names(model)[chosen],
        predicted=predicted,
        probability=float(probabilities[chosen]),
        seconds=time.perf_counter() - started,
        layer=layer_name,
        settings=settings,
    )


def explain_why(model, image, methods=METHODS, target=None, layer=None, **options) -> list[Attribution]:
    """`attribute` for each of `methods`, same image and class."""
    return [attribute(model, image, method, target, layer, **options) for method in methods]
