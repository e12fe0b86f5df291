"""The convolution playground's API: kernels, samples, uploads, one convolution and its size rule."""

import base64

import numpy as np
import pytest
from web_helpers import assert_error, png_bytes

from convscope.explain.convolve import convolve_image
from convscope.explain.kernels import CLASSIC_KERNELS
from convscope.web.playground import sample_image

VERTICAL = CLASSIC_KERNELS["vertical_line"].values.tolist()


def convolve(client, **body):
    return client.post("/api/playground/convolve", json={"image": "shapes", "kernel": VERTICAL, **body})


def test_kernels_and_samples(client):
    kernels = client.get("/api/playground/kernels").json()["kernels"]
    assert [k["name"] for k in kernels] == list(CLASSIC_KERNELS)
    blur = next(k for k in kernels if k["name"] == "gaussian_blur_5x5")
    assert blur["values"][2][2] == pytest.approx(36 / 256)
    samples = {s["name"]: s for s in client.get("/api/playground/samples").json()["samples"]}
    assert samples["digit"]["shape"] == [8, 8, 1] and samples["shapes"]["shape"] == [48, 48, 1]
    assert samples["photo"]["shape"][2] == 3 and max(samples["photo"]["shape"][:2]) == 256


def test_convolve_uses_the_engine_and_works_out_the_size_rule(client):
    body = convolve(client, padding=1, stride=2).json()
    assert body["output_shape"] == [24, 24, 1]
    assert body["formula"]["height"] == "floor((48 + 2·1 − 3) / 2) + 1 = 24"
    assert body["padding"] == [[1, 1], [1, 1]]
    expected = convolve_image(sample_image("shapes"), np.asarray(VERTICAL, np.float32), 1, 2)
    assert body["value_range"] == pytest.approx([float(expected.min()), float(expected.max())], abs=1e-5)
    output = body["output"]
    data = np.frombuffer(base64.b64decode(output["data"]), np.uint8).reshape(24, 24)
    assert output["colormap"] == "gray" and output["low"] == -output["high"]
    assert data[expected[..., 0] > 0.9 * output["high"]].min() > 200  # bright where the map is high
    assert body["relu"] is not None  # the map has negative values


def test_same_padding_keeps_the_size_and_a_5x5_kernel_works(client):
    assert convolve(client, padding="same").json()["output_shape"] == [48, 48, 1]
    blur = CLASSIC_KERNELS["gaussian_blur_5x5"].values.tolist()
    body = convolve(client, kernel=blur, image="digit").json()
    assert body["output_shape"] == [4, 4, 1] and body["relu"] is None
    assert body["formula"]["width"] == "floor((8 + 2·0 − 5) / 1) + 1 = 4"


def test_colour_photo_summed_per_channel_and_gray(client):
    summed = convolve(client, image="photo").json()
    assert summed["input"]["shape"][2] == 3 and summed["output_shape"][2] == 1
    assert convolve(client, image="photo", per_channel=True).json()["output"]["layout"] == "rgb"
    gray = convolve(client, image="photo", gray=True).json()
    assert gray["input"]["shape"][2] == 1


def test_an_edited_cell_changes_the_map(client):
    edited = [row[:] for row in VERTICAL]
    edited[0][0] = 5.0
    before = convolve(client).json()["output"]["data"]
    assert convolve(client, kernel=edited).json()["output"]["data"] != before


@pytest.mark.parametrize(
    ("kernel", "words"),
    [
        ([[1, 0], [0, 1]], ["3x3 or 5x5", "2x2"]),
        ([[0, 0, 0, 0]] * 4, ["4x4"]),
        ([[0, 1, 0]] * 5, ["5x3"]),
        ([[0, 1, 0], [0, 1], [0, 1, 0]], ["equal lengths"]),
        ([], ["0x0"]),
        ([[0] * 7] * 7, ["7x7"]),
    ],
)
def test_wrong_kernel_sizes_are_422(client, kernel, words):
    assert_error(convolve(client, kernel=kernel), 422, *words)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"padding": "same", "stride": 2}, 422, ["padding='same' needs stride 1"]),
        ({"padding": 17}, 422, ["0 to 16"]),
        ({"padding": "full"}, 422, ["padding"]),
        ({"stride": 0}, 422, ["stride"]),
        ({"kernel": "0 1 0"}, 422, ["kernel"]),
        ({"kernel": [["a", 1, 0]] * 3}, 422, ["kernel"]),
        ({"image": "../../etc/passwd"}, 404, ["no playground image"]),
        ({"image": "upload-000000000000"}, 404, ["upload the image again"]),
    ],
)
def test_bad_convolutions_are_4xx_sentences(client, body, status, words):
    assert_error(convolve(client, **body), status, *words)
    assert client.get("/api/health").status_code == 200


def test_uploaded_images_are_shrunk_and_convolved_by_id(client):
    big = np.zeros((300, 600, 3), dtype=np.uint8)
    big[:, 300:] = 255
    upload = client.post("/api/playground/images", files={"image": ("wide.png", png_bytes(big), "image/png")})
    body = upload.json()
    assert body["shape"] == [128, 256, 3] and body["notes"] == ["shrunk 300x600 to 128x256 (height x width)"]
    assert body["id"].startswith("upload-")
    result = convolve(client, image=body["id"], kernel=CLASSIC_KERNELS["sobel_x"].values.tolist()).json()
    assert result["output_shape"] == [126, 254, 1] and result["value_range"][1] > 3  # the edge


def test_gray_uploads_stay_gray(client):
    ramp = np.linspace(0, 65535, 20 * 10).reshape(10, 20).astype(np.uint16)
    upload = client.post(
        "/api/playground/images", files={"image": ("ramp.png", png_bytes(ramp), "image/png")}
    )
    assert upload.json()["shape"] == [10, 20, 1]


def test_playground_upload_errors(client):
    files = {"image": ("notes.txt", b"hello", "text/plain")}
    assert_error(client.post("/api/playground/images", files=files), 415, "not an image")
    too_big = {"image": ("big.png", b"\0" * (8 * 1024 * 1024 + 1), "image/png")}
    assert_error(client.post("/api/playground/images", files=too_big), 413, "upload limit")


def test_only_the_last_uploads_are_kept():
    from convscope.web.playground import UploadedImages

    store = UploadedImages(limit=2)
    keys = [store.add(np.zeros((2, 2, 1))) for _ in range(3)]
    assert store.get(keys[0]) is None and store.get(keys[2]) is not None
