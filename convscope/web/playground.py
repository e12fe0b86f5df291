"""Convolution playground API: one kernel slid over one image by the engine's own conv op."""

import secrets
import threading
from collections import OrderedDict
from functools import cache
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from convscope.web.encoding import encode_image, encode_scaled
from convscope.web.errors import WebError
from convscope.web.uploads import decode_image, read_upload, shrink_to_fit

router = APIRouter(prefix="/api/playground", tags=["playground"])
KERNEL_SIZES = (3, 5)
MAX_SIDE = 256  # playground images are shrunk to this side so every edit answers at once
MAX_UPLOADS = 16  # uploaded playground images kept in memory (least recently used go first)
SAMPLES = {
    "photo": "scikit-learn's sample photo (china.jpg), shrunk",
    "shapes": "white shapes on black: a square, a disc and a diagonal line",
    "digit": "a bundled 8x8 test digit (a 0): small enough to count every pixel",
}


class UploadedImages:
    """Playground images uploaded by the page, by random id, the last MAX_UPLOADS of them."""

    def __init__(self, limit: int = MAX_UPLOADS):
        self.limit = limit
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, image: np.ndarray) -> str:
        key = "upload-" + secrets.token_hex(6)
        with self._lock:
            self._images[key] = image
            while len(self._images) > self.limit:
                self._images.popitem(last=False)
        return key

    def get(self, key: str):
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
            return image


def _shapes_image(size: int = 48) -> np.ndarray:
    """(size, size, 1): a square outline, a filled disc and a diagonal line, white on black."""
    image = np.zeros((size, size), dtype=np.float32)
    image[6:22, 6] = image[6:22, 21] = image[6, 6:22] = image[21, 6:22] = 1.0
    rows, columns = np.mgrid[0:size, 0:size]
    image[(rows - 33) ** 2 + (columns - 33) ** 2 <= 64] = 1.0
    diagonal = np.arange(26, 44)
    image[diagonal - 20, diagonal] = 1.0
    return image[..., None]


