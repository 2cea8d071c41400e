"""Dashboard v2 in headless Chromium against real processes: sorting and paging through every match, all
the API's filters, error and duration columns, deep links and copy buttons, local time, charts over time,
the dead-letter view with replay, and a page that runs under its strict CSP without a console error."""

from __future__ import annotations

import random
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from registry.auth.tokens import mint
from registry.settings import load_settings
from registry.wire.deadletter import dead_letter_copy
from registry.wire.publisher import Publisher
from tests.e2e.browser import (
    browser,
    console_problems,
    grant_clipboard,
    read_clipboard,
    row_status,
    screenshot,
    seed_background,
    stack,
    text,
    wait_for,
)
from tests.e2e.stack import Stack, running_stack
from tests.topology import Store

__all__ = ["browser", "stack"]  # fixtures, used by name


def by_css(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def row_ids(driver: Any) -> list[str]:
    return [str(r.get_attribute("data-id")) for r in by_css(driver, "#rows tr")]


def api_ids(stack: Stack, params: list[tuple[str, str]]) -> list[str]:
    body = httpx.get(f"{stack.url}/api/v2/jobs", params=params, timeout=10).json()
    return [j["id"] for j in body["data"]]


def api_jobs(stack: Stack, params: list[tuple[str, str]]) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.url}/api/v2/jobs", params=params, timeout=10).json())


def live(driver: Any) -> None:
    wait_for(driver, lambda: text(driver, "conn") == "live", "the watch stream to open")


def seeded(stack: Stack, n: int = 60, seed: int = 7) -> Publisher:
    pub = Publisher(stack.redis(), stack.keys)
    seed_background(pub, random.Random(seed), n)
    stack.wait_drained()
    return pub


def test_sorting_and_paging_follow_the_api_through_every_match(stack: Stack, browser: Any) -> None:
    seeded(stack)
    browser.get(stack.url + "/?limit=25")
    live(browser)
    assert row_ids(browser) == api_ids(stack, [("limit", "25")])
    assert (text(browser, "range"), text(browser, "matching")) == ("1\u201325", "60")

    by_css(browser, "#next")[0].click()
    page2 = api_ids(stack, [("limit", "25"), ("offset", "25")])
    wait_for(browser, lambda: row_ids(browser) == page2, "the second page")
    assert "offset=25" in browser.current_url and text(browser, "range") == "26\u201350"
    by_css(browser, "#next")[0].click()
    wait_for(browser, lambda: text(browser, "range") == "51\u201360", "the last, partial page")
    assert by_css(browser, "#next")[0].get_attribute("disabled") is not None

    # A header the API orders by sorts every match (back to the first page); a second click flips it.
    by_css(browser, 'th[data-sort="runs"]')[0].click()
    by_runs = api_ids(stack, [("limit", "25"), ("order_by", "runs")])
    wait_for(browser, lambda: row_ids(browser) == by_runs, "rows ordered by runs")
    assert "order_by=runs" in browser.current_url and "offset" not in browser.current_url
    by_css(browser, 'th[data-sort="runs"]')[0].click()
    asc = api_ids(stack, [("limit", "25"), ("order_by", "runs"), ("order_by_direction", "ASC")])
    wait_for(browser, lambda: row_ids(browser) == asc, "rows ordered by runs, ascending")
    # Keys without a column (start, end, creation order) are in the sort menu.
    from selenium.webdriver.support.ui import Select

    Select(by_css(browser, "#order-by")[0]).select_by_value("end_timestamp")
    by_end = api_ids(stack, [("limit", "25"), ("order_by", "end_timestamp"), ("order_by_direction", "ASC")])
    wait_for(browser, lambda: row_ids(browser) == by_end, "rows ordered by end time")

    # Columns the API cannot order by sort the page on screen, and say so.
    before = set(row_ids(browser))
    by_css(browser, 'th[data-local="status"]')[0].click()
    statuses = [r.get_attribute("data-status") for r in by_css(browser, "#rows tr")]
    assert statuses == sorted(statuses) and set(row_ids(browser)) == before
    assert by_css(browser, "#local-note")[0].is_displayed()
    assert console_problems(browser) == []


