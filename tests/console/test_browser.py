"""The console in a real browser: headless Chromium (Debian's) driven by Selenium through chromedriver.

One walk through the page: a start refused with the error under its field, a run started from the
page whose curves grow while it trains and whose loss falls, the runs table sorted and filtered, and
two runs compared. The console runs as ``tunelab ui --runs runs --examples examples`` in a project
dir, so the screenshots of the runs table, the curves and the validation error (in docs/img/ for the
README) show what a user's console shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from live_server import live_server
from tunelab.console.app import create_app

pytestmark = pytest.mark.browser
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def _state(driver: webdriver.Chrome) -> tuple[int, str]:
    """Records the curves show and the run's status, read in one script (the page re-renders as it goes)."""
    records, status = driver.execute_script(
        "const c = document.getElementById('curves'), s = document.getElementById('run-status');"
        "return [c ? Number(c.dataset.records) : 0, s ? s.textContent : ''];"
    )
    return int(records), str(status)


def test_console_in_chromium(
    browser: webdriver.Chrome,
    runs_root: Path,
    examples_dir: Path,
    tmp_path: Path,
) -> None:
    wait = WebDriverWait(browser, 45)
    app = create_app(runs_root.relative_to(tmp_path), examples_dir.relative_to(tmp_path))  # from the cwd
    with live_server(app) as url:
        browser.get(f"{url}/#/new")
        wait.until(ec.text_to_be_present_in_element((By.ID, "example-text"), "tiny"))  # toy.yaml loaded
        browser.find_element(By.ID, "in-name").send_keys("toy-live")
        browser.find_element(By.ID, "in-train.lr").send_keys("fast")
        browser.find_element(By.ID, "start").click()
        lr_error = (By.CSS_SELECTOR, '[data-field="train.lr"] .error')
        wait.until(ec.text_to_be_present_in_element(lr_error, "valid number"))
        assert "invalid" in browser.find_element(By.ID, "in-train.lr").get_attribute("class")
        assert browser.find_element(By.CSS_SELECTOR, '[data-field="name"] .error').text == ""
        browser.save_screenshot(str(IMG / "console-validation-error.png"))

        lr = browser.find_element(By.ID, "in-train.lr")
        lr.clear()
        lr.send_keys("0.002")
        browser.find_element(By.ID, "start").click()
        wait.until(ec.url_contains("#/run/toy-live"))
        # Curves move while it trains: the chart holds more records at each look, before the run ends.
        seen = []
        deadline = time.monotonic() + 90  # a bound: startup is slow on a loaded machine
        while (state := _state(browser))[1] != "finished" and time.monotonic() < deadline:
            seen.append(state)
            time.sleep(0.3)
        growing = sorted({n for n, status in seen if n and status in ("running", "stopped")})
        assert len(growing) >= 3, seen
        assert _state(browser) == (120 + 10, "finished")  # 12 steps x 10 epochs logged, an eval every 12
        history = [json.loads(line) for line in (runs_root / "toy-live" / "metrics.jsonl").open()]
        losses = [r["train/loss"] for r in history if "train/loss" in r]
        assert sum(losses[-3:]) / 3 < 0.3 * sum(losses[:3]) / 3, losses  # it learns: ~0.05 from ~0.69
        titles = [
            c.get_attribute("data-title") for c in browser.find_elements(By.CSS_SELECTOR, "#curves .chart")
        ]
        assert titles == ["loss", "learning rate", "throughput (samples/s)", "eval metrics"]
        browser.save_screenshot(str(IMG / "console-run-curves.png"))

        browser.get(f"{url}/#/?sort=dev/accuracy")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#runs tr[data-run="toy-live"]')))
        order = [
            r.get_attribute("data-run") for r in browser.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")
        ]
        assert order[:4] == ["toy-live", "sent-lora", "sent-moe", "sent-full"]  # toy-live: dev 1.0
        browser.save_screenshot(str(IMG / "console-runs.png"))
        Select(browser.find_element(By.ID, "f-method")).select_by_value("moe")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")) == 1)

        browser.get(f"{url}/#/")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#runs tr[data-run="toy-live"]')))
        for name in ("sent-full", "sent-lora"):
            browser.find_element(By.CSS_SELECTOR, f'tr[data-run="{name}"] input.pick').click()
        browser.find_element(By.ID, "compare").click()
        wait.until(ec.presence_of_element_located((By.ID, "config-diff")))
        assert "train.lr" in browser.find_element(By.ID, "config-diff").text
        browser.get(f"{url}/#/run/sent-moe")
        wait.until(ec.presence_of_element_located((By.ID, "expert-load")))
