"""The live dashboard in a real headless browser (Debian's chromium + chromedriver) against real processes.

Jobs published while the page is open appear and change status in place, counts follow,
a click shows a job's detail, a status filter drops jobs that leave it, and a screenshot
is saved to artifacts/dashboard.png.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from registry.wire.publisher import Publisher
from tests.e2e.browser import ARTIFACTS, browser, row_status, seed_background, stack, text, wait_for
from tests.e2e.stack import Stack

__all__ = ["browser", "stack"]  # fixtures, used by name


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
