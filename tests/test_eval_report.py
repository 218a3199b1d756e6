"""`eval --html`: the report opened in a real headless Chromium: figures, matrix, thumbnails, and escaped text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qvl_label.cli import app

from .browser import headless_chromium, needs_browser
from .conftest import PRODUCTS

webdriver = pytest.importorskip("selenium.webdriver", reason="the page tests need selenium")

from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = needs_browser
runner = CliRunner()
HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with headless_chromium("1200,1600") as driver:
        yield driver


def test_the_html_report_renders_offline_with_thumbnails_and_escaped_text(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    shirt, milk = PRODUCTS / "ms04-red_main.jpg", PRODUCTS / "Arla-Standard-Milk_Iconic.jpg"
    records = [
        {"path": str(shirt), "status": "ok", "label": {"category": {"id": 212, "path": ["Apparel & Accessories",
         "Clothing", "Shirts & Tops"]}, "attributes": {"colors": [{"raw": "red", "value": "red"}]}, "brand": HOSTILE}},
        {"path": str(milk), "status": "ok", "label": {"category": {"id": 212, "path": ["Apparel & Accessories",
         "Clothing", "Shirts & Tops"]}, "attributes": {"colors": []}, "brand": "Arla"}},
        {"path": str(tmp_path / "gone.jpg"), "status": "ok", "label": {"category": {"id": 5181}}},  # luggage
        {"path": "broken.jpg", "status": "corrupt", "error": "bad"},
    ]  # fmt: skip
    out, gold, html = tmp_path / "out.jsonl", tmp_path / "gold.csv", tmp_path / "report.html"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    gold.write_text(
        "path,category,colors,brand\n"
        f"{shirt},Apparel & Accessories > Clothing > Shirts & Tops,Red,Arla\n"
        f'{milk},"Food, Beverages & Tobacco > Beverages > Milk",,Arla\n'
        f'{tmp_path / "gone.jpg"},"Food, Beverages & Tobacco > Beverages > Milk",,\n'
    )
    result = runner.invoke(app, ["eval", str(out), "--gold", str(gold), "--html", str(html)])
    assert result.exit_code == 0, result.output
    page = html.read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched

    browser.get(html.as_uri())
    assert browser.title.startswith("qvl-label eval")  # the hostile brand did not run
    summary = browser.find_element(By.ID, "summary").text
    assert "4 records, 3 with gold" in summary and "corrupt 25.0%" in summary
    bars = [row.text for row in browser.find_elements(By.CSS_SELECTOR, ".bars tr")]
    assert any(row.startswith("category exact") and "33.3%" in row for row in bars), bars  # the shirt
    matrix = browser.find_elements(By.CSS_SELECTOR, ".matrix tr")
    assert len(matrix) == 3  # header + the two gold top levels
    food_row = next(r.text for r in matrix if r.text.startswith("Food"))
    assert food_row.endswith("Tobacco 1 1"), food_row  # milk labelled as apparel, gone.jpg as luggage
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('.example img')].map(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded == [True, True]  # the shirt and the milk; the missing file shows a placeholder
    assert len(browser.find_elements(By.CSS_SELECTOR, ".noimage")) == 1
    assert HOSTILE in browser.find_element(By.TAG_NAME, "body").text  # shown as text
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_compare_page_renders_the_winner_and_the_differences(browser: webdriver.Chrome, tmp_path: Path) -> None:
    shirt = PRODUCTS / "ms04-red_main.jpg"
    a = [{"path": str(shirt), "status": "ok", "label": {"category": {"id": 212}, "brand": HOSTILE}}]
    b = [{"path": str(shirt), "status": "ok", "label": {"category": {"id": 418}, "brand": ""}}]
    for name, records in (("a", a), ("b", b)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "gold.csv").write_text(f"path,category_id\n{shirt},212\n")
    html = tmp_path / "compare.html"
    args = ["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--gold", str(tmp_path / "gold.csv")]
    result = runner.invoke(app, [*args, "--html", str(html)])
    assert result.exit_code == 0, result.output
    browser.get(html.as_uri())
    assert browser.title.startswith("qvl-label compare")
    assert "1 photos ok in both runs" in browser.find_element(By.ID, "summary").text
    gold_rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.matrix tr")]
    assert any(r.startswith("category 100.0% 0.0% 1 0") and "neither" in r for r in gold_rows), gold_rows
    widths = browser.execute_script("return [...document.querySelectorAll('img')].map(i => i.naturalWidth)")
    assert len(widths) == 1 and widths[0] > 0  # the thumbnail; the brand's <img> never became an element
