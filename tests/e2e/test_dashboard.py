"""The live dashboard in a real headless browser (Debian's chromium + chromedriver) against real processes.

Jobs published while the page is open appear and change status in place, counts follow,
a click shows a job's detail, a status filter drops jobs that leave it, and a screenshot
is saved to artifacts/dashboard.png.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from registry.wire.publisher import Publisher
from tests.conftest import RedisServer
from tests.e2e.stack import ROOT, Stack, running_stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "artifacts"
WAIT_S = 20.0

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install chromium chromium-driver (.ci/run does)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("JOBREG_TEST_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1500,950"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(redis_server, tmp_path, env={"JOBREG_WATCH_HEARTBEAT_S": "2"}) as s:
        yield s


def wait_for(driver: Any, check: Callable[[], Any], what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(_: Any) -> Any:
        try:
            return check()
        except StaleElementReferenceException:
            return None

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(attempt)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}") from None


def row_status(driver: Any, job_id: str) -> str | None:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-id="{job_id}"]')
    return rows[0].get_attribute("data-status") if rows else None


def text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def seed_background(pub: Publisher, rng: random.Random, n: int) -> None:
    """A realistic backlog so the page (and its screenshot) looks like a working registry."""
    projects = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3)]
    users = ["ada", "grace", "alan", "marie", "lise"]
    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    for i in range(n):
        job = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        t = start + timedelta(seconds=37 * i)
        pub.created(
            job,
            occurred_at=t,
            batch_id=str(uuid.uuid4()),
            project_id=rng.choice(projects),
            user_id=rng.choice(users),
            runs=rng.choice([50, 100, 500, 1000]),
            origin=rng.choice(["CLIENT", "CLIENT", "AZURE", "OVH"]),
            variables={"Omega_max": round(rng.uniform(1, 20), 2)},
        )
        roll = rng.random()
        if roll < 0.85:
            pub.started(job, occurred_at=t + timedelta(seconds=5))
        if roll < 0.6:
            pub.finished(job, occurred_at=t + timedelta(seconds=60))
        elif roll < 0.7:
            pub.failed(job, occurred_at=t + timedelta(seconds=30), errors=["QPU calibration drift"])
        elif roll < 0.74:
            pub.canceling(job, occurred_at=t + timedelta(seconds=20))
        elif roll < 0.8:
            pub.canceled(job, occurred_at=t + timedelta(seconds=25))


def test_dashboard_follows_jobs_live(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    pub = Publisher(stack.redis(), stack.keys)
    seed_background(pub, random.Random(5), 60)
    stack.wait_drained()

    browser.get(stack.url + "/")
    wait_for(browser, lambda: text(browser, "conn") == "live", "the watch stream to open")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tr")) == 60
    wait_for(browser, lambda: text(browser, "count-total") == "60", "the total from /stats")

    # Jobs published now appear without a reload, newest first.
    project, batch = str(uuid.uuid4()), str(uuid.uuid4())
    new = [str(uuid.uuid4()) for _ in range(4)]
    for job in new:
        pub.created(job, batch_id=batch, project_id=project, user_id="operator-test", runs=100, origin="AZURE")
    for job in new:
        wait_for(browser, lambda job=job: row_status(browser, job) == "PENDING", f"{job} to appear as PENDING")
    first_row = browser.find_element(By.CSS_SELECTOR, "#rows tr")
    assert first_row.get_attribute("data-id") in new
    wait_for(browser, lambda: text(browser, "count-total") == "64", "the total to follow")

    # ... and change status in place.
    pub.started(new[0])
    pub.started(new[1])
    pub.finished(new[1])
    pub.failed(new[2], errors=["register too dense"])
    for job, status in ((new[0], "RUNNING"), (new[1], "DONE"), (new[2], "ERROR"), (new[3], "PENDING")):
        wait_for(browser, lambda job=job, status=status: row_status(browser, job) == status, f"{job} -> {status}")
    assert len(browser.find_elements(By.CSS_SELECTOR, f'tr[data-id="{new[1]}"]')) == 1  # updated, not duplicated

    # A click shows the job's detail, which follows later changes too.
    browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{new[3]}"]').click()
    detail = lambda field: browser.find_element(By.CSS_SELECTOR, f'#detail dd[data-field="{field}"]').text  # noqa: E731
    wait_for(browser, lambda: detail("id") == new[3], "the detail panel")
    assert detail("user_id") == "operator-test"
    assert detail("origin") == "AZURE"
    wait_for(browser, lambda: detail("sequence") == "—", "the full job (sequence) fetched for the panel")
    pub.started(new[3])
    wait_for(browser, lambda: detail("status") == "RUNNING", "the detail to follow the job")
    # A results link a backend publishes shows as a link in the panel.
    link = "https://results.example/jobs/r.json?sig=a%2Fb"
    pub.finished(new[3], results_link=link)
    wait_for(browser, lambda: detail("status") == "DONE", "the detail to follow the job")
    anchor = browser.find_element(By.CSS_SELECTOR, '#detail dd[data-field="results_link"] a')
    assert anchor.get_attribute("href") == link and anchor.text == link
    assert anchor.get_attribute("rel") == "noopener noreferrer"

    # Pipeline health is shown.
    wait_for(browser, lambda: text(browser, "h-lag") == "0", "the consumer lag")
    assert text(browser, "h-dead") == "0"

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

    # A status filter lists and watches RUNNING jobs only; a job that finishes leaves the table.
    browser.find_element(By.CSS_SELECTOR, '#f-status label:has(input[value="RUNNING"])').click()
    wait_for(browser, lambda: "status=RUNNING" in browser.current_url, "the filter in the URL")
    wait_for(browser, lambda: text(browser, "conn") == "live", "the filtered watch")
    wait_for(browser, lambda: row_status(browser, new[2]) is None, "non-running jobs to leave the table")
    statuses = {r.get_attribute("data-status") for r in browser.find_elements(By.CSS_SELECTOR, "#rows tr")}
    assert statuses == {"RUNNING"}
    assert row_status(browser, new[0]) == "RUNNING"
    pub.finished(new[0])
    wait_for(browser, lambda: row_status(browser, new[0]) is None, "a finished job to leave the RUNNING view")
    late = str(uuid.uuid4())
    pub.created(late, batch_id=batch, project_id=project, user_id="operator-test", runs=5)
    pub.started(late)
    wait_for(browser, lambda: row_status(browser, late) == "RUNNING", "a newly running job to enter the view")
    wait_for(browser, lambda: text(browser, "count-RUNNING") == text(browser, "count-total"), "filtered counts")
    browser.save_screenshot(str(ARTIFACTS / "dashboard-filtered.png"))