def test_every_filter_of_the_api_from_the_url_and_the_error_and_duration_columns(stack: Stack, browser: Any) -> None:
    seeded(stack)
    params = [
        ("status", "DONE"),
        ("status", "ERROR"),
        ("min_runs", "100"),
        ("max_runs", "500"),
        ("start_date", "2026-11-23T09:05:00Z"),
        ("end_date", "2026-11-23T09:40:00Z"),
        ("origin", "CLIENT"),
        ("origin", "AZURE"),
    ]
    want = api_jobs(stack, params)
    assert 0 < want["pagination"]["total"] < 60  # the filters bite
    browser.get(stack.url + "/?" + str(httpx.QueryParams(params)))
    live(browser)
    assert row_ids(browser) == [j["id"] for j in want["data"]]
    assert text(browser, "matching") == str(want["pagination"]["total"])
    field = lambda name: by_css(browser, f'#filters [name="{name}"]')[0].get_attribute("value")  # noqa: E731
    assert (field("min_runs"), field("max_runs")) == ("100", "500")
    # Shown in the chosen zone (UTC by default); the browser drops zero seconds.
    assert (field("start_date"), field("end_date")) == ("2026-11-23T09:05", "2026-11-23T09:40")

    # The failed jobs show their error; every job here ran: started +5 s, failed +30 s or finished +60 s.
    for job in want["data"]:
        tr = by_css(browser, f'tr[data-id="{job["id"]}"]')[0]
        error = tr.find_element("css selector", "td.errors").text
        duration = tr.find_element("css selector", "td.duration").text
        if job["status"] == "ERROR":
            assert (error, duration) == ("QPU calibration drift", "25.0 s")
        else:
            assert (error, duration) == ("", "55.0 s")

    # Typed filters (lists, comma separated) go to the URL and the API.
    pick = want["data"][:2]
    box = by_css(browser, '#filters [name="id"]')[0]
    box.send_keys(", ".join(j["id"] for j in pick))
    wait_for(browser, lambda: set(row_ids(browser)) == {j["id"] for j in pick}, "the id filter")
    assert browser.current_url.count("id=") >= 2
    assert console_problems(browser) == []


def test_deep_links_copy_buttons_local_time_and_as_of(stack: Stack, browser: Any) -> None:
    seeded(stack, n=12)
    done = api_ids(stack, [("status", "DONE"), ("limit", "1")])[0]
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Tokyo"})
    grant_clipboard(browser, stack.url)
    browser.get(stack.url + "/")
    live(browser)
    assert re.fullmatch(r"as of \d\d:\d\d:\d\d UTC \(\d+ s ago\)", text(browser, "asof")), text(browser, "asof")

    by_css(browser, f'tr[data-id="{done}"]')[0].click()
    wait_for(browser, lambda: f"job={done}" in browser.current_url, "the open job in the URL")
    by_css(browser, f'#detail dt button.copy[data-copy="{done}"]')[0].click()
    wait_for(browser, lambda: read_clipboard(browser) == done, "the id on the clipboard")
    by_css(browser, "#detail-link")[0].click()
    link = f"{stack.url}/?job={done}"
    wait_for(browser, lambda: read_clipboard(browser) == link, "the job's link on the clipboard")

    # The link opens the job even where the list does not show it.
    browser.get(f"{stack.url}/?status=CANCELED&job={done}")
    live(browser)
    detail = lambda f: by_css(browser, f'#detail dd[data-field="{f}"]')[0].text  # noqa: E731
    wait_for(browser, lambda: detail("id") == done and detail("sequence") == "—", "the deep-linked job")
    assert row_status(browser, done) is None

    # Local time: this browser is in Tokyo (UTC+9); the choice is remembered.
    browser.get(stack.url + "/")
    live(browser)
    created = by_css(browser, f'tr[data-id="{done}"] td')[6].text
    from selenium.webdriver.support.ui import Select

    Select(by_css(browser, "#tz")[0]).select_by_value("local")
    hour = int(created[11:13])
    wait_for(
        browser, lambda: by_css(browser, f'tr[data-id="{done}"] td')[6].text[11:13] == f"{(hour + 9) % 24:02d}", "local"
    )
    assert "(local)" in by_css(browser, 'th[data-sort="created_at"]')[0].text
    browser.refresh()
    live(browser)
    assert by_css(browser, "#tz")[0].get_attribute("value") == "local"
    assert console_problems(browser) == []


