"""The page at `/`, in a real headless Chromium: upload a real photo, read the label it renders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="the page tests need selenium")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from qvl_label import tinymodel  # noqa: E402
from qvl_label.serve.service import ServeLimits  # noqa: E402
from qvl_label.settings import LabelSettings  # noqa: E402

from .browser import headless_chromium, needs_browser  # noqa: E402
from .conftest import AWKWARD, PRODUCTS  # noqa: E402
from .test_serve import KEY, LiveServer, _service  # noqa: E402

pytestmark = needs_browser


@pytest.fixture(scope="module")
def page_server(tiny_model: tinymodel.GeneratedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("page")
    (tmp / "allowed").mkdir()
    # zh,en with the default budget: the tiny model's answers run to the schema's limits and parse.
    server = LiveServer(
        _service(tiny_model, tmp, LabelSettings(languages=("zh", "en")), ServeLimits(), n_parallel=2), [KEY]
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with headless_chromium("1280,1400") as driver:
        yield driver


def _wait_for_status(browser: webdriver.Chrome, count: int) -> list[str]:
    def statuses(driver: webdriver.Chrome) -> list[str] | bool:
        found = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".card .status")]
        return found if len(found) == count and all(s for s in found) else False

    return WebDriverWait(browser, 60).until(statuses)  # type: ignore[no-any-return]


def test_upload_a_photo_and_read_its_label(browser: webdriver.Chrome, page_server: LiveServer, tmp_path: Path) -> None:
    browser.get(page_server.url("/"))
    browser.find_element(By.ID, "apikey").send_keys(KEY)
    browser.execute_script("document.getElementById('apikey').dispatchEvent(new Event('change'))")
    browser.refresh()  # the key is kept in localStorage; the model line loads with it
    WebDriverWait(browser, 20).until(lambda d: "parallel" in d.find_element(By.ID, "model").text)
    assert browser.find_element(By.ID, "lang").get_attribute("value") == "zh,en"
    assert "taobao" in [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#channel option")]

    photo = PRODUCTS / "Arla-Standard-Milk_Iconic.jpg"
    browser.find_element(By.ID, "files").send_keys(str(photo))
    (status,) = _wait_for_status(browser, 1)
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert card.find_element(By.CSS_SELECTOR, ".name").text == photo.name
    # What the API answered for the same bytes is what the page shows.
    record = json.loads(
        browser.execute_script(
            "const f = new FormData(); f.append('image', await (await fetch(arguments[0])).blob(), 'x.jpg');"
            "const r = await fetch('/v1/label', {method: 'POST', body: f, headers: {'X-Api-Key': arguments[1]}});"
            "return JSON.stringify((await r.json()).records[0]);",
            card.find_element(By.CSS_SELECTOR, ".thumb").get_attribute("src"),
            KEY,
        )
    )
    assert status == record["status"]
    if record["status"] == "ok":
        label = record["label"]
        assert card.find_element(By.CSS_SELECTOR, ".category").text.startswith(" › ".join(label["category"]["path"]))
        copies = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".lang .title")]
        assert copies == [label["copy"][lang]["title"] for lang in label["copy"]]
        assert "decode" in card.find_element(By.CSS_SELECTOR, ".timings").text
    else:
        assert card.find_element(By.CSS_SELECTOR, ".error").text
    assert card.find_element(By.CSS_SELECTOR, ".copy").is_enabled()
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_a_bad_file_shows_its_status_and_compliance_flags_are_marked(
    browser: webdriver.Chrome, page_server: LiveServer
) -> None:
    browser.get(page_server.url("/"))
    browser.find_element(By.ID, "files").send_keys(str(AWKWARD / "truncated.png"))
    (status,) = _wait_for_status(browser, 1)
    assert status != "ok" and browser.find_element(By.CSS_SELECTOR, ".card .error").text
    # The page's renderer on a record with a flag (the model's wording is gibberish, so the flag is given).
    flagged = browser.execute_script(
        "const text = 'The best kettle';"
        "const span = flagged(text, 'copy.en.title', [{field: 'copy.en.title', span: [4, 8], text: 'best',"
        " rule: 'superlative', kind: 'claim', suggestion: 'drop it'}]);"
        "return [span.querySelector('mark.flag').textContent, span.textContent];"
    )
    assert flagged == ["best", "The best kettle"]


def test_model_text_is_never_html(browser: webdriver.Chrome, page_server: LiveServer) -> None:
    browser.get(page_server.url("/"))
    html = browser.execute_script("const s = flagged('<img src=x onerror=alert(1)>', 'f', []); return s.innerHTML;")
    assert html.startswith("&lt;img")
