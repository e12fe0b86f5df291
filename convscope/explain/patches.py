"""What each kernel looks for: the image patches of a data set that excite it most.

For every channel of a conv layer's output, each image counts once, at its strongest position (so
nine near-copies of one stroke cannot fill the list); the `k` images with the strongest such
activation win, ties going to the earlier image. A winner's patch is the receptive field of that
position in the input, cut from the zero-padded image exactly as the network saw it.
"""

from typing import NamedTuple

import numpy as np

from convscope.checks import check_images
from convscope.explain.receptive import ReceptiveField, receptive_fields

TOP_K = 9


class TopPatches(NamedTuple):
    layer_index: int
    field: ReceptiveField
    activations: np.ndarray  # (C_out, k) strongest first
    image_indices: np.ndarray  # (C_out, k) into the searched images
    positions: np.ndarray  # (C_out, k, 2) (row, column) in the layer's output
    patches: np.ndarray  # (C_out, k, field height, field width, C_in) input pixels


def layer_output(model, x: np.ndarray, layer_index: int) -> np.ndarray:
    """Output of model.layers[layer_index] for a batch x (N, H, W, C) of raw images, in inference mode
    (the model's standardisation applied first, as in every other pass)."""
    x = model.standardize(x)
    for layer in model.layers[: layer_index + 1]:
        x = layer.forward(x)
    return x


def _strongest_positions(block: np.ndarray):
    """(B, H, W, C) -> per image and channel the largest value (B, C) and its flat position (B, C)."""
    flat = block.reshape(block.shape[0], -1, block.shape[3])
    where = flat.argmax(axis=1)
    return np.take_along_axis(flat, where[:, None, :], axis=1)[:, 0, :], where


def _merge(best_values, best_images, best_where, values, images, where, k):
    """Keep the k largest of the running best and a batch's candidates, per channel (axis 1)."""
    values = np.concatenate([best_values, values])
    images = np.concatenate([best_images, images])
    where = np.concatenate([best_where, where])
    order = np.argsort(-values, axis=0, kind="stable")[:k]
    return tuple(np.take_along_axis(a, order, axis=0) for a in (values, images, where))


def cut_patches(images: np.ndarray, field: ReceptiveField, image_indices, positions) -> np.ndarray:
    """Input pixels of each receptive field: images (N, H, W, C), indices (...,), positions (..., 2)
    -> (..., field height, field width, C); outside the image is zero, as in the padding."""
    margin = max(field.size) + max(abs(s) for s in field.start)
    padded = np.pad(images, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    out = np.zeros((*image_indices.shape, *field.size, images.shape[3]), dtype=images.dtype)
    for index in np.ndindex(image_indices.shape):
        rows, columns = field.window(*positions[index])
        rows = slice(rows.start + margin, rows.stop + margin)
        columns = slice(columns.start + margin, columns.stop + margin)
        out[index] = padded[image_indices[index], rows, columns]
    return out


def top_patches(model, images, layer_index: int, k: int = TOP_K, batch_size: int = 256) -> TopPatches:
    """The k images (N, H, W, C) whose strongest response excites each channel of layer `layer_index`
    most, with their receptive-field patches (see the module docstring)."""
    images = check_images(images, model.input_shape, what="patch images")
    field = receptive_fields(model)[layer_index]
    if field is None:
        raise ValueError(f"layer {layer_index} ({model.layers[layer_index].name}) has no spatial output")
    if images.shape[0] == 0:
        raise ValueError("top_patches needs at least one image")
    k = min(k, images.shape[0])
    channels = model.layers[layer_index].output_shape[2]
    best = (
        np.empty((0, channels), np.float32),
        np.empty((0, channels), np.int64),
        np.empty((0, channels), int),
    )
    for start in range(0, images.shape[0], batch_size):
        block = layer_output(model, images[start : start + batch_size], layer_index)
        values, where = _strongest_positions(block)
        image_ids = np.broadcast_to(np.arange(start, start + block.shape[0])[:, None], values.shape)
        best = _merge(*best, values, image_ids, where, k)
    values, image_ids, where = (a.T for a in best)  # (C, k)
    width = model.layers[layer_index].output_shape[1]
    positions = np.stack([where // width, where % width], axis=-1)
    return TopPatches(
        layer_index, field, values, image_ids, positions, cut_patches(images, field, image_ids, positions)
    )


def patches_in_context(images: np.ndarray, top: TopPatches):
    """Each top patch shown inside its whole image: (tiles, inside) with tiles (C_out, k, H', W', C_in),
    the images zero-padded just enough to hold every window, and inside (C_out, k, H', W') True on the
    receptive field."""
    height, width = images.shape[1:3]
    windows = [top.field.window(*position) for position in top.positions.reshape(-1, 2)]
    before = [max(0, -min(w[a].start for w in windows)) for a in range(2)]
    after = [max(0, max(w[a].stop for w in windows) - size) for a, size in enumerate((height, width))]
    padded = np.pad(images[top.image_indices], ((0, 0), (0, 0), *zip(before, after, strict=True), (0, 0)))
    inside = np.zeros(padded.shape[:4], dtype=bool)
    for index in np.ndindex(top.positions.shape[:2]):
        rows, columns = top.field.window(*top.positions[index])
        top_row, left = rows.start + before[0], columns.start + before[1]
        inside[index][top_row : top_row + top.field.size[0], left : left + top.field.size[1]] = True
    return padded, inside
