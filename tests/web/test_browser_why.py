"""The network view's "why" in a real headless browser: the attribution overlay toggle draws a heat map
over the input, follows the chosen method, class and layer, and an enlarged feature map shows the
input its kernel wants to see. Fixtures and helpers come from test_browser.py (skipped, saying so,
where chromium is missing)."""

import re

from test_browser import SEVEN, browser, canvas_spread, draw, page, server  # noqa: F401  (fixtures)


def test_the_overlay_toggle_draws_a_heat_map_for_the_chosen_method(page, tmp_path):  # noqa: F811
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    assert page.locator("#why-overlay").is_hidden()
    page.check("#why-toggle")
    page.wait_for_selector("#why-overlay:not([hidden])")
    page.wait_for_function("document.getElementById('why-info').textContent.includes('answered in')")
    assert canvas_spread(page, "#why-overlay") > 0
    assert page.eval_on_selector("#why-overlay", "c => [c.width, c.height]") == [8, 8]
    info = page.inner_text("#why-info")
    assert re.search(r"gradcam on relu_1 for class \d .* answered in \d+ ms", info), info
    assert "magma" in page.inner_text("#why-scale")
    page.screenshot(path=str(tmp_path / "why-gradcam.png"), full_page=True)

    page.select_option("#why-method", "occlusion")
    page.wait_for_selector('#why-overlay[data-method="occlusion"]')
    page.wait_for_function("document.getElementById('why-scale').textContent.includes('RdBu_r')")
    assert page.locator("#why-layer-label").is_hidden()
    page.select_option("#why-method", "gradient")
    page.select_option("#why-class", "3")
    page.wait_for_function("document.getElementById('why-info').textContent.includes('gradient for class 3')")
    assert canvas_spread(page, "#why-overlay") > 0

    page.uncheck("#why-toggle")
    assert page.locator("#why-overlay").is_hidden()


def test_an_enlarged_feature_map_shows_what_its_kernel_wants_to_see(page):  # noqa: F811
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    page.locator('.layer-card[data-index="4"] canvas.fmap').nth(5).click()
    page.wait_for_selector("#map-maximized canvas")
    assert canvas_spread(page, "#map-maximized canvas") > 0
    text = page.inner_text("#map-maximized")
    assert "What this kernel wants to see" in text and "kernel 5 of conv2d_1" in text
