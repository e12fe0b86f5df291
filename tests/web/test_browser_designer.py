"""The designer in a real headless chromium (see test_browser.py): build the article's CNN from an empty
design by clicking, see an impossible setting marked, train it on 28x28 digits with the kernels changing
between epochs, reattach from a new tab, stop, resume, save, predict with it, compare two runs.

Screenshots (designer-error.png, kernels-epoch-1.png, kernels-epoch-2.png, compare.png) go to tmp_path.
"""

from types import SimpleNamespace

import pytest
from test_browser import SEVEN, WAIT_MS, browser, draw  # noqa: F401  (browser: the chromium fixture)
from web_helpers import running_server

ROWS = '#ds-rows tr.layer-row[data-index="{}"]'
CLICKS = [
    "Conv2D",
    "ReLU",
    "MaxPool2D",
    "Conv2D",
    "ReLU",
    "MaxPool2D",
    "Flatten",
    "Dense",
    "ReLU",
    "Dense",
    "Softmax",
]


@pytest.fixture(scope="module")
def server(digits28_root, tmp_path_factory):
    """`convscope serve` with the 28x28 digits (as `mnist`) to train on; killed afterwards."""
    folder = tmp_path_factory.mktemp("serve-designer")
    arguments = ["--data-dir", str(digits28_root), "--models-dir", str(folder / "models")]
    with running_server(arguments, folder) as url:
        yield SimpleNamespace(url=url, models_dir=folder / "models")


def open_designer(browser, url):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "#designer")
    page.wait_for_selector("body[data-ready=true]")
    return context, page, errors


def kernel_picture(page, epoch: int) -> str:
    """The kernel grid after moving the slider to `epoch`, read in the same task (no event in between)."""
    shown, picture = page.eval_on_selector(
        "#ev-slider",
        """(slider, epoch) => {
            slider.value = epoch;
            slider.dispatchEvent(new Event('input'));
            const canvas = document.getElementById('ev-kernels');
            return [canvas.dataset.epoch, canvas.toDataURL()];
        }""",
        epoch,
    )
    assert shown == str(epoch)
    return picture


def shape_of(page, index: int) -> str:
    return page.inner_text(ROWS.format(index) + " td.shape")


def test_design_train_watch_stop_resume_save_predict_and_compare(browser, server, tmp_path):  # noqa: F811
    context, page, errors = open_designer(browser, server.url)
    page.select_option("#ds-dataset", "mnist")
    page.wait_for_function("() => document.getElementById('ds-input').innerText.includes('28×28×1')")
    page.select_option("#ds-preset", "empty")
    page.click("#ds-load-preset")
    page.wait_for_function("() => document.querySelectorAll('#ds-rows tr.layer-row').length === 0")
    for index, kind in enumerate(CLICKS):
        page.click(f"#ds-add button[data-add={kind}]")
        if index == 3:
            page.fill(ROWS.format(3) + " input.field-filters", "32")
        if index == 9:
            page.fill(ROWS.format(9) + " input.field-units", "10")
    page.wait_for_function(
        "() => document.getElementById('ds-totals').innerText.startsWith('11 layers, 206,922 parameters')"
    )
    assert [shape_of(page, i) for i in (0, 2, 3, 5, 6)] == [
        "28×28×16",
        "14×14×16",
        "14×14×32",
        "7×7×32",
        "1568",
    ]
    assert "floor((28 + 2·0 − 2) / 2) + 1 = 14" in page.inner_text(ROWS.format(2) + " td.rule")
    assert page.is_enabled("#lt-start")

    page.fill(ROWS.format(0) + " input.field-stride", "2")  # 'same' with stride 2: impossible
    page.wait_for_selector(ROWS.format(0) + ".bad")
    assert "Conv2D: padding='same' needs stride 1, got stride=2" in page.inner_text(
        ROWS.format(0) + " .row-error"
    )
    assert page.is_disabled("#lt-start") and shape_of(page, 6) == "?"
    page.screenshot(path=str(tmp_path / "designer-error.png"), full_page=True)
    page.fill(ROWS.format(0) + " input.field-stride", "1")
    page.wait_for_selector("#lt-start:not([disabled])")
    assert page.locator("#ds-rows tr.bad").count() == 0

    page.fill("#ds-name", "clicked-cnn")
    page.fill("#lt-epochs", "100")  # all 1,000 images: long enough to be stopped however slow the machine
    page.click("#lt-start")
    page.wait_for_function("() => Number(document.getElementById('ev-slider').max) >= 2", timeout=60_000)
    epoch_1, epoch_2 = kernel_picture(page, 1), kernel_picture(page, 2)
    assert epoch_1 != epoch_2  # the kernel grid changed between epochs 1 and 2
    page.screenshot(path=str(tmp_path / "kernels-epoch-2.png"), full_page=True)
    kernel_picture(page, 1)
    page.screenshot(path=str(tmp_path / "kernels-epoch-1.png"), full_page=True)
    context.close()  # the tab closes; the job goes on

    context, page, errors = open_designer(browser, server.url)
    page.wait_for_selector("#lt-status:text-matches('training clicked-cnn')")
    assert page.is_enabled("#lt-stop")
    page.wait_for_function(  # the running job's network came back into the table
        """() => document.getElementById('ds-name').value === 'clicked-cnn' &&
            document.querySelector('#ds-rows tr.layer-row[data-index="5"] td.shape').innerText === '7×7×32'"""
    )
    points = int(page.get_attribute("#lt-chart", "data-points"))
    page.wait_for_function(f"() => Number(document.getElementById('lt-chart').dataset.points) > {points}")
    page.click("#lt-stop")
    page.wait_for_selector("#lt-status:text-matches('resume goes on from there')", timeout=30_000)
    done = int(page.get_attribute("#ev-slider", "max"))
    page.fill("#lt-epochs", str(done + 1))
    page.click("#lt-resume")
    page.wait_for_selector("#lt-status:text-matches('training finished')", timeout=30_000)
    assert int(page.get_attribute("#ev-slider", "max")) == done + 1

    page.fill("#lt-save-name", "clicked-cnn")
    page.click("#lt-save")
    page.wait_for_selector("#view-network:not([hidden])")
    page.wait_for_function("() => document.getElementById('model-select').value === 'clicked-cnn'")
    page.wait_for_function("() => document.querySelectorAll('.layer-card').length === 11")
    draw(page, SEVEN)
    page.wait_for_selector(".predicted-class")
    assert (server.models_dir / "clicked-cnn.convscope").is_file()

    page.click("nav button[data-view=designer]")
    page.fill("#lt-epochs", "2")
    page.fill("#lt-max-images", "300")
    page.fill("#lt-lr", "0.01")
    page.check("#lt-flip")
    page.select_option("#lt-cutout", "8")
    page.click("#lt-start")
    page.wait_for_selector("#cmp-rows tr[data-run='2'] td:text-is('finished')", timeout=30_000)
    page.check("#cmp-rows input[data-run='1']")
    page.check("#cmp-rows input[data-run='2']")
    page.wait_for_selector("#cmp-chart[data-series='2']")
    assert "0.01" in page.inner_text("#cmp-rows tr[data-run='2']")
    assert "flip + cutout 8" in page.inner_text("#cmp-rows tr[data-run='2']")
    page.locator("#cmp-table").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    context.close()
    assert errors == [], errors