def test_dead_letters_are_listed_with_reasons_and_replayed(stack: Stack, browser: Any) -> None:
    seeded(stack, n=8)
    # An entry parked by a worker that could not apply it (valid: replay applies it), and one that is invalid.
    parked = str(uuid.uuid4())
    event = {"event_id": str(uuid.uuid4()), "type": "created", "job_id": parked, "occurred_at": "2026-11-23T11:00:00Z"}
    event |= {"batch_id": str(uuid.uuid4()), "project_id": str(uuid.uuid4()), "user_id": "replayed", "runs": "3"}
    client = stack.redis()
    client.xadd(stack.keys.dead, dead_letter_copy("1-1", event, "undeliverable: apply failed 5 times"))  # type: ignore[arg-type]
    stack.publish([{"event_id": "bad", "type": "exploded", "job_id": str(uuid.uuid4()), "occurred_at": "2026-11-23"}])
    stack.wait_drained()

    browser.get(stack.url + "/")
    live(browser)
    wait_for(browser, lambda: text(browser, "h-dead") == "2", "two dead letters counted")
    by_css(browser, "#dead-toggle")[0].click()
    wait_for(browser, lambda: len(by_css(browser, "#dl-rows tr")) == 2, "the dead letters listed")
    assert "view=dead" in browser.current_url
    reasons = [td.text for td in by_css(browser, "#dl-rows td.reason")]
    assert reasons[0] == "undeliverable: apply failed 5 times"
    assert "type" in reasons[1]
    screenshot(browser, "dashboard-dead-letters.png")

    by_css(browser, "#dl-rows tr:first-child button[data-replay]")[0].click()
    wait_for(browser, lambda: row_status(browser, parked) == "PENDING", "the replayed job applied and listed")
    wait_for(browser, lambda: len(by_css(browser, "#dl-rows tr")) == 1, "one dead letter left")
    wait_for(browser, lambda: text(browser, "h-dead") == "1", "the count to follow")
    assert "1 replayed" in text(browser, "dl-message")
    # "replay all" asks first; the invalid entry goes back, is dead-lettered again, and shows with a new id.
    invalid = by_css(browser, "#dl-rows tr")[0].get_attribute("data-id")
    by_css(browser, "#dl-replay-all")[0].click()
    browser.switch_to.alert.accept()
    wait_for(browser, lambda: "1 replayed" in text(browser, "dl-message"), "replay all done")
    stack.wait_drained()
    by_css(browser, "#dead-toggle")[0].click()  # close and reopen: list again
    by_css(browser, "#dead-toggle")[0].click()
    wait_for(
        browser,
        lambda: [r.get_attribute("data-id") for r in by_css(browser, "#dl-rows tr")] not in ([], [invalid]),
        "the entry dead-lettered again under a new id",
    )
    assert len(by_css(browser, "#dl-rows tr")) == 1
    assert console_problems(browser) == []


