"""`labeler review` in a real headless Chromium (Debian's chromium and chromedriver, which `make test`
installs): the list, its filters, a pair page, keyboard labels that outlive a reload and a restart, HTML in
a pair's text shown as text, and the token every request needs."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from review_server import ReviewServer
from sample_runs import SCRIPT_TEXT, make_review_run, review_pair
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from labeler.store.human import labels_file, read_human_labels

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAIRS = 30


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_review_run(tmp_path_factory.mktemp("review"), PAIRS)


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[ReviewServer]:
    review = ReviewServer(run, "--annotator", "ana").start()
    yield review
    review.stop()


@pytest.fixture(scope="module")
def browser(server: ReviewServer) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-extensions"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    driver.get(server.url)  # the token becomes the cookie
    yield driver
    driver.quit()


def _open(browser: WebDriver, server: ReviewServer, path: str) -> None:
    browser.get(server.base.rstrip("/") + path)


def _pair_texts(browser: WebDriver) -> list[str]:
    return [row.get_attribute("data-id") or "" for row in browser.find_elements(By.CSS_SELECTOR, "tr.pair-row")]


def test_a_request_without_the_token_is_refused(server: ReviewServer) -> None:
    for path in ("", "pair/x", "static/review.css", "sft"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.base + path, timeout=10)
        assert refused.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(server.base + "?token=not-it", timeout=10)
    assert wrong.value.code == 403
    # With the token's cookie but no CSRF token, or from another origin, a label is refused too.
    cookie = {"Cookie": f"labeler_review_token={server.token}"}
    pair_id = review_pair(0).id
    for headers, body in (({}, b"choice=A"), ({"Origin": "http://evil.example"}, b"choice=A&csrf=x")):
        request = urllib.request.Request(f"{server.base}pair/{pair_id}/label", data=body,
                                         headers={**cookie, **headers}, method="POST")  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as forged:
            urllib.request.urlopen(request, timeout=10)
        assert forged.value.code == 403
    assert not labels_file(server.run, "ana").exists()


def test_the_list_loads_and_a_filter_narrows_it(browser: WebDriver, server: ReviewServer) -> None:
    _open(browser, server, "/")
    assert "of 30 pairs" in browser.find_element(By.ID, "count").text
    assert len(_pair_texts(browser)) == PAIRS
    flagged = {review_pair(i).id for i in range(PAIRS) if "low_mass" in review_pair(i).flags}
    browser.find_element(By.CSS_SELECTOR, "select[name=flag] option[value=low_mass]").click()
    browser.find_element(By.ID, "apply").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("flag=low_mass"))
    assert set(_pair_texts(browser)) == flagged and 0 < len(flagged) < PAIRS
    assert f"{len(flagged)} of 30 pairs" in browser.find_element(By.ID, "count").text
    # p_a range and text search narrow it as well; sorting orders it.
    _open(browser, server, "/?p_min=0.4&p_max=0.6&sort=uncertain")
    middle = [review_pair(i) for i in range(PAIRS) if 0.4 <= review_pair(i).p_a <= 0.6]
    shown = _pair_texts(browser)
    assert set(shown) == {pair.id for pair in middle}
    gaps = [abs(next(p for p in middle if p.id == pair_id).p_a - 0.5) for pair_id in shown]
    assert gaps == sorted(gaps)
    _open(browser, server, "/?q=answer+13")
    assert _pair_texts(browser) == [review_pair(13).id]


def test_a_pair_page_shows_both_responses_and_the_scores(browser: WebDriver, server: ReviewServer) -> None:
    pair = review_pair(4)  # a multi-turn conversation
    _open(browser, server, f"/pair/{pair.id}")
    assert browser.find_element(By.ID, "response-a").text.endswith(pair.response_a)
    assert browser.find_element(By.ID, "response-b").text.endswith(pair.response_b)
    assert pair.prompt[0].content in browser.find_element(By.ID, "conversation").text
    assert browser.find_element(By.ID, "p-a").text == f"{pair.p_a:.3f}"
    assert browser.find_element(By.ID, "p-a-ab").text == f"{pair.p_a_ab:.3f}"
    assert browser.find_element(By.ID, "p-a-ba").text == f"{pair.p_a_ba:.3f}"
    chart = browser.find_element(By.ID, "scores")
    bars = chart.find_elements(By.CSS_SELECTOR, "rect.score")
    assert len(bars) == 2 and "for-a" in bars[0].get_attribute("class") and "for-b" in bars[1].get_attribute("class")
    assert float(bars[0].get_attribute("width")) == pytest.approx(150.0)  # the largest score spans the scale
    assert "+1.00" in chart.text and "-0.40" in chart.text


def test_html_in_a_pair_shows_as_text(browser: WebDriver, server: ReviewServer) -> None:
    pair = review_pair(7)
    _open(browser, server, f"/pair/{pair.id}")
    assert SCRIPT_TEXT in browser.find_element(By.ID, "conversation").text
    assert browser.execute_script("return window.__injected === undefined")
    assert (
        browser.execute_script("return document.querySelectorAll('#conversation b, #conversation script').length") == 0
    )


def test_keyboard_labels_persist_across_a_reload_and_a_restart(browser: WebDriver, server: ReviewServer) -> None:
    ids = [review_pair(i).id for i in (20, 21, 22)]
    _open(browser, server, f"/pair/{ids[0]}")
    for key, pair_id, following in zip("abt", ids, [*ids[1:], review_pair(23).id], strict=True):
        assert browser.find_element(By.CSS_SELECTOR, "code.id").text == pair_id
        if key == "b":  # a note typed after n, the key then saves it
            browser.find_element(By.TAG_NAME, "body").send_keys("n")
            browser.switch_to.active_element.send_keys("too long\n")
        browser.find_element(By.TAG_NAME, "body").send_keys(key)
        WebDriverWait(browser, 10).until(expected_conditions.url_contains(f"/pair/{following}"))
    expected = {ids[0]: "A", ids[1]: "B", ids[2]: "tie"}
    saved = read_human_labels(server.run)
    assert {pair: label.choice for (who, pair), label in saved.items() if who == "ana"} == expected
    assert saved[("ana", ids[1])].note == "too long"
    lines = labels_file(server.run, "ana").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["sha256"] for line in lines)

    def shown() -> dict[str, str]:
        found = {}
        for pair_id in ids:
            _open(browser, server, f"/pair/{pair_id}")
            found[pair_id] = browser.find_element(By.ID, "mine").text
        return found

    for text, choice in zip(shown().values(), expected.values(), strict=True):  # a reload
        assert text.startswith(f"you chose {choice}")
    server.restart()  # a new process with a new token: the old cookie no longer opens the pages
    _open(browser, server, "/")
    assert "403" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(server.url)
    for text, choice in zip(shown().values(), expected.values(), strict=True):
        assert text.startswith(f"you chose {choice}")
    _open(browser, server, "/?human=mine")
    assert set(_pair_texts(browser)) == set(ids)
    assert len(labels_file(server.run, "ana").read_text().splitlines()) == 3  # reloads added nothing


def test_an_sft_row_page_shows_each_round(browser: WebDriver, server: ReviewServer) -> None:
    _open(browser, server, "/sft")
    browser.find_element(By.LINK_TEXT, "Task 2").click()
    rounds = browser.find_elements(By.CSS_SELECTOR, "section.round[id^=round-]")
    assert len(rounds) == 1 and "Round 1: kind" in rounds[0].text
    assert rounds[0].find_element(By.CSS_SELECTOR, ".critique").text == "c"
    assert rounds[0].find_element(By.CSS_SELECTOR, ".revision").text == "better"
