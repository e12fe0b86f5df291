"""Kernel evolution: the first conv layer's kernels and one test image's feature maps after an epoch, as
compact JSON for the page (a "snapshot" event per epoch; the page scrubs through them with a slider)."""

import numpy as np

from convscope.layers import BatchNorm2D, Conv2D, Dropout, ReLU
from convscope.web.encoding import encode_block, encode_image, encode_scaled

FOLLOWERS = (BatchNorm2D, ReLU, Dropout)  # layers shown with the conv before them: same channels
MAX_CHANNELS = 64  # kernels and maps per snapshot: a job keeps one snapshot per epoch, for the slider


def first_conv(model) -> int | None:
    """The index of the model's first Conv2D layer, or None."""
    return next((i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)), None)


def shown_block(model, conv_index: int) -> int:
    """The layer whose output is drawn for the conv at `conv_index`: the conv itself, or the last of the
    batch norm, ReLU and dropout layers right after it (what the next layer sees, as CNN Explainer shows)."""
    index = conv_index
    while index + 1 < len(model.layers) and isinstance(model.layers[index + 1], FOLLOWERS):
        index += 1
    return index


def encode_kernels(weight: np.ndarray) -> dict:
    """Conv weights (kh, kw, C_in, C_out) -> the first MAX_CHANNELS kernels on one symmetric scale around
    0: gray maps (RdBu_r) of input channel 0 when C_in is not 3, else one RGB tile per kernel
    (0.5 + w / 2max)."""
    count = int(weight.shape[3])
    weight = weight[..., :MAX_CHANNELS]
    bound = float(np.abs(weight).max()) or 1.0
    kh, kw, c_in, c_out = weight.shape
    if c_in == 3:
        tiles = 0.5 + weight.transpose(3, 0, 1, 2) / (2 * bound)  # (C_out, kh, kw, 3)
        return {
            "kind": "rgb",
            "count": count,
            "bound": bound,
            "shape": [kh, kw, c_in, c_out],
            "tiles": [encode_scaled(tile, 0.0, 1.0, "rgb") for tile in tiles],
        }
    return {
        "kind": "channels",
        "count": count,
        "bound": bound,
        "shape": [kh, kw, c_in, c_out],
        "block": encode_scaled(weight[:, :, 0, :], -bound, bound, "RdBu_r"),
        "note": None if c_in == 1 else f"input channel 0 of {c_in}",
    }


def snapshot(model, epoch: int, probe: np.ndarray | None) -> dict:
    """The "snapshot" event after `epoch` (0: before training): the first conv layer's kernels and the
    feature maps it (and the layers right after it) makes of the probe image (H, W, C)."""
    event = {"type": "snapshot", "epoch": epoch, "kernels": None, "maps": None}
    conv = first_conv(model)
    if conv is None:
        event["note"] = "this network has no conv layer: there are no kernels to draw"
        return event
    event["kernels"] = encode_kernels(model.layers[conv].params["weight"])
    event["kernel_layer"] = model.layers[conv].name
    if probe is not None:
        shown = shown_block(model, conv)
        outputs = model.feature_maps(probe[None])
        block = outputs[shown][0]
        event["maps"] = encode_block(block[..., :MAX_CHANNELS])
        event["maps_layer"] = " + ".join(layer.name for layer in model.layers[conv : shown + 1])
        event["channels"] = int(block.shape[-1])  # of which the first MAX_CHANNELS are drawn
    return event


def probe_event(image: np.ndarray, label: str, index: int, split: str) -> dict:
    """The "probe" event: which image's feature maps the snapshots hold."""
    return {"type": "probe", "image": encode_image(image), "label": label, "index": index, "split": split}
