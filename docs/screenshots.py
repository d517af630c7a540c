"""Take the README screenshots (docs/demo.png, docs/dashboard.png) from a running stack.

    STUDIO_DATA_DIR=.studio/demo-shots STUDIO_BIND=127.0.0.1:8777 .venv/bin/python -m studio.devstack.launcher &
    .venv/bin/python docs/screenshots.py --url http://127.0.0.1:8777 --password <admin password it printed>

It plays the demo loop in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium with the system chromedriver: nothing is downloaded): a few users search, click a lower
result and press "Improve now"; then it logs into the admin and captures the dashboard.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

MAX_BYTES = 300 * 1024
# (user, query, rank clicked): the last one is the state the demo screenshot shows.
LOOPS = [
    ("bob", "romantic comedy", 6),
    ("carol", "crime thriller", 4),
    ("alice", "space adventure", 7),
]


def _driver(width: int, height: int, profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def _save(driver: webdriver.Chrome, path: Path) -> None:
    """A PNG under MAX_BYTES: as is when small enough, else reduced to a 256-colour palette."""
    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    if buffer.tell() > MAX_BYTES:
        buffer = io.BytesIO()
        image.convert("RGB").quantize(colors=256).save(buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())
    print(f"{path}: {path.stat().st_size // 1024} KB")


def _search(driver, wait, user: str, query: str) -> str:
    body = driver.find_element(By.TAG_NAME, "body")
    previous = body.get_attribute("data-session-id")
    for field, value in (("user-id", user), ("query", query)):
        element = driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    driver.find_element(By.ID, "search-button").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-session-id") not in (None, previous))
    return body.get_attribute("data-session-id")


def _loop(driver, wait, user: str, query: str, rank: int) -> None:
    session = _search(driver, wait, user, query)
    item = driver.find_element(By.CSS_SELECTOR, f"#user-results li.result[data-rank='{rank}']")
    item.click()
    wait.until(lambda d: "clicked" in (item.get_attribute("class") or ""))
    driver.find_element(By.ID, "improve-button").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-session-id") != session)
    wait.until(ec.visibility_of_element_located((By.ID, "run")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--password", required=True, help="the admin password `make run` printed")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args()
    out = Path(args.out)
    profile = tempfile.mkdtemp(prefix="studio-shots-")
    driver = _driver(1360, 1010, profile)
    try:
        wait = WebDriverWait(driver, 120)
        driver.get(args.url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        for user, query, rank in LOOPS:
            _loop(driver, wait, user, query, rank)
        driver.execute_script("window.scrollTo(0, 0)")
        _save(driver, out / "demo.png")

        driver.set_window_size(1360, 1700)
        driver.get(args.url + "/admin/login/?next=/admin/dashboard/")
        driver.find_element(By.ID, "id_username").send_keys("admin")
        driver.find_element(By.ID, "id_password").send_keys(args.password)
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "status-counts")))
        _save(driver, out / "dashboard.png")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
