"""The web page of `siglip serve` in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
selenium): open `/`, search by text, see the thumbnails, search by an uploaded image, see a bad upload's error,
run a zero-shot query, and save screenshots.

The server is real (uvicorn on 127.0.0.1) with the demo model and a collection of `examples/images/`, so the
answers can be checked: the top hit of "a red square" is red_square.png, an uploaded image finds itself first,
and the bar chart shows `siglip.pipeline`'s scores. Without Chromium the test is skipped, except under CI
(`CI=true`), where `make browser` must have installed it and its absence is a failure.

`SIGLIP_SCREENSHOT_DIR=docs` (what `examples/screenshot_serve.py` sets) writes the screenshots
docs/serving.md shows there too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import ThreadServer

from siglip import pipeline
from siglip.bulk import embed_source

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "siglip-demo-shapes"
EXAMPLES = ROOT / "examples" / "images"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WINDOW = (1280, 860)
WAIT_S = 60  # an upper bound for each step on a loaded 2-core machine, not a timing assertion

LABELS = ["red square", "blue circle", "green star", "red circle", "orange square", "yellow heart"]
TEMPLATE = "a {}"  # the demo model's prompts: its config.json's hypothesis_template, the page's default


def _require_browser() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "headless Chromium not found: `make browser` installs Debian's chromium and chromium-driver"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (CI must run this test)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_browser()
    pytest.importorskip("selenium")
    source = tmp_path_factory.mktemp("shapes")
    for image in sorted(EXAMPLES.glob("*.png")):
        shutil.copy(image, source / image.name)
    collection = tmp_path_factory.mktemp("collections") / "shapes"
    assert embed_source(source, collection, model=str(DEMO_MODEL)).ok == 10
    from siglip.serve import create_app

    app = create_app(str(DEMO_MODEL), [collection], device="cpu", model_name="siglip-demo-shapes")
    with ThreadServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page never showed {what}") from None


def _tiles(driver) -> list[dict]:
    """The result grid as the user sees it: file name, score text, and whether the thumbnail image decoded."""
    return driver.execute_script(
        """return Array.from(document.querySelectorAll('#results .tile:not(.skeleton)')).map((tile) => {
             const img = tile.querySelector('img');
             return {name: tile.querySelector('.tile-name').textContent,
                     score: tile.querySelector('.score').textContent,
                     loaded: !!img && img.complete && img.naturalWidth > 0};
           });"""
    )


def _grid_ready(driver, expected_first: str):
    tiles = _tiles(driver)
    return tiles if tiles and tiles[0]["name"] == expected_first and all(t["loaded"] for t in tiles) else False


def _screenshot(driver, tmp_path: Path, name: str) -> None:
    driver.execute_script("document.activeElement && document.activeElement.blur()")  # no text caret in the shot
    assert driver.save_screenshot(str(tmp_path / name))
    assert (tmp_path / name).stat().st_size > 10_000
    target = os.environ.get("SIGLIP_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(target) / name)


def test_search_upload_and_zero_shot_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    assert browser.title.startswith("siglip")
    _wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "ready", "ready")
    assert "10 items" in browser.find_element(By.ID, "model-name").text

    # text -> images: every thumbnail of the collection decodes, the best one first
    browser.find_element(By.ID, "query").send_keys("a red square", Keys.ENTER)
    tiles = _wait(browser, lambda d: _grid_ready(d, "red_square.png"), "the thumbnails of a text search")
    assert len(tiles) == 10
    scores = [float(tile["score"]) for tile in tiles]
    assert scores == sorted(scores, reverse=True)
    assert "10 results for" in browser.find_element(By.ID, "search-meta").text
    _screenshot(browser, tmp_path, "serve_screenshot.png")

    # image -> images through the file input: the uploaded picture finds itself, cosine 1
    browser.find_element(By.ID, "search-file").send_keys(str(EXAMPLES / "blue_circle.png"))
    tiles = _wait(browser, lambda d: _grid_ready(d, "blue_circle.png"), "the results of an image search")
    assert float(tiles[0]["score"]) == pytest.approx(1.0, abs=2e-3)
    assert "similar to blue_circle.png" in browser.find_element(By.ID, "search-meta").text

    # a corrupt upload: the server's 400 is shown with its machine-readable type, the page keeps working
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    browser.find_element(By.ID, "search-file").send_keys(str(corrupt))
    error = _wait(browser, lambda d: d.find_element(By.ID, "search-error").text, "the error of a corrupt upload")
    assert error.startswith("invalid_image")

    # zero-shot: an image and labels -> the bar chart holds siglip.pipeline's scores, best first
    browser.find_element(By.ID, "tab-classify").click()
    browser.find_element(By.ID, "zs-file").send_keys(str(EXAMPLES / "red_square.png"))
    _wait(browser, lambda d: d.find_element(By.ID, "zs-preview").is_displayed(), "the image preview")
    labels = browser.find_element(By.ID, "labels")
    labels.clear()
    labels.send_keys("\n".join(LABELS))
    # no template typed: the page says the server's default is the model's own ("a {}"), as the pipeline's
    template = browser.find_element(By.ID, "template")
    assert template.get_attribute("value") == "" and template.get_attribute("placeholder") == TEMPLATE
    assert TEMPLATE in browser.find_element(By.ID, "template-default").text
    browser.find_element(By.ID, "classify-button").click()
    bars = _wait(
        browser,
        lambda d: [
            (b.find_element(By.CLASS_NAME, "bar-label").text, b) for b in d.find_elements(By.CSS_SELECTOR, "#bars .bar")
        ],
        "the zero-shot bar chart",
    )
    expected = pipeline("zero-shot-image-classification", model=str(DEMO_MODEL))(
        str(EXAMPLES / "red_square.png"), candidate_labels=LABELS
    )
    assert [label for label, _ in bars] == [row["label"] for row in expected]
    assert browser.find_element(By.ID, "template-used").text == f"prompts: {TEMPLATE}"
    assert expected[0]["label"] == "red square"
    top_width = browser.execute_script("return document.querySelector('#bars .bar.top .bar-fill').style.width")
    assert float(top_width.rstrip("%")) == pytest.approx(100 * expected[0]["score"], abs=1e-3)
    settled = """const fill = document.querySelector('#bars .bar.top .bar-fill');
                 const target = fill.parentElement.getBoundingClientRect().width * parseFloat(fill.style.width) / 100;
                 return Math.abs(fill.getBoundingClientRect().width - target) < 1;"""
    _wait(browser, lambda d: d.execute_script(settled), "the bars settle")  # the shot shows the final chart
    _screenshot(browser, tmp_path, "serve_zero_shot.png")
