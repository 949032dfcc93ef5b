"""The web page in a real headless browser: Playwright for Python driving Debian's chromium."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("DEFECTSCOPE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(model):
    """A uvicorn server of ``model`` on a free local port: yields its URL."""
    import uvicorn

    from defectscope.deploy.server import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(model), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(tiny_run: Path):
    from defectscope.inference.classifier import load_model

    yield from _serve(load_model(tiny_run))


@pytest.fixture(scope="module")
def detector_url(tiny_detector_run: Path):
    from defectscope.inference.detector import load_detector

    yield from _serve(load_detector(tiny_detector_run))


def _playwright():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        message = f"no chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("DEFECTSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return playwright_api


def test_a_detector_page_draws_the_boxes_and_lists_them(
    detector_url: str, synthetic_root: Path
) -> None:
    playwright_api = _playwright()
    import httpx

    image = next((synthetic_root / "validation/images/scratches").glob("*.jpg"))
    answer = httpx.post(detector_url + "predict?conf=0", content=image.read_bytes()).json()
    assert answer["boxes"], "the tiny detector keeps boxes of any confidence"
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page()
        page.goto(detector_url)
        playwright_api.expect(page.locator("#meta")).to_contain_text("defect detector: 6 classes")
        chosen = httpx.get(detector_url + "metadata").json()["box_confidence"]
        assert float(page.input_value("#conf")) == chosen  # the detector's own, until changed
        page.fill("#conf", "0")
        page.set_input_files("#file", str(image))
        boxes = page.locator("#boxlist li")
        playwright_api.expect(boxes).to_have_count(len(answer["boxes"]), timeout=30_000)
        assert page.locator("#boxes").is_visible() and not page.locator("#bars").is_visible()
        width = page.evaluate("document.getElementById('boxes').width")
        assert width == 64  # the canvas holds the upload at its own size
        first = answer["boxes"][0]
        assert boxes.first.inner_text().startswith(first["label"])
        browser.close()


def test_upload_shows_the_label_probabilities_and_heatmap(
    server_url: str, synthetic_root: Path
) -> None:
    playwright_api = _playwright()
    import httpx

    image = next((synthetic_root / "validation/images/inclusion").glob("*.jpg"))
    expected = httpx.post(server_url + "predict", content=image.read_bytes()).json()["label"]
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page()
        page.goto(server_url)
        playwright_api.expect(page.locator("#meta")).to_contain_text("6 classes, 71px input")
        page.set_input_files("#file", str(image))
        playwright_api.expect(page.locator("#label")).to_have_text(expected, timeout=30_000)
        assert page.locator("#bars .bar").count() == 6
        assert page.locator("#heatmap").get_attribute("src").startswith("data:image/png;base64,")
        page.set_input_files(
            "#file", files=[{"name": "x.txt", "mimeType": "text/plain", "buffer": b"hi"}]
        )
        playwright_api.expect(page.locator("#error")).to_contain_text("415")
        browser.close()