@cache
def sample_image(name: str) -> np.ndarray:
    """A bundled playground image (H, W, C) in [0, 1] by name (see SAMPLES)."""
    if name == "photo":
        from PIL import Image

        from convscope.explain.convolve import sample_photo

        photo = Image.fromarray(np.round(sample_photo() * 255).astype(np.uint8))
        scale = MAX_SIDE / max(photo.size)
        size = (round(photo.size[0] * scale), round(photo.size[1] * scale))
        return np.asarray(photo.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    if name == "shapes":
        return _shapes_image()
    if name == "digit":
        from convscope.data import load

        test = load("digits", split="test")
        return test.images[int(np.flatnonzero(test.labels == 0)[0])]
    raise KeyError(name)


def _find_image(request: Request, name: str) -> np.ndarray:
    if name in SAMPLES:
        return sample_image(name)
    image = request.app.state.playground_images.get(name)
    if image is None:
        raise WebError(
            404,
            f"there is no playground image called {name!r}: pick a sample ({', '.join(SAMPLES)}) "
            "or upload the image again",
        )
    return image


@router.get("/kernels", summary="The classic kernels, for the preset buttons")
def kernels() -> dict:
    from convscope.explain.kernels import CLASSIC_KERNELS

    return {
        "kernels": [
            {"name": k.name, "values": k.values.tolist(), "description": k.description}
            for k in CLASSIC_KERNELS.values()
        ]
    }


@router.get("/samples", summary="The bundled playground images")
def samples() -> dict:
    return {
        "samples": [
            {"name": name, "description": text, "shape": list(sample_image(name).shape)}
            for name, text in SAMPLES.items()
        ]
    }


@router.post("/images", summary="Upload an image for the playground (shrunk to 256 pixels a side)")
async def upload_image(request: Request, image: Annotated[UploadFile, File()]) -> dict:
    data = await read_upload(image)
    pixels, notes = await run_in_threadpool(lambda: shrink_to_fit(data, decode_image(data), MAX_SIDE))
    key = request.app.state.playground_images.add(pixels)
    return {"id": key, "shape": list(pixels.shape), "notes": notes}


class ConvolveRequest(BaseModel):
    image: str = Field("photo", description="a sample name (photo, shapes, digit) or an uploaded image's id")
    kernel: list[list[float]] = Field(..., description="3x3 or 5x5 rows of numbers")
    padding: Literal["same", "valid"] | int = Field("valid", description="'same', 'valid' or 0..16 zeros")
    stride: int = Field(1, ge=1, le=16)
    per_channel: bool = Field(False, description="one map per colour channel instead of their sum")
    gray: bool = Field(False, description="convert a colour image to grayscale first")


def check_kernel(rows: list[list[float]]) -> np.ndarray:
    """The kernel as a (k, k) float32 array with k in KERNEL_SIZES, or a 422 WebError saying why not."""
    sizes = " or ".join(f"{k}x{k}" for k in KERNEL_SIZES)
    lengths = sorted({len(row) for row in rows})
    if len(lengths) > 1:
        raise WebError(422, f"the kernel's rows must have equal lengths, got rows of {lengths} values")
    shape = (len(rows), lengths[0] if lengths else 0)
    if shape[0] != shape[1] or shape[0] not in KERNEL_SIZES:
        raise WebError(422, f"the kernel must be {sizes}, got {shape[0]}x{shape[1]}")
    kernel = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(kernel).all():
        raise WebError(422, "every kernel cell must be a finite number")
    return kernel


def _check_padding(padding) -> str | int:
    if isinstance(padding, int) and not 0 <= padding <= 16:
        raise WebError(422, f"padding must be 'same', 'valid' or 0 to 16 zeros, got {padding}")
    return padding


def _display(feature_map: np.ndarray) -> tuple[dict, str]:
    """The map on the command's display scale (clipped at the 99.5th percentile) and its note."""
    from convscope.explain.convolve import _display_map

    shown, args, note = _display_map(feature_map)
    if shown.ndim == 2:
        return encode_scaled(shown[..., None], args["vmin"], args["vmax"], "gray"), note
    return encode_scaled(shown, 0.0, 1.0, "rgb" if shown.shape[2] == 3 else "gray"), note


@router.post("/convolve", summary="Convolve an image with a kernel: the feature map and the size rule")
def convolve(body: ConvolveRequest, request: Request) -> dict:
    """Slides the kernel with convscope.ops.conv2d_forward (via explain.convolve.convolve_image) and
    works out floor((size + 2·padding − kernel) / stride) + 1 for the height and the width."""
    from convscope.explain.convolve import convolve_image, size_rule_text
    from convscope.ops import resolve_padding

    image = _find_image(request, body.image)
    if body.gray and image.shape[2] == 3:
        image = image.mean(axis=2, keepdims=True)
    kernel = check_kernel(body.kernel)
    padding = _check_padding(body.padding)
    try:
        pads = resolve_padding(padding, kernel.shape, body.stride)
        feature_map = convolve_image(image, kernel, padding, body.stride, per_channel=body.per_channel)
    except ValueError as error:
        raise WebError(422, f"this convolution is not possible: {error}") from None
    shown, note = _display(feature_map)
    relu = np.maximum(feature_map, 0) if feature_map.min() < 0 else None
    height, width = image.shape[:2]
    return {
        "input": encode_image(image),
        "kernel_shape": list(kernel.shape),
        "padding": [list(p) for p in pads],
        "output_shape": list(feature_map.shape),
        "output": shown,
        "output_note": note,
        "relu": None if relu is None else _display(relu)[0],
        "value_range": [float(feature_map.min()), float(feature_map.max())],
        "formula": {
            "height": size_rule_text(height, kernel.shape[0], body.stride, pads[0]),
            "width": size_rule_text(width, kernel.shape[1], body.stride, pads[1]),
        },
    }
