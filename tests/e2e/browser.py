"""Headless Chromium for the dashboard tests: the browser fixture (console captured), waits, seeded traffic."""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from registry.wire.publisher import Publisher
from tests.e2e.stack import ROOT, Stack, running_stack
from tests.topology import Store

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


@contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    """Headless Debian chromium through chromedriver, keeping the page's console; skipped (or failed,
    under JOBREG_TEST_REQUIRE_BROWSER) where either is missing."""
    missing = _browser_missing()
    if missing:
        if os.environ.get("JOBREG_TEST_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", *extra_args):
        options.add_argument(arg)
    # The page's console (CSP violations, failed loads such as a missing favicon, script errors).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium("--window-size=1500,950") as driver:
        yield driver


@pytest.fixture
def stack(store: Store, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(store, tmp_path, env={"JOBREG_WATCH_HEARTBEAT_S": "2"}) as s:
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


def console_problems(driver: Any) -> list[str]:
    """Console errors since the last call: CSP violations, failed loads (a 404 favicon), script errors."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def grant_clipboard(driver: Any, origin: str) -> None:
    """Let the page write (and the test read) the clipboard without a user gesture prompt."""
    driver.execute_cdp_cmd(
        "Browser.grantPermissions", {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}
    )


def read_clipboard(driver: Any) -> str:
    return str(
        driver.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('ERR ' + e))"
        )
    )


def screenshot(driver: Any, name: str) -> Path:
    """Save a screenshot to artifacts/; with JOBREG_UPDATE_SCREENSHOTS=1 (`make screenshots`) to docs/ too.

    docs/ holds the README's pictures; writing them on every run would leave every checkout dirty.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    if os.environ.get("JOBREG_UPDATE_SCREENSHOTS"):
        driver.save_screenshot(str(ROOT / "docs" / name))
    return path
