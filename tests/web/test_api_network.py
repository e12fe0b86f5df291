"""The network view's API: models by name, one image through a model, the kernel behind a map, errors."""

import io

import numpy as np
import pytest
from web_helpers import assert_error, png_bytes, png_header_only

from convscope.web import uploads
from convscope.web.uploads import to_model_input


def post_image(client, name, data, filename="image.png", **form):
    return client.post(
        f"/api/models/{name}/predict",
        files={"image": (filename, data, "application/octet-stream")},
        data={key: str(value).lower() for key, value in form.items()},
    )


def test_health_limits_colormaps_and_page(client):
    assert client.get("/api/health").json()["status"] == "ok"
    limits = client.get("/api/limits").json()
    assert limits == {"max_upload_bytes": 8 * 1024 * 1024, "max_image_pixels": 16_000_000}
    tables = client.get("/api/colormaps").json()
    assert set(tables) == {"magma", "RdBu_r", "gray"}
    assert all(len(table) == 256 and len(table[0]) == 3 for table in tables.values())
    assert tables["gray"][0] == [0, 0, 0] and tables["gray"][-1] == [255, 255, 255]
    page = client.get("/")
    assert page.status_code == 200 and "convscope explorer" in page.text
    for asset in ("app.js", "util.js", "network.js", "playground.js", "training.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/models",
        "/api/models/{name}",
        "/api/models/{name}/predict",
        "/api/models/{name}/layers/{index}/kernel",
        "/api/playground/kernels",
        "/api/playground/samples",
        "/api/playground/images",
        "/api/playground/convolve",
        "/api/training",
        "/api/training/options",
        "/api/training/events",
        "/api/training/stop",
        "/api/training/save",
        "/api/health",
        "/api/limits",
        "/api/colormaps",
    ):
        assert path in paths, path


def test_models_are_listed_by_name_with_their_shapes(client, models_dir):
    (models_dir / "broken.convscope").write_bytes(b"not a zip archive")
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert list(models) == ["digits", "gray28", "rgb", "broken"]
    assert models["digits"]["input_shape"] == [8, 8, 1] and models["digits"]["drawable"]
    assert models["digits"]["class_names"] == [str(d) for d in range(10)]
    assert models["rgb"]["drawable"] is False and models["rgb"]["class_names"] == ["cat", "dog"]
    assert models["gray28"]["standardized"] is True
    assert "cannot be loaded" in models["broken"]["error"]
    assert_error(client.get("/api/models/broken"), 422, "broken", "cannot be loaded")


def test_model_detail_lists_layers(client, digits_model):
    detail = client.get("/api/models/digits").json()
    _, model = digits_model
    assert [layer["name"] for layer in detail["layers"]] == [layer.name for layer in model.layers]
    assert detail["layers"][0]["output_shape"] == [8, 8, 16]
    assert detail["params"] == model.count_params()


@pytest.mark.parametrize(
    "path",
    [
        "/api/models/nope",
        "/api/models/..%2F..%2Fetc%2Fpasswd",
        "/api/models/%2Fetc%2Fpasswd",
        "/api/models/digits.convscope",
        "/api/models/nope/layers/0/kernel?channel=0",
    ],
)
def test_unknown_model_names_are_404_and_no_path_is_opened(client, path):
    assert_error(client.get(path), 404)


def test_unknown_model_on_predict_is_404_naming_the_known_ones(client):
    message = assert_error(post_image(client, "nope", png_bytes(np.zeros((8, 8)))), 404, "no model called")
    assert "digits" in message


def test_predict_returns_every_layer_and_the_library_numbers(client, digits_model):
    _, model = digits_model
    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    body = post_image(client, "digits", png_bytes(pixels)).json()
    expected = model.predict_proba((pixels / 255.0).astype(np.float32)[None, :, :, None])[0]
    assert np.allclose(body["probabilities"], expected, atol=1e-4)
    assert body["prediction"]["index"] == int(expected.argmax())
    assert body["prediction"]["name"] == str(int(expected.argmax()))
    assert len(body["layers"]) == len(model.layers)
    first = body["layers"][0]
    assert first["shape"] == [8, 8, 16] and first["block"]["colormap"] == "RdBu_r"
    assert body["layers"][1]["block"]["colormap"] == "magma"  # after ReLU: never negative
    assert body["layers"][6]["vector"]["shape"] == [128]  # flatten of 2x2x32
    assert body["input"]["image"]["shape"] == [8, 8, 1] and body["input"]["notes"] == []


def test_predict_block_bytes_follow_the_feature_maps(client, digits_model):
    import base64

    _, model = digits_model
    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[1:7, 3:5] = 255
    block = post_image(client, "digits", png_bytes(pixels)).json()["layers"][1]["block"]
    maps = model.feature_maps((pixels / 255.0).astype(np.float32)[None, :, :, None])[1][0]
    data = np.frombuffer(base64.b64decode(block["data"]), dtype=np.uint8).reshape(16, 8, 8)
    assert block["low"] == 0 and block["high"] == pytest.approx(float(maps.max()), rel=1e-5)
    assert np.abs(data / 255.0 * block["high"] - maps.transpose(2, 0, 1)).max() <= block["high"] / 255


