"""Headless Chromium drives the demo page against a live server: search, click a lower result,
"Improve now", and the clicked movie climbs for that user but not in the anonymous column.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the ``selenium``
package; skipped when any is missing. Selenium is pointed at ``/usr/bin/chromedriver`` explicitly,
so nothing is downloaded. The screenshot lands in ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]

# A small catalogue, embedded by the bundled model: (title, year, genres).
MOVIES = [
    ("Star Wars", 1977, ["Action", "Adventure", "Romance", "Sci-Fi", "War"]),
    ("Alien", 1979, ["Action", "Horror", "Sci-Fi", "Thriller"]),
    ("Apollo 13", 1995, ["Action", "Drama", "Thriller"]),
    ("Contact", 1997, ["Drama", "Sci-Fi"]),
    ("Stargate", 1994, ["Action", "Adventure", "Sci-Fi"]),
    ("Star Trek: First Contact", 1996, ["Action", "Adventure", "Sci-Fi"]),
    ("2001: A Space Odyssey", 1968, ["Drama", "Mystery", "Sci-Fi", "Thriller"]),
    ("Independence Day (ID4)", 1996, ["Action", "Sci-Fi", "War"]),
    ("Lost in Space", 1998, ["Action", "Sci-Fi", "Thriller"]),
    ("Jurassic Park", 1993, ["Action", "Adventure", "Sci-Fi"]),
    ("Men in Black", 1997, ["Action", "Adventure", "Comedy", "Sci-Fi"]),
    ("Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
    ("Fargo", 1996, ["Crime", "Drama", "Thriller"]),
    ("Sense and Sensibility", 1995, ["Drama", "Romance"]),
]


def chrome_options(*, width: int = 1360, height: int = 1000):
    """Headless Chromium options: no sandbox (root in CI), no GPU, no background traffic, a fresh profile."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return options


@pytest.fixture
def browser():
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="studio-chromium-")
    options = chrome_options()
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def demo_server(transactional_db, live_server, settings, start_worker):
    """A live server with the demo on, a demo key, a real Celery worker ("Improve now" queues a run for
    it), and the small embedded catalogue."""
    from studio.catalogue import services
    from studio.core.auth import create_api_key

    start_worker()
    _, key = create_api_key(name="demo page", scopes=["tokens"])
    settings.STUDIO_DEMO = True
    settings.STUDIO_DEMO_API_KEY = key
    services.upsert_objects(
        items=[
            services.ObjectInput(
                object_id=f"movie-{index}",
                payload={"title": title, "year": year, "genres": genres},
                text=f"{title} ({year}). Genres: {', '.join(genres)}.",
            )
            for index, (title, year, genres) in enumerate(MOVIES, start=1)
        ]
    )
    return live_server


def _ranks(driver, column: str) -> dict[str, int]:
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, f"#{column}-results li.result")
    return {item.get_attribute("data-object-id"): int(item.get_attribute("data-rank")) for item in items}


def _personalized(driver, column: str) -> set[str]:
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, f"#{column}-results li.result[data-personalized='true']")
    return {item.get_attribute("data-object-id") for item in items}


def test_click_then_improve_moves_the_movie_up_for_that_user_only(browser, demo_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)  # the first search loads the embedding model
    browser.get(demo_server.url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "user-id")).select_by_value("carol")  # the page holds a token per demo user
    query = browser.find_element(By.ID, "query")
    query.clear()
    query.send_keys("space adventure")
    browser.find_element(By.ID, "search-button").click()
    wait.until(lambda d: len(_ranks(d, "user")) == 10 and len(_ranks(d, "anonymous")) == 10)
    first_session = browser.find_element(By.TAG_NAME, "body").get_attribute("data-session-id")
    before_user, before_anonymous = _ranks(browser, "user"), _ranks(browser, "anonymous")
    assert before_user == before_anonymous  # no copies yet: the user sees the anonymous ranking
    assert not _personalized(browser, "user")

    # DESIGN §7's one click: result 7 …
    target = next(object_id for object_id, rank in before_user.items() if rank == 7)
    above = [object_id for object_id, rank in before_user.items() if rank < 7]
    item = browser.find_element(By.CSS_SELECTOR, f"#user-results li.result[data-object-id='{target}']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", item)
    item.click()
    wait.until(lambda d: "clicked" in (item.get_attribute("class") or ""))
    assert "recorded" in browser.find_element(By.ID, "status").text

    browser.find_element(By.ID, "improve-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "run")))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-session-id") != first_session)
    wait.until(lambda d: len(_ranks(d, "user")) == 10)
    run_text = browser.find_element(By.ID, "run").text
    assert "1 session(s) learned from" in run_text, run_text

    after_user, after_anonymous = _ranks(browser, "user"), _ranks(browser, "anonymous")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-demo.png"))
    assert after_user[target] <= 3, (before_user, after_user)  # … is in the top 3 after one run …
    assert sum(1 for object_id in above if object_id in after_user) >= 5  # … and the page above it stays
    assert target in _personalized(browser, "user")
    assert after_anonymous == before_anonymous
    assert not _personalized(browser, "anonymous")
    moved = browser.find_element(By.CSS_SELECTOR, f"#user-results li.result[data-object-id='{target}'] .move.up")
    assert f"was {before_user[target]}" in moved.text
