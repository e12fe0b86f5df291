"""The network view of a ResNet-20: the API lists and predicts the maps inside every residual block,
the kernel endpoint explains why a block's maps have no kernel, and the page draws it all in
chromium without a JavaScript error (screenshot in tmp_path)."""

import numpy as np
import pytest
from test_browser import CHROMIUM_FLAGS, browser  # noqa: F401  (the module's chromium fixture)
from web_helpers import png_bytes, running_server

from convscope.models import resnet

PHOTO = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    model = resnet(
        20, class_names=["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    model.standardization = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    path = tmp_path_factory.mktemp("models") / "resnet20.convscope"
    model.save(path)
    return path, model


def test_api_lists_and_predicts_the_maps_inside_each_block(resnet_file, models_dir):
    from fastapi.testclient import TestClient

    from convscope.web import create_app

    path, model = resnet_file
    with TestClient(create_app([path], models_dir, ())) as client:
        detail = client.get("/api/models/resnet20").json()
        blocks = [layer for layer in detail["layers"] if layer["type"] == "Residual"]
        assert len(blocks) == 9 and detail["params"] == 271_098
        assert [inner["path"] for inner in blocks[3]["inside"]] == [f"body.{i}" for i in range(5)] + [
            "shortcut.0"
        ]
        assert blocks[3]["inside"][-1]["type"] == "SubsampleZeroPad" and blocks[3]["output_shape"] == [
            16,
            16,
            32,
        ]
        files = {"image": ("photo.png", png_bytes(PHOTO), "image/png")}
        body = client.post("/api/models/resnet20/predict", files=files).json()
        assert len(body["layers"]) == len(model.layers)
        block = body["layers"][6]
        assert block["type"] == "Residual" and block["shape"] == [16, 16, 32]
        assert [inner["block"]["shape"] for inner in block["inside"]][-1] == [16, 16, 32]
        expected = model.predict_proba(PHOTO[None] / np.float32(255))[0]
        assert np.allclose(body["probabilities"], expected, atol=1e-4)
        answer = client.get("/api/models/resnet20/layers/6/kernel", params={"channel": 0})
        assert (
            answer.status_code == 422
            and "sum of its body's output and its shortcut's" in answer.json()["error"]
        )
        kernel = client.get("/api/models/resnet20/layers/2/kernel", params={"channel": 3}).json()
        assert kernel["conv_name"] == "conv2d" and kernel["through"] == ["batchnorm2d", "relu"]


def test_page_draws_a_resnet20_with_its_blocks_insides(browser, resnet_file, tmp_path):  # noqa: F811
    path, _ = resnet_file
    with running_server(["--model", str(path), "--models-dir", str(tmp_path / "models")], tmp_path) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        photo = {"name": "photo.png", "mimeType": "image/png", "buffer": png_bytes(PHOTO)}
        page.set_input_files("#upload-input", files=[photo])
        page.wait_for_selector(".predicted-class")
        assert page.locator(".layer-card").count() == 15  # 3 + 9 blocks + pooling, dense, softmax
        assert page.locator(".block-inside").count() == 9
        # 9 blocks x 5 body layers (16, 32 or 64 channels) + 2 option-A shortcuts
        assert page.locator("canvas.imap").count() == 5 * 3 * (16 + 32 + 64) + 32 + 64
        spread = page.eval_on_selector(
            '.layer-card[data-index="5"] .inside-layer[data-path="body.2"] canvas.imap',
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]);"
            " hi = Math.max(hi, d[i]); } return hi - lo; }",
        )
        assert spread > 0
        page.screenshot(path=str(tmp_path / "resnet20-network.png"), full_page=False)
        page.close()
        assert errors == [], errors
