"""End to end in a real headless browser: Debian's chromium, driven by Playwright, against
`convscope serve` started as a subprocess with a small model trained by the test.

`make test` installs chromium with apt when it is missing; where that is impossible these tests are
skipped with a message saying so. Screenshots are saved in each test's tmp_path.
"""

import os
import shutil
from types import SimpleNamespace

import pytest
from web_helpers import running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000
SEVEN = [(70, 60), (210, 60), (180, 120), (150, 180), (130, 240)]  # a digit-like stroke on the 280 canvas


def chromium_path():
    for candidate in (CHROMIUM, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip(
            "BROWSER TESTS SKIPPED: Debian's chromium is not installed and apt could not install it "
            "(run `apt-get install chromium`, or `make test`, which does)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="BROWSER TESTS SKIPPED: pip install 'convscope[dev]' for playwright"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(digits_model, tmp_path_factory):
    """`convscope serve --model digits.convscope` on a free port of 127.0.0.1; always killed afterwards."""
    folder = tmp_path_factory.mktemp("serve")
    arguments = ["--model", str(digits_model[0]), "--models-dir", str(folder / "models")]
    with running_server(arguments, folder) as url:
        yield SimpleNamespace(url=url, models_dir=folder / "models")


@pytest.fixture
def page(browser, server, tmp_path):
    """A fresh page at the explorer, ready; fails the test on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
    assert errors == [], errors


def draw(page, points):
    box = page.locator("#draw-canvas").bounding_box()
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=5)
    page.mouse.up()


def canvas_spread(page, selector) -> int:
    """The range of red values drawn on a canvas (0 for a blank or uniform one)."""
    return page.eval_on_selector(
        selector,
        """canvas => {
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let lo = 255, hi = 0;
            for (let i = 0; i < data.length; i += 4) {
                lo = Math.min(lo, data[i]);
                hi = Math.max(hi, data[i]);
            }
            return hi - lo;
        }""",
    )


def test_drawing_shows_feature_maps_a_prediction_and_a_kernel(page, tmp_path):
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    assert page.inner_text(".predicted-class") in [str(d) for d in range(10)]
    assert page.locator("#probabilities .prob-row").count() == 10
    assert page.locator(".fmap-grid canvas.fmap").count() == 16 * 3 + 32 * 3
    assert page.locator(".layer-card").count() == 11
    assert canvas_spread(page, '.layer-card[data-index="0"] canvas.fmap') > 0
    assert canvas_spread(page, "#model-input") > 100
    assert "framed the drawing" in page.inner_text("#input-notes")
    assert "8×8×16" in page.inner_text('.layer-card[data-index="0"] header')
    page.screenshot(path=str(tmp_path / "network.png"), full_page=True)

    page.locator('.layer-card[data-index="1"] canvas.fmap').nth(2).click()
    page.wait_for_selector("#map-kernel table.kernel-cells")
    assert "kernel 2 of conv2d" in page.inner_text("#map-kernel")
    assert page.locator("#map-kernel td").count() == 9
    page.screenshot(path=str(tmp_path / "feature-map.png"))
    page.click("#map-close")


def test_playground_redraws_when_a_kernel_cell_changes(page, tmp_path):
    page.click("nav button[data-view=playground]")
    page.wait_for_selector("#formula .rule")
    assert "height: floor((171 + 2·0 − 3) / 1) + 1 = 169" in page.inner_text("#formula")
    before = page.eval_on_selector("#pg-output", "canvas => canvas.toDataURL()")
    page.locator(".kernel-cell").first.fill("5")
    page.wait_for_function(
        "before => document.getElementById('pg-output').toDataURL() !== before", arg=before
    )
    page.select_option("#pg-padding", "1")
    page.fill("#pg-stride", "2")
    page.wait_for_function("() => document.getElementById('formula').innerText.includes('/ 2) + 1 = 86')")
    assert page.inner_text("#pg-output-shape") == "86×128×1"
    page.click("#presets button:text-is('sobel_x')")
    page.wait_for_function("() => document.querySelector('.kernel-cell').value === '-1'")
    page.select_option("#pg-size", "5")
    page.wait_for_function("() => document.querySelectorAll('.kernel-cell').length === 25")
    page.wait_for_function("() => document.getElementById('formula').innerText.includes('− 5) / 2) + 1')")
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)


def test_a_text_file_upload_shows_the_error_and_the_server_keeps_serving(page, tmp_path):
    page.set_input_files(
        "#upload-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture\n"}]
    )
    page.wait_for_selector("#network-error:not([hidden])")
    assert "not an image" in page.inner_text("#network-error")
    page.screenshot(path=str(tmp_path / "upload-error.png"), full_page=True)
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    page.wait_for_selector("#network-error", state="hidden")


def test_training_updates_the_chart_and_the_saved_model_appears(page, server, tmp_path):
    page.click("nav button[data-view=training]")
    page.select_option("#train-recipe", "tiny_cnn")
    page.fill("#train-epochs-input", "2")
    page.click("#train-start")
    page.wait_for_function("() => Number(document.getElementById('train-chart').dataset.points) > 2")
    page.wait_for_selector("#train-status:text-matches('training finished after')", timeout=30_000)
    assert page.locator("#train-epochs li").count() == 2
    page.fill("#train-save-name", "browser-digits")
    page.click("#train-save")
    page.wait_for_selector("#train-saved:text-matches('saved browser-digits.convscope')")
    page.screenshot(path=str(tmp_path / "training.png"), full_page=True)
    assert (server.models_dir / "browser-digits.convscope").is_file()
    page.click("nav button[data-view=network]")
    page.wait_for_selector("#model-select option[value='browser-digits']", state="attached")
    page.select_option("#model-select", "browser-digits")
    page.wait_for_function("() => document.querySelectorAll('.layer-card').length === 6")
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")


# stale results never stand beside an error or a newer input


def png_bytes(pixels) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


TEXT_FILE = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture\n"}


def test_a_playground_error_clears_the_old_feature_map_and_formula(page):
    page.click("nav button[data-view=playground]")
    page.wait_for_selector("#formula .rule")
    page.select_option("#pg-padding", "same")
    page.fill("#pg-stride", "2")
    page.wait_for_selector("#pg-error:not([hidden])")
    assert "stride" in page.inner_text("#pg-error")
    assert page.is_hidden("#pg-output") and page.inner_text("#formula") == ""
    assert page.inner_text("#pg-output-shape") == ""
    page.fill("#pg-stride", "1")
    page.wait_for_selector("#formula .rule")
    assert page.is_visible("#pg-output") and page.is_hidden("#pg-error")


def test_a_rejected_upload_clears_the_prediction_and_is_not_resent_for_another_model(
    page, server, digits_model
):
    server.models_dir.mkdir(exist_ok=True)
    (server.models_dir / "second.convscope").write_bytes(digits_model[0].read_bytes())
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    page.set_input_files("#upload-input", files=[TEXT_FILE])
    page.wait_for_selector("#network-error:not([hidden])")
    assert (
        page.locator(".predicted-class").count() == 0
        and page.locator("#probabilities .prob-row").count() == 0
    )
    assert canvas_spread(page, '.layer-card[data-index="0"] canvas.fmap') == 0  # no feature maps of the 7
    page.select_option("#model-select", "second")
    page.wait_for_function("() => document.getElementById('model-meta').innerText.includes('second')")
    page.wait_for_timeout(500)
    assert page.is_hidden("#network-error")  # the text file was not sent again
    assert page.locator(".predicted-class").count() == 0
    (server.models_dir / "second.convscope").unlink()


def test_an_uploaded_photo_replaces_the_drawing_on_the_canvas(page):
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    assert canvas_spread(page, "#draw-canvas") > 0
    white_paper = {"name": "paper.png", "mimeType": "image/png", "buffer": png_bytes([[255] * 40] * 40)}
    page.set_input_files("#upload-input", files=[white_paper])
    page.wait_for_function("() => document.getElementById('input-notes').innerText.includes('40x40')")
    assert canvas_spread(page, "#draw-canvas") == 0


def test_training_collapses_the_epoch_list_and_a_failed_save_clears_the_earlier_one(page, server):
    page.click("nav button[data-view=training]")
    page.select_option("#train-recipe", "tiny_cnn")
    page.fill("#train-epochs-input", "7")
    page.fill("#train-max-images", "64")
    page.click("#train-start")
    page.wait_for_selector("#train-status:text-matches('starting|loading|training ')")
    page.wait_for_selector("#train-epochs-earlier:text-matches('2 earlier epochs')", timeout=30_000)
    page.wait_for_selector("#train-status:text-matches('training finished after')", timeout=30_000)
    assert page.locator("#train-epochs li").count() == 5
    assert page.inner_text("#train-epochs-earlier").startswith("2 earlier epochs")
    assert page.inner_text("#train-epochs li >> nth=0").startswith("epoch 3:")
    page.fill("#train-save-name", "twice")
    page.click("#train-save")
    page.wait_for_selector("#train-saved:text-matches('saved twice.convscope')")
    page.click("#train-save")
    page.wait_for_selector("#train-error:not([hidden])")
    assert "already exists" in page.inner_text("#train-error") and page.inner_text("#train-saved") == ""
    (server.models_dir / "twice.convscope").unlink()


def test_at_800_pixels_wide_the_prediction_stays_beside_the_input(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    canvas = page.locator("#draw-canvas").bounding_box()
    prediction = page.locator(".predicted-class").bounding_box()
    page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)
    context.close()
    assert prediction["y"] + prediction["height"] < 900 and canvas["y"] + canvas["height"] < 900
    assert abs(prediction["y"] - canvas["y"]) < 300
