"""The upload page in a real headless browser: Debian's chromium and chromium-driver driven by
Selenium, against a real ``callpipe-asr serve`` process with the bundled model.

One run with JavaScript (upload progress, then the script follows the 303; copy button) and
one without (a plain form post, then the page's meta refresh until the transcript is there).
Screenshots of the form and the finished pages are saved under the test's tmp dir.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from asr_testkit import Prompt, word_error_rate
from server_testkit import Server

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TEST_BUDGET_S = 60.0
WAIT_S = 40.0
WER_LIMIT = 0.3
TRANSCRIPT_PATH = re.compile(r"/transcripts/([A-Za-z0-9_-]{16,})")
FORMATS = ("txt", "json", "srt", "vtt")

BrowserFactory = Callable[..., WebDriver]


@pytest.fixture
def upload_page_browser(tmp_path: Path) -> Iterator[BrowserFactory]:
    """``upload_page_browser(javascript=True)``: headless Chromium with a fresh profile, quit at
    teardown."""
    drivers: list[WebDriver] = []

    def start(javascript: bool = True) -> WebDriver:
        options = Options()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless",
            "--no-sandbox",  # tests run as root
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1100,900",
            f"--user-data-dir={tmp_path / f'chromium-profile-{len(drivers)}'}",
        ):
            options.add_argument(argument)
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        service = Service(CHROMEDRIVER, log_output=str(tmp_path / f"chromedriver-{len(drivers)}.log"))
        driver = webdriver.Chrome(service=service, options=options)
        drivers.append(driver)
        driver.set_page_load_timeout(30)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def wait_for_transcript(driver: WebDriver) -> str:
    """Until the browser shows /transcripts/<id> with the finished transcript; return the id."""

    def finished(d: WebDriver) -> str | None:
        match = TRANSCRIPT_PATH.fullmatch(urlparse(d.current_url).path)
        if not match:
            return None
        status = d.find_element(By.ID, "status").get_attribute("data-status")
        assert status in ("queued", "running", "done"), d.page_source
        if status == "done" and d.find_element(By.ID, "transcript").text.strip():
            return match.group(1)
        return None

    waiter = WebDriverWait(driver, WAIT_S, poll_frequency=0.2,
                           ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    job_id: str = waiter.until(finished, message=f"no finished transcript within {WAIT_S:.0f} s")
    return job_id


def choose_and_submit(driver: WebDriver, server: Server, recording: Path) -> None:
    driver.get(server.url + "/")
    assert driver.title.startswith("Transcribe a recording")
    driver.find_element(By.ID, "file").send_keys(str(recording))
    driver.find_element(By.ID, "submit").click()


def check_downloads(driver: WebDriver, server: Server, job_id: str) -> None:
    hrefs = {link.get_attribute("href") for link in driver.find_elements(By.CSS_SELECTOR, ".actions a[download]")}
    assert hrefs == {f"{server.url}/transcripts/{job_id}.{ext}" for ext in FORMATS}
    for href in sorted(hrefs):
        with urllib.request.urlopen(href, timeout=10) as response:
            assert response.status == 200, href
            assert response.read(), href


def test_upload_with_javascript(
    upload_page_server: Server, upload_page_browser: BrowserFactory, screenshots: Path, prompt: Prompt
) -> None:
    started = time.monotonic()
    driver = upload_page_browser(javascript=True)
    driver.get(upload_page_server.url + "/")
    form = driver.find_element(By.ID, "upload-form")
    assert form.find_element(By.ID, "file").get_attribute("type") == "file"
    assert not driver.find_element(By.ID, "progress").is_displayed()
    driver.save_screenshot(str(screenshots / "form.png"))

    choose_and_submit(driver, upload_page_server, prompt.path)
    job_id = wait_for_transcript(driver)
    text = driver.find_element(By.ID, "transcript").text
    assert word_error_rate(prompt.text, text) < WER_LIMIT, text
    assert prompt.path.name in driver.find_element(By.CSS_SELECTOR, ".file").text
    assert driver.title.startswith("Transcript")

    copy = driver.find_element(By.ID, "copy")
    assert copy.is_displayed()  # the script shows it
    copy.click()
    WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "copy").text == "Copied",
                                   message="the copy button never confirmed")
    player = driver.find_element(By.ID, "player")
    assert player.get_attribute("src") == f"{upload_page_server.url}/transcripts/{job_id}/audio"
    check_downloads(driver, upload_page_server, job_id)
    driver.save_screenshot(str(screenshots / "transcript.png"))
    assert time.monotonic() - started < TEST_BUDGET_S


def test_upload_without_javascript(
    upload_page_server: Server,
    upload_page_browser: BrowserFactory,
    screenshots: Path,
    prompts: dict[str, Prompt],
) -> None:
    started = time.monotonic()
    recording = prompts["vm-intro"]  # not the other test's: a new job, not a finished duplicate
    driver = upload_page_browser(javascript=False)
    choose_and_submit(driver, upload_page_server, recording.path)
    job_id = wait_for_transcript(driver)
    text = driver.find_element(By.ID, "transcript").text
    assert word_error_rate(recording.text, text) < WER_LIMIT, text
    assert not driver.find_element(By.ID, "copy").is_displayed()  # proof the page's scripts did not run
    check_downloads(driver, upload_page_server, job_id)
    driver.save_screenshot(str(screenshots / "transcript-nojs.png"))

    # The first view of the page was still pending; the browser reloaded it until it was done
    # (the meta refresh), which the server's access log shows.
    page_loads = re.findall(rf"GET /transcripts/{job_id} .*status=(\d+)", upload_page_server.log())
    assert len(page_loads) >= 2, upload_page_server.log()
    assert time.monotonic() - started < TEST_BUDGET_S