def test_a_drawing_is_framed_around_its_ink_then_resized(client):
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[..., 3] = 255  # a canvas snapshot: opaque RGBA
    canvas[100:160, 30:50, :3] = 255  # a short bar far off centre
    body = post_image(client, "gray28", png_bytes(canvas), drawing=True).json()
    notes = body["input"]["notes"]
    assert notes[0] == "converted RGB to grayscale"
    assert "framed the drawing" in notes[1] and notes[2].startswith("resized")
    assert not any("transparency" in note for note in notes)
    assert body["input"]["standardization"] == {"mean": [0.2], "std": [0.3]}
    import base64

    image = np.frombuffer(base64.b64decode(body["input"]["image"]["data"]), np.uint8).reshape(28, 28)
    rows, columns = np.nonzero(image > 128)
    assert abs(rows.mean() - 13.5) < 2 and abs(columns.mean() - 13.5) < 2  # centred
    assert rows.min() >= 3 and rows.max() <= 24  # inside the 20x20 box, like MNIST


def test_fit_drawing_leaves_an_empty_canvas_alone():
    empty = np.zeros((50, 50), dtype=np.float32)
    assert uploads.fit_drawing(empty, 28) is empty


def test_upload_is_converted_and_inverted(client):
    white_paper = np.full((40, 40, 3), 255, dtype=np.uint8)
    body = post_image(client, "digits", png_bytes(white_paper), invert=True).json()
    notes = body["input"]["notes"]
    assert notes == [
        "converted RGB to grayscale",
        "resized 40x40 to 8x8 (height x width)",
        "inverted (dark ink on light paper -> light on dark)",
    ]
    colour = post_image(client, "rgb", png_bytes(np.zeros((10, 20), np.uint8))).json()
    assert colour["input"]["image"]["shape"] == [32, 32, 3] and colour["input"]["image"]["layout"] == "rgb"
    assert colour["input"]["notes"] == ["converted L to RGB", "resized 10x20 to 32x32 (height x width)"]


def test_to_model_input_refuses_other_channel_counts():
    from PIL import Image

    with pytest.raises(Exception, match="1 or 3 channels"):
        to_model_input(b"", Image.new("L", (4, 4)), (4, 4, 2))


def test_uploads_are_converted_by_the_library_reader(client):
    """16-bit gray PNGs are scaled, not clipped (convscope.data.images.read_image does the work)."""
    ramp = np.linspace(0, 65535, 8 * 8).reshape(8, 8).astype(np.uint16)
    body = post_image(client, "digits", png_bytes(ramp)).json()
    assert body["input"]["notes"] == ["scaled 16-bit I;16 values to [0, 1]"]
    import base64

    image = np.frombuffer(base64.b64decode(body["input"]["image"]["data"]), np.uint8)
    assert image[0] == 0 and image[-1] == 255 and 120 < image[31] < 136


def test_image_formats_outside_the_readers_list_are_415(client):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="TGA")
    assert_error(post_image(client, "digits", buffer.getvalue(), "a.tga"), 415, "PNG, JPEG")


def test_non_image_upload_is_415(client):
    assert_error(post_image(client, "digits", b"just some text\n", "notes.txt"), 415, "not an image")


def test_truncated_image_is_422(client):
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    assert_error(post_image(client, "digits", data[: len(data) // 2]), 422, "damaged")


def test_empty_upload_and_missing_file_are_422(client):
    assert_error(post_image(client, "digits", b""), 422, "empty")
    assert_error(client.post("/api/models/digits/predict", data={"invert": "false"}), 422, "image")


def test_upload_over_the_size_limit_is_413(client):
    data = b"\x89PNG" + b"\0" * (8 * 1024 * 1024)
    assert_error(post_image(client, "digits", data), 413, "8.0 MB")


@pytest.mark.parametrize("side", [5000, 20000])
def test_decompression_bombs_are_413_before_decoding(client, side):
    # 5000x5000 passes pillow's own guard and meets ours; 20000x20000 trips pillow's at open
    message = assert_error(post_image(client, "digits", png_header_only(side, side)), 413, "megapixels")
    assert "16" in message
    assert client.get("/api/health").status_code == 200


def test_kernel_behind_a_feature_map(client, digits_model):
    _, model = digits_model
    first = client.get("/api/models/digits/layers/0/kernel", params={"channel": 5}).json()
    assert first["shape"] == [3, 3, 1] and first["through"] == [] and first["conv_name"] == "conv2d"
    assert np.allclose(first["values"], model.layers[0].params["weight"][:, :, 0, 5].ravel(), atol=1e-4)
    assert first["bias"] == pytest.approx(float(model.layers[0].params["bias"][5]), abs=1e-6)
    pooled = client.get("/api/models/digits/layers/5/kernel", params={"channel": 31}).json()
    assert pooled["conv_layer"] == 3 and pooled["through"] == ["relu_1", "maxpool2d_1"]
    assert pooled["shape"] == [3, 3, 16] and len(pooled["values"]) == 3 * 3 * 16
    weights = model.layers[3].params["weight"][:, :, :, 31]
    assert np.allclose(pooled["values"], weights.transpose(2, 0, 1).ravel(), atol=1e-4)


def test_kernel_errors(client):
    assert_error(client.get("/api/models/digits/layers/6/kernel?channel=0"), 422, "not made by kernels")
    assert_error(client.get("/api/models/digits/layers/0/kernel?channel=16"), 422, "channels 0 to 15")
    assert_error(client.get("/api/models/digits/layers/11/kernel?channel=0"), 404, "layers 0 to 10")
    assert_error(client.get("/api/models/digits/layers/0/kernel"), 422, "channel")