def test_charts_sample_the_registry_over_time(stack: Stack, browser: Any) -> None:
    pub = seeded(stack, n=60, seed=5)
    stop = threading.Event()

    def traffic() -> None:
        rng = random.Random(11)
        projects = [str(uuid.uuid4()) for _ in range(3)]
        while not stop.is_set():
            job = str(uuid.uuid4())
            origin = rng.choice(["CLIENT", "AZURE", "OVH"])
            user = rng.choice(["ada", "grace", "alan", "marie"])
            pub.created(job, batch_id=job, project_id=rng.choice(projects), user_id=user, runs=100, origin=origin)
            pub.started(job)
            roll = rng.random()
            if roll < 0.6:
                pub.finished(job)
            elif roll < 0.7:
                pub.failed(job, errors=["register too dense"])
            stop.wait(0.05)

    browser.get(stack.url + "/")
    live(browser)
    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        chart = lambda name: by_css(browser, f"#chart-{name}")[0]  # noqa: E731
        wait_for(browser, lambda: int(chart("status").get_attribute("data-samples") or 0) >= 6, "six samples")
    finally:
        stop.set()
        worker.join()

    def points(name: str, series: str) -> int:
        line = by_css(browser, f'#chart-{name} polyline[data-series="{series}"]')[0]
        return len((line.get_attribute("points") or "").split())

    assert points("status", "done") >= 6 and points("backlog", "lag") >= 6
    assert points("throughput", "events/s") >= 2 and points("throughput", "changes/s") >= 2  # rates need two
    assert points("latency", "server") >= 1 and points("latency", "round trip") >= 6
    legend = by_css(browser, "#chart-throughput .legend")[0].text
    assert re.search(r"events/s \d", legend), legend
    screenshot(browser, "dashboard.png")
    assert console_problems(browser) == []


def test_the_page_runs_under_its_strict_csp(stack: Stack, browser: Any) -> None:
    favicon = httpx.get(stack.url + "/favicon.ico", timeout=10)
    assert favicon.status_code == 200 and favicon.headers["content-type"].startswith("image/svg+xml")
    browser.get(stack.url + "/")
    live(browser)
    assert console_problems(browser) == []
    # The check can fail: an inline style attribute is refused, and the console says so.
    browser.execute_script("document.body.insertAdjacentHTML('beforeend', '<div style=\"color:red\">x</div>')")
    wait_for(browser, lambda: any("Content Security Policy" in m for m in console_problems(browser)), "a CSP report")


def test_a_user_sees_their_jobs_and_no_dead_letters(store: Store, tmp_path: Path, browser: Any) -> None:
    secret = "dashboard-user-test-secret-" + "u" * 32
    env = {"JOBREG_AUTH_SECRET": secret, "JOBREG_WATCH_HEARTBEAT_S": "2"}
    with running_stack(store, tmp_path, env=env) as secured:
        mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
        pub = Publisher(secured.redis(), secured.keys)
        for job, project in ((str(uuid.uuid4()), mine), (str(uuid.uuid4()), theirs)):
            pub.created(job, batch_id=job, project_id=project, user_id="u", runs=1)
        secured.publish([{"event_id": "bad", "type": "exploded", "job_id": mine, "occurred_at": "2026-11-23"}])
        secured.wait_drained()
        token = mint(load_settings({}, auth_secret=secret), "ann", [mine])
        browser.get(secured.url + "/")
        browser.execute_script("sessionStorage.setItem('jobreg-token', arguments[0])", token)
        console_problems(browser)  # drain: the first load, without a token, was refused (401) as it should be
        browser.get(secured.url + "/")
        live(browser)
        assert [r.get_attribute("data-status") for r in by_css(browser, "#rows tr")] == ["PENDING"]
        by_css(browser, "#dead-toggle")[0].click()
        wait_for(browser, lambda: "operators" in text(browser, "dl-message"), "the operators-only note")
        assert not by_css(browser, "#auth")[0].is_displayed()  # a 403 there is not a bad token
        assert not by_css(browser, "#dl-replay-all")[0].is_displayed()
        wait_for(browser, lambda: int(by_css(browser, "#chart-status")[0].get_attribute("data-samples") or 0) >= 2, "")
        # Only the refused admin routes are in the console (the browser logs every 403 it gets).
        problems = console_problems(browser)
        assert all(" 403 " in m for m in problems), problems
